"""The Statistics tab: yield and parts per hour, the p-chart of the fail rate with its control limits,
score histograms with the thresholds, the Pareto of failure zones and a table per shift and recipe
(pyqtgraph). It shows an inspection.statistics.Statistics it is given and emits what the user asks
for: another period or recipe, or a report."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QDateTime, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDateTimeEdit, QGridLayout, QHBoxLayout, QLabel, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from inspection.statistics import Period, Statistics, current_shift, shift_period

from .display import VERDICT_COLORS

__all__ = ["StatisticsView", "PERIODS", "period_for"]

PERIODS = ("This shift", "Previous shift", "Today", "Last 7 days", "Last 30 days", "All", "Custom")
ALL_RECIPES = "All recipes"
TIME_FORMAT = "%Y-%m-%dT%H:%M"
BACKGROUND = "#161b22"
BAR_COLOR = "#8b949e"
LINE_COLOR = "#58a6ff"
LIMIT_COLOR = "#ff6b60"
MAX_TICKS = 6
ZONE_SHORT = {"top": "top", "middle": "mid", "bottom": "bot", "left": "L", "centre": "C", "right": "R"}


def period_for(choice: str, now: datetime, shifts: tuple, start: str = "", end: str = "") -> Period:
    """The period a choice of PERIODS names at local time `now` (Custom: start / end as given)."""
    if choice in ("This shift", "Previous shift"):
        day, index = current_shift(now, shifts)
        if choice == "Previous shift":
            index -= 1
            if index < 0:
                day, index = day - timedelta(days=1), len(shifts) - 1
        return shift_period(day, index, shifts)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if choice == "Today":
        return Period(midnight.strftime(TIME_FORMAT), "")
    if choice in ("Last 7 days", "Last 30 days"):
        days = 7 if choice == "Last 7 days" else 30
        return Period((midnight - timedelta(days=days - 1)).strftime(TIME_FORMAT), "")
    if choice == "Custom":
        return Period(start, end)
    return Period()


def _plot(title: str, left: str) -> pg.PlotWidget:
    plot = pg.PlotWidget()
    plot.setBackground(BACKGROUND)
    plot.showGrid(x=False, y=True, alpha=0.15)
    plot.setTitle(title, color="#c9d1d9", size="10pt")
    plot.setLabel("left", left)
    plot.getAxis("left").enableAutoSIPrefix(False)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    return plot


def _short_zone(name: str) -> str:
    """'bottom left' -> 'bot L' (the axis has room for nine of them)."""
    return " ".join(ZONE_SHORT.get(word, word) for word in name.split()) if name != "centre" else "centre"


def _ticks(labels: list[str]) -> list[list[tuple[float, str]]]:
    every = max(1, int(np.ceil(len(labels) / MAX_TICKS)))
    return [[(float(i), text) for i, text in enumerate(labels) if i % every == 0]]


class StatisticsView(QWidget):
    """Period and recipe pickers, a summary line, four charts and a table."""

    statistics_requested = Signal(object, str)     # (Period, recipe '' = all)
    report_requested = Signal(object, str)         # (Period, recipe): export a report of what is shown

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("StatisticsTab")
        self.shifts: tuple = (("day", "00:00"),)
        self.period_combo = QComboBox()
        self.period_combo.addItems(PERIODS)
        self.period_combo.setCurrentText("Today")
        self.start_edit, self.end_edit = QDateTimeEdit(), QDateTimeEdit()
        now = QDateTime.currentDateTime()
        self.start_edit.setDateTime(now.addDays(-1))
        self.end_edit.setDateTime(now)
        for edit in (self.start_edit, self.end_edit):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setCalendarPopup(True)
            edit.setEnabled(False)
        self.recipe_combo = QComboBox()
        self.recipe_combo.addItem(ALL_RECIPES)
        refresh = QPushButton("Refresh")
        self.report_button = QPushButton("Export report…")
        self.report_button.setToolTip("This period as a PDF or HTML report (counts, charts, worst parts, audit)")
        row = QHBoxLayout()
        for widget in (QLabel("Period"), self.period_combo, self.start_edit, QLabel("to"), self.end_edit,
                       QLabel("Recipe"), self.recipe_combo, refresh):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.report_button)
        self.summary = QLabel("")
        self.summary.setObjectName("StatisticsSummary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.yield_plot = _plot("Parts and yield per hour", "parts")
        self.pchart_plot = _plot("Fail rate per hour (p-chart, 3σ limits)", "fail rate %")
        self.hist_plot = _plot("Scores: pass / review / fail", "parts (log10)")
        self.pareto_plot = _plot("Where failures occur (Pareto)", "failed parts")
        grid = QGridLayout()
        for k, plot in enumerate((self.yield_plot, self.pchart_plot, self.hist_plot, self.pareto_plot)):
            grid.addWidget(plot, k // 2, k % 2)
        self.table = QTableWidget(0, 9)
        self.table.setHorizontalHeaderLabels(["group", "parts", "pass", "review", "fail", "error", "yield",
                                              "false calls", "false-call rate"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMaximumHeight(180)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addLayout(grid, 1)
        layout.addWidget(self.table)
        self.period_combo.currentTextChanged.connect(self._period_changed)
        refresh.clicked.connect(self.request)
        self.recipe_combo.activated.connect(lambda _: self.request())
        for edit in (self.start_edit, self.end_edit):
            edit.editingFinished.connect(self.request)
        self.report_button.clicked.connect(lambda: self.report_requested.emit(*self.selection()))

    # ----------------------------------------------------------------- what the user picks
    def selection(self) -> tuple[Period, str]:
        fmt = "yyyy-MM-ddTHH:mm"
        period = period_for(self.period_combo.currentText(), datetime.now(), self.shifts,
                            self.start_edit.dateTime().toString(fmt), self.end_edit.dateTime().toString(fmt))
        recipe = self.recipe_combo.currentText()
        return period, "" if recipe == ALL_RECIPES else recipe

    def request(self) -> None:
        self.statistics_requested.emit(*self.selection())

    def _period_changed(self, choice: str) -> None:
        for edit in (self.start_edit, self.end_edit):
            edit.setEnabled(choice == "Custom")
        self.request()

    def set_shifts(self, shifts: tuple) -> None:
        self.shifts = tuple(shifts)

    def show_recipes(self, names: list[str]) -> None:
        current = self.recipe_combo.currentText()
        self.recipe_combo.blockSignals(True)
        self.recipe_combo.clear()
        self.recipe_combo.addItems([ALL_RECIPES] + [n for n in names if n])
        self.recipe_combo.setCurrentText(current if current in names else ALL_RECIPES)
        self.recipe_combo.blockSignals(False)

    def show_report_allowed(self, allowed: bool) -> None:
        self.report_button.setEnabled(allowed)

    # ----------------------------------------------------------------- showing statistics
    def show_statistics(self, s: Statistics, seconds: float | None = None) -> None:
        t = s.totals
        pct = lambda v: "–" if v is None else f"{v:.1f} %"  # noqa: E731
        rate = lambda v: "–" if v is None else f"{100 * v:.2f} %"  # noqa: E731
        took = f" · computed in {seconds * 1000:.0f} ms" if seconds is not None else ""
        self.summary.setText(
            f"<b>{s.period.describe()}</b>: {t.total} parts · yield <b>{pct(t.yield_percent)}</b> · "
            f"pass {t.pass_} · review {t.review} · fail {t.fail} · error {t.error} · false calls {t.false_calls} "
            f"({rate(t.false_call_rate)} of rejects) · p̄ {rate(s.p_bar)} · "
            f"<span style='color:{LIMIT_COLOR}'>{len(s.out_of_control)} hours out of control</span>{took}")
        self._show_yield(s)
        self._show_pchart(s)
        self._show_histogram(s)
        self._show_pareto(s)
        self._show_table(s)

    def _show_yield(self, s: Statistics) -> None:
        plot = self.yield_plot
        plot.clear()
        hours = list(s.hourly.items())
        x = np.arange(len(hours), dtype=float)
        totals = np.array([c.total for _, c in hours], float)
        plot.addItem(pg.BarGraphItem(x=x, height=totals, width=0.8, brush=BAR_COLOR, pen=pg.mkPen(None)))
        top = float(totals.max()) if len(totals) else 1.0
        yields = np.array([c.yield_percent if c.yield_percent is not None else np.nan for _, c in hours], float)
        plot.plot(x, yields / 100.0 * top, pen=pg.mkPen(VERDICT_COLORS["pass"], width=2),
                  name="yield (100 % = top)")
        plot.getAxis("bottom").setTicks(_ticks([f"{h[5:10]} {h[11:13]}h" for h, _ in hours]))
        plot.setTitle(f"Parts per hour; yield line (top = 100 %, lowest {np.nanmin(yields):.1f} %)"
                      if len(hours) and np.isfinite(yields).any() else "Parts and yield per hour",
                      color="#c9d1d9", size="10pt")

    def _show_pchart(self, s: Statistics) -> None:
        plot = self.pchart_plot
        plot.clear()
        pts = s.pchart
        x = np.arange(len(pts), dtype=float)
        p = np.array([q["p"] for q in pts], float) * 100
        for key in ("ucl", "lcl"):
            plot.plot(x, np.array([q[key] for q in pts], float) * 100,
                      pen=pg.mkPen(LIMIT_COLOR, width=1, style=Qt.PenStyle.DashLine))
        if s.p_bar is not None:
            plot.addItem(pg.InfiniteLine(pos=s.p_bar * 100, angle=0, pen=pg.mkPen("#c9d1d9", width=1),
                                         label=f"p̄ {s.p_bar * 100:.2f} %", labelOpts={"position": 0.05}))
        plot.plot(x, p, pen=pg.mkPen(LINE_COLOR, width=1))
        out = np.array([q["out"] for q in pts], bool)
        plot.addItem(pg.ScatterPlotItem(x=x[~out], y=p[~out], size=4, brush=LINE_COLOR, pen=pg.mkPen(None)))
        plot.addItem(pg.ScatterPlotItem(x=x[out], y=p[out], size=11, brush=LIMIT_COLOR, pen=pg.mkPen("w")))
        plot.getAxis("bottom").setTicks(_ticks([f"{q['hour'][5:10]} {q['hour'][11:13]}h" for q in pts]))

    def _show_histogram(self, s: Statistics) -> None:
        plot = self.hist_plot
        plot.clear()
        edges = np.array(s.hist_edges, float)
        if len(edges) < 2:
            return
        width = edges[1] - edges[0]
        for k, verdict in enumerate(("pass", "review", "fail")):
            counts = np.log10(1 + np.array(s.hist[verdict], float))
            plot.addItem(pg.BarGraphItem(x=edges[:-1] + width * (k + 0.5) / 3, height=counts, width=width / 3,
                                         brush=VERDICT_COLORS[verdict], pen=pg.mkPen(None)))
        for value, verdict, where in ((s.review_threshold, "review", 0.95), (s.fail_threshold, "fail", 0.85)):
            if value is not None:
                plot.addItem(pg.InfiniteLine(pos=value, angle=90, pen=pg.mkPen(VERDICT_COLORS[verdict], width=2,
                                                                              style=Qt.PenStyle.DashLine),
                                             label=f"{verdict} {value:.3f}",
                                             labelOpts={"position": where, "color": VERDICT_COLORS[verdict]}))
        plot.setLabel("bottom", "score")

    def _show_pareto(self, s: Statistics) -> None:
        plot = self.pareto_plot
        plot.clear()
        rows = s.pareto
        x = np.arange(len(rows), dtype=float)
        counts = np.array([n for _, n, _ in rows], float)
        plot.addItem(pg.BarGraphItem(x=x, height=counts, width=0.7, brush=VERDICT_COLORS["fail"], pen=pg.mkPen(None)))
        top = float(counts.max()) if len(counts) else 1.0
        plot.plot(x, np.array([c for _, _, c in rows], float) / 100.0 * top, pen=pg.mkPen(LINE_COLOR, width=2),
                  symbol="o", symbolSize=5, symbolBrush=LINE_COLOR)
        plot.getAxis("bottom").setTicks([[(float(i), _short_zone(z)) for i, (z, _, _) in enumerate(rows)]])
        plot.setTitle(f"Where failures occur (Pareto of {s.located_fails}; line: cumulative, top = 100 %)",
                      color="#c9d1d9", size="10pt")

    def _show_table(self, s: Statistics) -> None:
        rows = [(f"shift {d} {name}", c) for (d, name), c in s.by_shift.items()]
        rows += [(f"recipe {r or '(none)'}", c) for r, c in s.by_recipe.items()]
        self.table.setRowCount(len(rows))
        for i, (label, c) in enumerate(rows):
            values = [label, c.total, c.pass_, c.review, c.fail, c.error,
                      "–" if c.yield_percent is None else f"{c.yield_percent:.1f} %", c.false_calls,
                      "–" if c.false_call_rate is None else f"{100 * c.false_call_rate:.2f} %"]
            for j, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if j:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
