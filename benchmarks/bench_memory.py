"""Window memory budget: the inspector's window (offscreen Qt, the real engine worker) opens the
demo model on its machine default and inspects every demo test image from a folder; reports the
window process's peak resident memory (VmHWM) and, separately, the peak of its child processes
(the once-per-machine runtime check, `engine.runtime_choice`, which reports its own peak).

    python benchmarks/bench_memory.py                 # first start and cached start, README table
    python benchmarks/bench_memory.py --runs 1

Two scenarios, each in fresh subprocesses: `first start` (a copy of the demo model without its
compiled-network cache and an empty app home: the runtime check converts, quantizes and times
every candidate) and `cached start` (the same copy and home again: the stored decision and the
cached networks). The budget is 1.5 GB resident for the window with the demo model. Writes
benchmarks/results/memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import publish_results  # noqa: E402
from benchmarks.bench_live import run_failure  # noqa: E402

README_BEGIN = "<!-- memory-table:begin -->"
README_END = "<!-- memory-table:end -->"
DEMO_MODEL = REPO / "resources" / "demo_model"
DEMO_DATA = REPO / "resources" / "demo_data"
BUDGET_MB = 1500
LOAD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 900
SCENARIOS = ("first start", "cached start")


def _vm_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_single(cfg: dict) -> dict:
    """One window in this process: open the model, inspect the image folder, measure."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["DECO_INSPECTOR_HOME"] = cfg["home"]
    os.environ.pop("DECO_INSPECTOR_RUNTIME", None)
    from PySide6.QtCore import QEventLoop, QTimer

    from inspector.app import app_settings, create_inspector
    from inspector.sources import SourceSpec

    def run_until(condition, timeout_s: float) -> bool:
        loop = QEventLoop()
        poll = QTimer()
        poll.timeout.connect(lambda: condition() and loop.quit())
        poll.start(50)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        poll.stop()
        return condition()

    import logging

    from engine.runtime_choice import CHILD_PEAK_PREFIX

    check_lines: list[str] = []

    class CheckLines(logging.Handler):
        def emit(self, record):
            check_lines.append(record.getMessage())

    check_log = logging.getLogger("engine.runtime_choice")
    check_log.setLevel(logging.INFO)
    check_log.addHandler(CheckLines())
    window, ctl = create_inspector(data_dir=Path(cfg["home"]), settings=app_settings(Path(cfg["home"])))
    window.show()
    t0 = time.monotonic()
    ctl.open_model(cfg["model"], {})
    if not run_until(lambda: ctl.model_info is not None and not ctl.model_loading, LOAD_TIMEOUT_S):
        raise RuntimeError(f"the model {cfg['model']} did not load within {LOAD_TIMEOUT_S} s")
    load_s = time.monotonic() - t0
    loaded_mb = _vm_mb("VmRSS")
    ran = ctl.worker.detector.settings
    results = []
    ctl.worker.inspected.connect(results.append)
    t1 = time.monotonic()
    ctl.open_source(SourceSpec("folder", cfg["images"]))
    if not run_until(lambda: ctl.run_reported, RUN_TIMEOUT_S):
        raise RuntimeError(f"the folder was not inspected within {RUN_TIMEOUT_S} s ({len(results)} parts)")
    out = {**cfg, "load_s": load_s, "inspect_s": time.monotonic() - t1, "parts": len(results),
           "errors": sum(1 for r in results if r.score is None),
           "runs_as": f"{getattr(ran, 'runtime', 'torch')} {ran.precision}",
           "rss_after_load_mb": loaded_mb, "window_peak_mb": _vm_mb("VmHWM"),
           "check_child_peak_mb": next((float(line.rsplit(CHILD_PEAK_PREFIX, 1)[1].split()[0])
                                        for line in check_lines if CHILD_PEAK_PREFIX in line), None)}
    ctl.stop()
    window.close()
    return out


def _spawn(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, __file__, "--single", json.dumps(cfg)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        return {**cfg, "error": run_failure(proc.returncode, proc.stderr)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _demo_images(folder: Path) -> int:
    """Every demo test image, flat in `folder` (category_kind_name.ext); returns the count."""
    count = 0
    for path in sorted(DEMO_DATA.glob("*/test/*/*")):
        if path.is_file():
            category, kind = path.parts[-4], path.parts[-2]
            shutil.copy2(path, folder / f"{category}_{kind}_{path.name}")
            count += 1
    return count


def markdown(rows: list[dict], machine: str, parts: int, runs: int) -> str:
    lines = [f"Measured on {machine} by `python benchmarks/bench_memory.py --update-readme` "
             f"({time.strftime('%Y-%m-%d %H:%M %Z')}): the window (offscreen Qt, real engine worker) opens a copy of "
             f"the demo model on its machine default and inspects the {parts} demo test images from a folder; "
             f"median of {runs} runs. Budget: {BUDGET_MB / 1000:.1f} GB for the window.", "",
             "| start | runs as | model ready s | window peak MB | within budget | resident after load MB "
             "| runtime-check child peak MB | parts inspected |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("window_peak_mb") is None:
            lines.append(f"| {r['scenario']} | error: {'; '.join(r['errors_seen'])} | | | | | | |")
            continue
        child = f"{r['check_child_peak_mb']:.0f}" if r.get("check_child_peak_mb") else "- (no check)"
        lines.append(f"| {r['scenario']} | {r['runs_as']} | {r['load_s']:.0f} | {r['window_peak_mb']:.0f} | "
                     f"{'yes' if r['window_peak_mb'] <= BUDGET_MB else '**no**'} | {r['rss_after_load_mb']:.0f} | "
                     f"{child} | {r['parts']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args()
    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    all_runs: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        parts = _demo_images(images)
        for k in range(args.runs):
            model, home = Path(tmp) / f"model-{k}", Path(tmp) / f"home-{k}"
            shutil.copytree(DEMO_MODEL, model, ignore=shutil.ignore_patterns("openvino_cache"))
            for name in SCENARIOS:
                print(f"{name}: run {k + 1}/{args.runs} ...", file=sys.stderr, flush=True)
                run = _spawn({"scenario": name, "model": str(model), "home": str(home), "images": str(images)})
                all_runs[name].append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    rows = []
    for name, runs in all_runs.items():
        ok = [r for r in runs if "error" not in r]
        row = {"scenario": name, "errors_seen": sorted({r["error"] for r in runs if "error" in r})}
        if ok:
            row["runs_as"] = ok[0]["runs_as"]
            for key in ("load_s", "window_peak_mb", "rss_after_load_mb", "check_child_peak_mb", "parts"):
                values = [r[key] for r in ok if r.get(key) is not None]
                row[key] = statistics.median(values) if values else None
        rows.append(row)
    from engine.acceleration import cpu_description

    machine = cpu_description()
    publish_results("memory", {"machine": machine, "rows": rows, "runs": all_runs},
                    markdown(rows, machine, parts, args.runs), (README_BEGIN, README_END) if args.update_readme else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
