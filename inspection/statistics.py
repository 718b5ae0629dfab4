"""Production statistics from the results log, computed in SQL (Qt-free).

For a period (and optionally one recipe): counts and yield per hour, per shift and per recipe, a
p-chart of the fail rate per hour with 3-sigma control limits, score histograms of passed, review and
failed parts, the false-call rate, and a Pareto of where on the part failures occur (the anomaly
map's peak, `defect_x` / `defect_y`, in a ZONE_GRID x ZONE_GRID grid over the inspected region).

Counts and histograms come from the results log's running sums (`parts_summary`, `parts_scores`:
per quarter hour, recipe and verdict, kept current by triggers on `parts`), so a month of a busy line
is a few ten thousand sums instead of a million rows; hourly, shift, recipe and total figures are
grouped from them in one query, and the Pareto reads only the failed parts. Times are the local
wall-clock time each row was logged with; a period is [start, end) as 'YYYY-MM-DDTHH:MM' text ('' =
open), taken to the quarter hour like the sums. Shifts are (name, 'HH:MM' start, on a quarter hour)
pairs, each running until the next starts; the last one runs past midnight and counts for the day it
started (shifts of at least an hour).
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .results_log import SCORE_BIN, SCORE_BINS
from .verdicts import ERROR, FAIL, PASS, REVIEW, VERDICTS

__all__ = ["Period", "Counts", "Statistics", "compute_statistics", "ZONE_GRID", "zone_name",
           "SIGMA_LIMIT", "parse_when", "shift_period", "current_shift"]

ZONE_GRID = 3          # the part is split into ZONE_GRID x ZONE_GRID zones for the Pareto
SIGMA_LIMIT = 3.0      # p-chart control limits at pbar +- SIGMA_LIMIT standard errors
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")


def zone_name(zone: int, grid: int = ZONE_GRID) -> str:
    row, col = divmod(int(zone), grid)
    if grid == 3:
        return f"{_ROWS[row]} {_COLS[col]}" if (row, col) != (1, 1) else "centre"
    return f"row {row + 1}, column {col + 1}"


@dataclass(frozen=True)
class Period:
    """[start, end) as local 'YYYY-MM-DDTHH:MM[:SS]' text; '' leaves that side open."""

    start: str = ""
    end: str = ""

    def where(self, column: str = "time") -> tuple[str, list]:
        clauses, params = [], []
        if self.start:
            clauses.append(f"{column} >= ?")
            params.append(self.start)
        if self.end:
            clauses.append(f"{column} < ?")
            params.append(self.end)
        return " AND ".join(clauses) or "1", params

    def describe(self) -> str:
        if not self.start and not self.end:
            return "all parts"
        return f"{self.start.replace('T', ' ') or 'the first part'} to {self.end.replace('T', ' ') or 'now'}"


@dataclass
class Counts:
    """Parts per verdict and false calls of one group."""

    pass_: int = 0
    review: int = 0
    fail: int = 0
    error: int = 0
    false_calls: int = 0

    def add(self, verdict: str, n: int, false_calls: int) -> None:
        setattr(self, "pass_" if verdict == PASS else verdict, getattr(self, "pass_" if verdict == PASS else verdict) + n)
        self.false_calls += false_calls

    @property
    def total(self) -> int:
        return self.pass_ + self.review + self.fail + self.error

    @property
    def inspected(self) -> int:
        return self.pass_ + self.review + self.fail

    @property
    def yield_percent(self) -> float | None:
        """Passed parts among the inspected ones (errors are not parts judged)."""
        return 100.0 * self.pass_ / self.inspected if self.inspected else None

    @property
    def fail_rate(self) -> float | None:
        return self.fail / self.inspected if self.inspected else None

    @property
    def false_call_rate(self) -> float | None:
        """False calls among the parts the station rejected (fail and review)."""
        rejected = self.fail + self.review
        return self.false_calls / rejected if rejected else None

    def as_dict(self) -> dict:
        return {"total": self.total, PASS: self.pass_, REVIEW: self.review, FAIL: self.fail, ERROR: self.error,
                "false_calls": self.false_calls, "yield_percent": self.yield_percent}


@dataclass
class Statistics:
    period: Period
    recipe: str
    shifts: tuple
    totals: Counts = field(default_factory=Counts)
    hourly: dict = field(default_factory=dict)       # 'YYYY-MM-DDTHH' -> Counts, in time order
    by_shift: dict = field(default_factory=dict)     # ('YYYY-MM-DD', shift name) -> Counts, in time order
    by_recipe: dict = field(default_factory=dict)    # recipe ('' = none) -> Counts
    pchart: list = field(default_factory=list)       # dicts: hour, n, fails, p, ucl, lcl, out
    p_bar: float | None = None
    hist_edges: list = field(default_factory=list)   # HIST_BINS + 1 edges
    hist: dict = field(default_factory=dict)         # verdict -> counts per bin
    fail_threshold: float | None = None
    review_threshold: float | None = None
    pareto: list = field(default_factory=list)       # (zone name, failed parts, cumulative %), largest first
    located_fails: int = 0

    @property
    def out_of_control(self) -> list[dict]:
        return [p for p in self.pchart if p["out"]]


def _minute(start: str) -> int:
    hours, minutes = start.split(":")
    return int(hours) * 60 + int(minutes)


def _shift_case(shifts: tuple, column: str = "slot") -> str:
    """SQL: the index of the shift of a local time text column."""
    starts = [_minute(s) for _, s in shifts]
    minute = f"(CAST(substr({column}, 12, 2) AS INTEGER) * 60 + CAST(substr({column}, 15, 2) AS INTEGER))"
    last = len(starts) - 1
    whens = [f"WHEN {minute} < {starts[0]} THEN {last}"]
    whens += [f"WHEN {minute} < {starts[i + 1]} THEN {i}" for i in range(last)]
    return f"CASE {' '.join(whens)} ELSE {last} END"


def compute_statistics(conn: sqlite3.Connection, period: Period = Period(), shifts: tuple = (("day", "00:00"),),
                       recipe: str = "", grid: int = ZONE_GRID) -> Statistics:
    """Everything the Statistics tab and the report show, for `period` (and `recipe`, '' = all)."""
    stats = Statistics(period, recipe, tuple(shifts))
    where, params = period.where()
    slots, slot_params = period.where("slot")
    if recipe:
        where += " AND recipe = ?"
        slots += " AND recipe = ?"
        params, slot_params = params + [recipe], slot_params + [recipe]
    first_start = _minute(shifts[0][1])
    rows = conn.execute(
        f"SELECT substr(slot, 1, 13) AS hour, {_shift_case(shifts)} AS shift, recipe, verdict, SUM(n), "
        f"SUM(false_calls) FROM parts_summary WHERE {slots} GROUP BY hour, shift, recipe, verdict "
        f"HAVING SUM(n) > 0 ORDER BY hour, shift", slot_params).fetchall()
    hourly: dict = defaultdict(Counts)
    by_shift: dict = defaultdict(Counts)
    by_recipe: dict = defaultdict(Counts)
    for hour, shift, rec, verdict, n, false_calls in rows:
        if verdict not in VERDICTS:
            continue
        false_calls = int(false_calls or 0)
        day = hour[:10]
        if shift == len(shifts) - 1 and int(hour[11:13]) * 60 < first_start:
            day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        for counts in (stats.totals, hourly[hour], by_shift[(day, shifts[shift][0], shift)], by_recipe[rec]):
            counts.add(verdict, n, false_calls)
    stats.hourly = dict(hourly)
    stats.by_shift = {(d, name): c for (d, name, _), c in sorted(by_shift.items(), key=lambda kv: (kv[0][0],
                                                                                                   kv[0][2]))}
    stats.by_recipe = dict(sorted(by_recipe.items()))
    _pchart(stats)
    _thresholds(conn, stats, where, params)
    _histogram(conn, stats, slots, slot_params)
    _pareto(conn, stats, where, params, grid)
    return stats


def _pchart(stats: Statistics) -> None:
    """Fail rate per hour; limits pbar +- 3 sqrt(pbar (1 - pbar) / n) for each hour's n."""
    n_all = sum(c.inspected for c in stats.hourly.values())
    if not n_all:
        return
    p_bar = sum(c.fail for c in stats.hourly.values()) / n_all
    stats.p_bar = p_bar
    for hour, c in stats.hourly.items():
        if not c.inspected:
            continue
        sigma = math.sqrt(p_bar * (1.0 - p_bar) / c.inspected)
        ucl, lcl = min(1.0, p_bar + SIGMA_LIMIT * sigma), max(0.0, p_bar - SIGMA_LIMIT * sigma)
        p = c.fail / c.inspected
        stats.pchart.append({"hour": hour, "n": c.inspected, "fails": c.fail, "p": p, "ucl": ucl, "lcl": lcl,
                             "out": p > ucl or p < lcl})


