"""Statistics and reports on a large results log: generate N result rows (default one million), then
time the statistics (what the Statistics tab computes when it opens), the report (data, charts, PDF
and HTML) and, with --gui, the Statistics tab itself opening in the window's widget.

    python benchmarks/bench_statistics.py --rows 1000000 --days 30 [--log DIR/results.sqlite] [--gui]

The log is reused when it already holds the rows asked for. Rows: 3 recipes, scores from a
gamma-like distribution per recipe with a drifting fail rate and two bad hours, thresholds 0.5 / 0.4,
every failed part with a defect location, 1 % of rejected parts marked as false calls, and a few
hundred audit entries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspection.access import DEFAULT_SHIFTS, ENGINEER  # noqa: E402
from inspection.audit import AuditTrail  # noqa: E402
from inspection.results_log import ResultsLog  # noqa: E402
from inspection.statistics import Period, compute_statistics  # noqa: E402

RECIPES = ("coins", "labels", "bricks")
FAIL, REVIEW = 0.5, 0.4
BATCH = 50_000


def generate(path: Path, rows: int, days: int, seed: int = 7) -> None:
    """Write `rows` parts spread evenly over `days` days ending now, and audit entries."""
    rng = random.Random(seed)
    log = ResultsLog(path)
    conn = log.conn
    end = datetime.now().astimezone().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    step = (end - start).total_seconds() / rows
    bad_hours = {start + timedelta(hours=h) for h in (days * 24 // 3, days * 24 * 2 // 3)}
    batch = []
    for k in range(rows):
        t = start + timedelta(seconds=k * step)
        recipe = RECIPES[k % len(RECIPES)]
        hour = t.replace(minute=0, second=0, microsecond=0)
        scale = 0.16 + 0.02 * RECIPES.index(recipe) + (0.12 if hour in bad_hours else 0.0)
        score = rng.gammavariate(4.0, scale / 4.0) + (0.6 if rng.random() < 0.02 else 0.0)
        verdict = "fail" if score > FAIL else "review" if score > REVIEW else "pass"
        if rng.random() < 0.001:
            verdict, score = "error", None
        located = verdict in ("fail", "review")
        dx = min(0.999, abs(rng.gauss(0.25, 0.15))) if located else None
        dy = min(0.999, abs(rng.gauss(0.7, 0.2))) if located else None
        false_call = 1 if located and rng.random() < 0.01 else 0
        batch.append((t.isoformat(timespec="milliseconds"), "camera 0", f"P{k:07d}", recipe[:-1], score, FAIL, REVIEW,
                      verdict, "demo-v4", recipe, "r1", 150.0, "" if score is not None else "unreadable", dx, dy,
                      false_call, "wrongly rejected" if false_call else ""))
        if len(batch) == BATCH or k == rows - 1:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO parts (time, source, frame_id, category, score, threshold, review_threshold, "
                             "verdict, model_id, recipe, recipe_version, latency_ms, error, defect_x, defect_y, "
                             "false_call, false_call_note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            conn.execute("COMMIT")
            batch = []
    trail = AuditTrail(log, station="bench")
    for k in range(300):
        trail.record("eve", ENGINEER, "threshold", "fail", round(0.5 + k * 1e-4, 4), round(0.5 + (k + 1) * 1e-4, 4),
                     recipe=RECIPES[k % 3])
    conn.execute("ANALYZE")
    log.close()


def timed(fn, repeat: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, of `repeat` runs; the last result). On a
    shared machine the CPU seconds say what the work costs, the wall seconds what it waited for too."""
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return best, best_cpu, result


def time_gui(path: Path) -> dict:
    """The window on the log's folder (its results.sqlite): seconds from asking for the Statistics tab
    to its charts being drawn (period All, then again: best of 3), and for the report of everything."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from inspector.app import app_settings, create_inspector

    if path.name != "results.sqlite":
        raise SystemExit("--gui needs a log named results.sqlite (the window's own log in its data folder)")
    window, ctl = create_inspector(loader=lambda *a, **k: None, data_dir=path.parent, settings=app_settings(path.parent))
    window.show()
    QApplication.processEvents()
    window.statistics_view.period_combo.blockSignals(True)
    window.statistics_view.period_combo.setCurrentText("All")
    window.statistics_view.period_combo.blockSignals(False)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3):
        window.show_tab("live")
        QApplication.processEvents()
        t0, c0 = time.perf_counter(), time.process_time()
        window.show_tab("statistics")    # computes and draws synchronously
        QApplication.processEvents()     # and paints
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    figures = {"tab opens s": round(best, 3), "tab opens cpu s": round(best_cpu, 3),
               "tab computes s": round(ctl.statistics_seconds, 3), "tab parts": ctl.last_statistics.totals.total}
    period, recipe = window.statistics_selection()
    for kind in ("pdf", "html"):
        out = path.with_name(f"bench_report.{kind}")
        t0, c0 = time.perf_counter(), time.process_time()
        if not ctl.export_report(str(out), period, recipe):
            raise SystemExit("the report was not written: " + window.log_lines()[-1])
        figures[f"report {kind} s"] = round(time.perf_counter() - t0, 3)
        figures[f"report {kind} cpu s"] = round(time.process_time() - c0, 3)
        figures[f"report {kind} bytes"] = out.stat().st_size
    window.grab().save(str(path.with_name("bench_statistics_tab.png")))
    window.close()
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--log", default="/tmp/deco_bench_statistics/results.sqlite")
    p.add_argument("--gui", action="store_true", help="also time the Statistics tab and the report (Qt, offscreen)")
    p.add_argument("--out", default="", help="write the figures as JSON here")
    args = p.parse_args(argv)
    path = Path(args.log)
    path.parent.mkdir(parents=True, exist_ok=True)
    have = 0
    if path.is_file():
        log = ResultsLog(path)
        have = log.conn.execute("SELECT COUNT(*) FROM parts").fetchone()[0]
        log.close()
    if have != args.rows:
        for suffix in ("", "-wal", "-shm", ".audit-anchor"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        t0 = time.perf_counter()
        generate(path, args.rows, args.days)
        print(f"generated {args.rows} rows over {args.days} days in {time.perf_counter() - t0:.1f} s: {path}")
    figures = {"rows": args.rows, "days": args.days, "load average": round(os.getloadavg()[0], 2)}
    log = ResultsLog(path)
    conn = log.conn
    last_day = conn.execute("SELECT substr(MAX(time), 1, 10) FROM parts").fetchone()[0]
    for label, period in (("all", Period()), ("last 7 days", Period(
            (datetime.fromisoformat(last_day) - timedelta(days=6)).strftime("%Y-%m-%dT00:00"), "")),
                          ("one day", Period(f"{last_day}T00:00", ""))):
        seconds, cpu, stats = timed(lambda: compute_statistics(conn, period, DEFAULT_SHIFTS))
        figures[f"statistics {label} s"] = round(seconds, 3)
        figures[f"statistics {label} cpu s"] = round(cpu, 3)
        print(f"statistics, {label}: {seconds:.3f} s, CPU {cpu:.3f} s ({stats.totals.total} parts, {len(stats.hourly)} hours, "
              f"{len(stats.by_shift)} shifts, {len(stats.out_of_control)} hours out of control)")
    log.close()
    if args.gui:
        figures.update(time_gui(path))
        for key in ("tab opens", "report pdf", "report html"):
            print(f"{key}: {figures[key + ' s']:.3f} s, CPU {figures[key + ' cpu s']:.3f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
