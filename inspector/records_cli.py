"""`main.py audit` and `main.py report`: the audit trail and the shift / date-range report without a window.

    python main.py audit verify [--log results.sqlite]
    python main.py audit list [--since 2026-12-01] [--until ...] [--csv audit.csv]
    python main.py report --from 2026-12-01 --to 2026-12-07 --pdf week.pdf [--html week.html] [--recipe coins]
    python main.py report --shift 2026-12-04:late --pdf late.pdf

The log is the window's results log (results.sqlite in the user data folder) unless --log names
another; shifts and the station name come from the station settings (accounts.json there).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from inspection.access import AccountError, AccountStore, StationPolicy
from inspection.audit import read_audit, verify_log, write_audit_csv
from inspection.results_log import ResultsLog, ResultsLogError
from inspection.statistics import Period, parse_when, shift_period

from .paths import user_data_dir

__all__ = ["add_audit_arguments", "add_report_arguments", "run_audit", "run_report", "ACCOUNTS_FILE",
           "station_policy"]

ACCOUNTS_FILE = "accounts.json"
RESULTS_LOG_FILE = "results.sqlite"
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


def station_policy(data_dir: Path | None = None) -> StationPolicy:
    """The station settings (defaults when there is no accounts file yet)."""
    return AccountStore((data_dir or user_data_dir()) / ACCOUNTS_FILE).policy


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("verify", "list"), help="verify: check the hash chain; list: print the entries")
    p.add_argument("--log", default=None, help="results log (default: the window's, in the user data folder)")
    p.add_argument("--since", default="", help="list entries from this date or time (YYYY-MM-DD[ HH:MM])")
    p.add_argument("--until", default="", help="list entries before this date or time (a date: to its end)")
    p.add_argument("--csv", default="", metavar="FILE", help="write the entries (with their hashes) to a CSV file")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", default="", help="period start, YYYY-MM-DD[ HH:MM] (default: the first part)")
    p.add_argument("--to", dest="end", default="", help="period end, YYYY-MM-DD[ HH:MM]; a date counts to its end")
    p.add_argument("--shift", default="", metavar="DATE:NAME", help="one shift, e.g. 2026-12-04:late (instead of "
                                                                      "--from/--to)")
    p.add_argument("--recipe", default="", help="only this recipe")
    p.add_argument("--pdf", default="", metavar="FILE", help="write the report as PDF")
    p.add_argument("--html", default="", metavar="FILE", help="write the report as a self-contained HTML file")
    p.add_argument("--log", default=None, help="results log (default: the window's, in the user data folder)")


def _open_log(path_text: str | None, err) -> ResultsLog | None:
    path = Path(path_text) if path_text else user_data_dir() / RESULTS_LOG_FILE
    if not path.is_file():
        print(f"error: {path}: no results log there", file=err)
        return None
    log = ResultsLog(path)
    try:
        log.conn
    except ResultsLogError as e:
        print(f"error: {e}", file=err)
        return None
    return log


def run_audit(args: argparse.Namespace, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    log = _open_log(args.log, err)
    if log is None:
        return EXIT_ERROR
    try:
        if args.action == "verify":
            n, problems = verify_log(log)
            for line in problems:
                print(f"TAMPERED: {line}", file=out)
            print(f"{log.path}: {n} audit entries, " + ("the chain verifies" if not problems else
                                                       f"{len(problems)} problems"), file=out)
            return EXIT_PROBLEMS if problems else EXIT_OK
        try:
            since = parse_when(args.since) if args.since else ""
            until = parse_when(args.until, end=True) if args.until else ""
        except ValueError as e:
            print(f"error: {e}", file=err)
            return EXIT_ERROR
        rows = read_audit(log.conn, since, until)
        if args.csv:
            with open(args.csv, "w", newline="", encoding="utf-8") as f:
                write_audit_csv(rows, f)
            print(f"{len(rows)} audit entries written to {args.csv}", file=out)
        else:
            for a in rows:
                print(f"{a.id:6d} {a.time[:19].replace('T', ' ')} {a.user} ({a.role}) {a.station}/{a.recipe or '-'} "
                      f"{a.action} {a.target}: {a.old_value or '-'} -> {a.new_value or '-'}", file=out)
            print(f"{len(rows)} entries", file=out)
        return EXIT_OK
    except (ResultsLogError, OSError) as e:
        print(f"error: {e}", file=err)
        return EXIT_ERROR
    finally:
        log.close()


def report_period(args: argparse.Namespace, policy: StationPolicy) -> Period:
    """The period the arguments name (ValueError says what is wrong)."""
    if args.shift:
        day, sep, name = args.shift.partition(":")
        names = [n for n, _ in policy.shifts]
        if not sep or name not in names:
            raise ValueError(f"--shift {args.shift!r}: write DATE:NAME with NAME one of {', '.join(names)}")
        try:
            return shift_period(date.fromisoformat(day), names.index(name), policy.shifts)
        except ValueError:
            raise ValueError(f"--shift {args.shift!r}: {day!r} is not a date (YYYY-MM-DD)") from None
    return Period(parse_when(args.start) if args.start else "", parse_when(args.end, end=True) if args.end else "")


def run_report(args: argparse.Namespace, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if not args.pdf and not args.html:
        print("error: say where the report goes: --pdf FILE and/or --html FILE", file=err)
        return EXIT_ERROR
    try:
        policy = station_policy()
        period = report_period(args, policy)
    except (ValueError, AccountError) as e:
        print(f"error: {e}", file=err)
        return EXIT_ERROR
    log = _open_log(args.log, err)
    if log is None:
        return EXIT_ERROR
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    from .report_render import write_html, write_pdf

    app = QGuiApplication.instance() or QGuiApplication(["deco-inspector-report"])  # noqa: F841 - fonts need it
    try:
        from inspection.report import build_report

        data = build_report(log, period, policy.shifts, station=policy.station, recipe=args.recipe,
                            generated_by="main.py report")
        for path, writer in ((args.pdf, write_pdf), (args.html, write_html)):
            if path:
                writer(data, path)
                print(f"report written: {path}", file=out)
    except (ResultsLogError, OSError) as e:
        print(f"error: {e}", file=err)
        return EXIT_ERROR
    finally:
        log.close()
    s = data.stats.totals
    print(f"{period.describe()}: {s.total} parts, yield {'-' if s.yield_percent is None else f'{s.yield_percent:.1f} %'}, "
          f"{len(data.audit)} audit entries" + ("" if not data.audit_problems else
                                                f"; the audit chain does NOT verify ({len(data.audit_problems)})"),
          file=out)
    return EXIT_OK