def _thresholds(conn: sqlite3.Connection, stats: Statistics, where: str, params: list) -> None:
    """The thresholds of the newest part of the period (what the histogram is drawn against)."""
    row = conn.execute(f"SELECT threshold, review_threshold FROM parts WHERE {where} AND threshold IS NOT NULL "
                       f"ORDER BY time DESC LIMIT 1", params).fetchone()
    if row is not None:
        stats.fail_threshold, stats.review_threshold = row[0], row[1]


def _histogram(conn: sqlite3.Connection, stats: Statistics, slots: str, params: list) -> None:
    """Scores in SCORE_BIN wide bins from 0 to twice the fail threshold (at least 1, at most the sums'
    range); higher scores count in the last bin."""
    top = max(1.0, 2.0 * (stats.fail_threshold or 0.0))
    bins = max(1, min(SCORE_BINS, round(top / SCORE_BIN)))
    stats.hist_edges = [k * SCORE_BIN for k in range(bins + 1)]
    stats.hist = {v: [0] * bins for v in (PASS, REVIEW, FAIL)}
    rows = conn.execute(f"SELECT verdict, MIN(bin, ?) AS b, SUM(n) FROM parts_scores WHERE {slots} "
                        f"GROUP BY verdict, b", [bins - 1] + params).fetchall()
    for verdict, b, n in rows:
        if verdict in stats.hist:
            stats.hist[verdict][int(b)] += int(n)


