"""The controller's statistics concern: the Statistics tab (computed in SQL from the results log's running
sums when the tab is shown or its period changes) and the report export (PDF or HTML). A part of
InspectorController."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from inspection.report import build_report
from inspection.results_log import ResultsLogError
from inspection.statistics import Period, compute_statistics

from .report_render import write_html, write_pdf

STATISTICS_TAB = "statistics"


class StatisticsControl:
    """The Statistics tab and reports: a part of InspectorController."""

    def _init_statistics(self) -> None:
        self.statistics_seconds: float | None = None
        self.last_statistics = None

    def refresh_statistics(self, period: Period | None = None, recipe: str | None = None) -> None:
        """Compute and show the statistics of `period` / `recipe` (default: what the tab has selected)."""
        if period is None or recipe is None:
            period, recipe = self.window.statistics_selection()
        t0 = time.perf_counter()
        try:
            conn = self.results_reader.conn
            stats = compute_statistics(conn, period, self.accounts.policy.shifts, recipe)
            recipes = [r[0] for r in conn.execute("SELECT DISTINCT recipe FROM parts_summary ORDER BY recipe")]
        except (ResultsLogError, sqlite3.DatabaseError) as e:
            self.message(f"Statistics: {e}", "error")
            return
        self.statistics_seconds = time.perf_counter() - t0
        self.last_statistics = stats
        self.window.show_statistics(stats, self.statistics_seconds, recipes)

    def choose_report(self, period: Period, recipe: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M")
        default = str(Path.home() / f"deco-inspector-report-{stamp}.pdf")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export report", default,
                                              "PDF (*.pdf);;HTML, one self-contained file (*.html)")
        if path:
            self.export_report(path, period, recipe)

    def export_report(self, path: str, period: Period, recipe: str = "") -> bool:
        """Write the report of `period` as PDF (a .pdf name) or HTML (anything else); a message says where."""
        if self.access.role == "locked":
            self.permit("run")   # says why
            return False
        self.window.show_busy(True, "Writing the report…")
        try:
            data = build_report(self.results_writer, period, self.accounts.policy.shifts,
                                station=self.accounts.policy.station, recipe=recipe, generated_by=self.access.who)
            (write_pdf if path.lower().endswith(".pdf") else write_html)(data, path)
        except (ResultsLogError, OSError) as e:
            self.message(f"Report not written: {e}", "error")
            return False
        finally:
            self.window.show_busy(False)
        self.message(f"Report written: {path} ({data.stats.totals.total} parts, {len(data.audit)} audit entries)",
                     "ok")
        return True
