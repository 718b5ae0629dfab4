"""Screenshots for the README's roles / audit / statistics / reports section, taken in a real window
(run under Xvfb: `xvfb-run -a python scripts/make_statistics_screenshots.py`):

* docs/sign_in.png: the sign-in dialog over a window where an administrator turned sign-in on;
* docs/operator_locked.png: the window in the operator role (the engineer's controls greyed out);
* docs/statistics_tab.png: the Statistics tab on a large log (--history, e.g. the benchmark's million rows);
* docs/report_page.png: the report's worst-parts page (a real demo run: `main.py inspect` on the demo
  coins with --save-overlays; the changes in its audit trail are made through the window here).

The report page image comes from the PDF through pdftoppm (poppler-utils).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOCS = ROOT / "docs"
DEMO_PARTS = ROOT / "resources" / "demo_data" / "coin" / "test"


def grab(widget, path: Path) -> None:
    from PySide6.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    widget.grab().save(str(path))
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--history", type=Path, default=Path("/tmp/deco_bench_statistics/results.sqlite"),
                   help="a large results log (named results.sqlite) for the Statistics tab screenshot")
    p.add_argument("--work", type=Path, default=None, help="keep the demo run here (default: a temporary folder)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="deco-shots-"))
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    log = home / "results.sqlite"
    if not log.is_file():
        subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", str(DEMO_PARTS), "--log", str(log),
                        "--save-overlays", str(work / "overlays"), "--threshold", "0.5"], check=False)

    from PySide6.QtWidgets import QApplication

    from inspection.access import ENGINEER, OPERATOR
    from inspection.statistics import Period
    from inspector.access_dialogs import SignInDialog
    from inspector.app import app_settings, create_inspector

    window, ctl = create_inspector(data_dir=home, settings=app_settings(home))
    window.resize(1500, 940)
    window.show()
    if ctl.accounts.needs_first_administrator():
        ctl.create_first_administrator("admin", "admin-password")
        ctl.add_user("eve", ENGINEER, "eve-password")
        ctl.add_user("olaf", OPERATOR, "olaf-password")
    ctl.set_station_policy(sign_in=True, station="line1-st2")
    grab(window, DOCS / "operator_locked.png")
    dialog = SignInDialog(parent=window)
    dialog.user.setText("eve")
    dialog.password.setText("eve-password")
    dialog.show()
    dialog.move(window.geometry().center() - dialog.rect().center())
    for _ in range(5):
        QApplication.processEvents()
    screen = QApplication.primaryScreen().grabWindow(0)
    screen.copy(window.frameGeometry()).save(str(DOCS / "sign_in.png"))
    print(f"wrote {DOCS / 'sign_in.png'}")
    dialog.close()
    ctl.sign_in("eve", "eve-password")
    ctl.set_thresholds(0.55, 0.45)
    worst = ctl.results_writer.conn.execute(
        "SELECT id FROM parts WHERE verdict = 'fail' ORDER BY score DESC LIMIT 1").fetchone()
    if worst is not None:
        ctl.mark_false_call([worst[0]], True, "a reflection on the tray, the coin is fine")
    pdf = work / "report.pdf"
    ctl.export_report(str(pdf), Period(), "")
    window.close()
    subprocess.run(["pdftoppm", "-r", "80", "-png", str(pdf), str(work / "page")], check=True)
    pages = sorted(work.glob("page-*.png"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    worst_page = next((i for i, page in enumerate(text.split("\f")) if "Worst parts" in page), 0)
    (DOCS / "report_page.png").write_bytes(pages[worst_page].read_bytes())
    print(f"wrote {DOCS / 'report_page.png'} (page {worst_page + 1} of {len(pages)}; the PDF: {pdf})")

    if args.history.is_file():
        window, ctl = create_inspector(data_dir=args.history.parent, settings=app_settings(args.history.parent))
        window.resize(1500, 940)
        window.show()
        window.statistics_view.period_combo.setCurrentText("Last 7 days")
        window.show_tab("statistics")
        grab(window, DOCS / "statistics_tab.png")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