def _pareto(conn: sqlite3.Connection, stats: Statistics, where: str, params: list, grid: int) -> None:
    rows = conn.execute(
        f"SELECT MIN(CAST(defect_y * {grid} AS INTEGER), {grid - 1}) * {grid} "
        f"+ MIN(CAST(defect_x * {grid} AS INTEGER), {grid - 1}) AS zone, COUNT(*) AS n FROM parts "
        f"WHERE {where} AND verdict = 'fail' AND defect_x IS NOT NULL AND defect_y IS NOT NULL "
        f"GROUP BY zone ORDER BY n DESC, zone", params).fetchall()
    total = sum(n for _, n in rows)
    stats.located_fails = total
    running = 0
    for zone, n in rows:
        running += n
        stats.pareto.append((zone_name(max(0, int(zone)), grid), int(n), 100.0 * running / total))


def parse_when(text: str, end: bool = False) -> str:
    """'YYYY-MM-DD[ HH:MM]' (or with T) -> 'YYYY-MM-DDTHH:MM'; a date alone is its midnight, or with
    end=True the next midnight (the whole day counts). ValueError names the text."""
    text = str(text).strip().replace(" ", "T")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return f"{(day + timedelta(days=1)) if end else day}T00:00"
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DD HH:MM)") from None
    return when.strftime("%Y-%m-%dT%H:%M")


def shift_period(day: date, index: int, shifts: tuple) -> Period:
    """The period of shift `index` that starts on `day` (until the next shift starts)."""
    start = f"{day}T{shifts[index][1]}"
    if index + 1 < len(shifts):
        return Period(start, f"{day}T{shifts[index + 1][1]}")
    return Period(start, f"{day + timedelta(days=1)}T{shifts[0][1]}")


def current_shift(now: datetime, shifts: tuple) -> tuple[date, int]:
    """(the day the shift running at local time `now` started, its index)."""
    minute = now.hour * 60 + now.minute
    starts = [_minute(s) for _, s in shifts]
    if minute < starts[0]:
        return now.date() - timedelta(days=1), len(shifts) - 1
    index = max(i for i, s in enumerate(starts) if s <= minute)
    return now.date(), index
