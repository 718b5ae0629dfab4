"""Statistics from the results log against a case worked out by hand: counts and yield per hour, shift
and recipe, the p-chart's limits and out-of-control hour, the score histogram, the false-call rate,
the Pareto of failure zones, and the running sums kept by triggers (also for a migrated log)."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from inspection.results_log import ResultsLog
from inspection.statistics import Period, compute_statistics, zone_name

SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))


def add(log, time, verdict, score, recipe="coins", x=None, y=None):
    return log.add(time=time, verdict=verdict, score=score, recipe=recipe, threshold=0.5, review_threshold=0.4,
                   defect_x=x, defect_y=y)


@pytest.fixture
def log(tmp_path):
    log = ResultsLog(tmp_path / "r.sqlite")
    # hour 2026-03-02T05 (night shift of 03-01): 10 parts, 1 fail
    for k in range(9):
        add(log, f"2026-03-02T05:{k:02d}:00.000+01:00", "pass", 0.11)
    add(log, "2026-03-02T05:30:00.000+01:00", "fail", 0.91, x=0.1, y=0.1)            # top left
    # hour 06 (early shift of 03-02): 20 parts, 8 fail (the bad hour), 2 review, one error
    for k in range(10):
        add(log, f"2026-03-02T06:{k:02d}:00.000+01:00", "pass", 0.21, recipe="labels")
    for k in range(2):
        add(log, f"2026-03-02T06:{10 + k:02d}:00.000+01:00", "review", 0.46, recipe="labels", x=0.5, y=0.5)
    for k in range(8):
        add(log, f"2026-03-02T06:{20 + k:02d}:00.000+01:00", "fail", 0.71, recipe="labels", x=0.9, y=0.95)  # bottom right
    add(log, "2026-03-02T06:40:00.000+01:00", "error", None)
    # hour 14 (late shift): 30 parts, 1 fail
    for k in range(29):
        add(log, f"2026-03-02T14:{k:02d}:00.000+01:00", "pass", 0.06)
    fail_late = add(log, "2026-03-02T14:50:00.000+01:00", "fail", 0.56, x=0.95, y=0.9)  # bottom right
    log.mark_false_call(fail_late, True, "scratch on the tray, not the part")
    yield log
    log.close()


def test_counts_yield_shifts_recipes_and_false_calls(log):
    s = compute_statistics(log.conn, Period(), SHIFTS)
    assert s.totals.total == 61 and s.totals.inspected == 60 and s.totals.error == 1
    assert s.totals.pass_ == 48 and s.totals.fail == 10 and s.totals.review == 2
    assert s.totals.yield_percent == pytest.approx(80.0)
    assert s.totals.false_calls == 1 and s.totals.false_call_rate == pytest.approx(1 / 12)
    assert list(s.hourly) == ["2026-03-02T05", "2026-03-02T06", "2026-03-02T14"]
    assert [c.inspected for c in s.hourly.values()] == [10, 20, 30]
    assert list(s.by_shift) == [("2026-03-01", "night"), ("2026-03-02", "early"), ("2026-03-02", "late")]
    assert [c.yield_percent for c in s.by_shift.values()] == pytest.approx([90.0, 50.0, 29 / 30 * 100])
    assert s.by_recipe["labels"].total == 20 and s.by_recipe["coins"].total == 41
    only = compute_statistics(log.conn, Period(), SHIFTS, recipe="labels")
    assert only.totals.total == 20 and list(only.by_recipe) == ["labels"]
    morning = compute_statistics(log.conn, Period("2026-03-02T06:00", "2026-03-02T07:00"), SHIFTS)
    assert morning.totals.total == 21 and list(morning.hourly) == ["2026-03-02T06"]


def test_pchart_limits_and_the_out_of_control_hour(log):
    s = compute_statistics(log.conn, Period(), SHIFTS)
    p_bar = 10 / 60
    assert s.p_bar == pytest.approx(p_bar)
    by_hour = {p["hour"]: p for p in s.pchart}
    for hour, n, fails in (("2026-03-02T05", 10, 1), ("2026-03-02T06", 20, 8), ("2026-03-02T14", 30, 1)):
        sigma = math.sqrt(p_bar * (1 - p_bar) / n)
        assert by_hour[hour]["p"] == pytest.approx(fails / n)
        assert by_hour[hour]["ucl"] == pytest.approx(p_bar + 3 * sigma)
        assert by_hour[hour]["lcl"] == pytest.approx(max(0.0, p_bar - 3 * sigma))
    # hour 06: p = 0.4 < UCL 0.1667 + 3 * 0.0833 = 0.4167, in control; two more fails put it out
    assert [p["hour"] for p in s.out_of_control] == []
    for minute in (50, 51):
        add(log, f"2026-03-02T06:{minute}:00.000+01:00", "fail", 0.8, recipe="labels", x=0.9, y=0.9)
    s = compute_statistics(log.conn, Period(), SHIFTS)
    p_bar = 12 / 62
    ucl = p_bar + 3 * math.sqrt(p_bar * (1 - p_bar) / 22)
    assert 10 / 22 > ucl and [p["hour"] for p in s.out_of_control] == ["2026-03-02T06"]


def test_histogram_thresholds_and_pareto(log):
    # 0.025 wide bins: 0.11 -> bin 4, 0.21 -> 8, 0.06 -> 2, 0.46 -> 18, 0.91 -> 36, 0.71 -> 28, 0.56 -> 22
    s = compute_statistics(log.conn, Period(), SHIFTS)
    assert (s.fail_threshold, s.review_threshold) == (0.5, 0.4)
    assert len(s.hist_edges) == 41 and s.hist_edges[-1] == pytest.approx(1.0)
    assert s.hist["pass"][4] == 9 and s.hist["pass"][8] == 10 and s.hist["pass"][2] == 29   # 0.11, 0.21, 0.06
    assert s.hist["review"][18] == 2                                                        # 0.46
    assert s.hist["fail"][36] == 1 and s.hist["fail"][28] == 8 and s.hist["fail"][22] == 1   # 0.91, 0.71, 0.56
    assert sum(map(sum, s.hist.values())) == 60
    assert s.located_fails == 10
    assert [(z, n) for z, n, _ in s.pareto] == [("bottom right", 9), ("top left", 1)]
    assert s.pareto[0][2] == pytest.approx(90.0) and s.pareto[-1][2] == pytest.approx(100.0)
    assert zone_name(4) == "centre"


def test_running_sums_equal_a_count_of_the_rows_and_survive_a_migration(log, tmp_path):
    sums = dict(((r[0], r[1], r[2]), r[3]) for r in log.conn.execute(
        "SELECT slot, recipe, verdict, n FROM parts_summary"))
    counted = dict(((r[0], r[1], r[2]), r[3]) for r in log.conn.execute(
        "SELECT substr(time, 1, 14) || printf('%02d', (CAST(substr(time, 15, 2) AS INTEGER) / 15) * 15) AS s, "
        "recipe, verdict, COUNT(*) FROM parts GROUP BY s, recipe, verdict"))
    assert sums == counted
    assert log.conn.execute("SELECT SUM(false_calls) FROM parts_summary").fetchone()[0] == 1
    # a log without the sums (as schema 1 had) gets them filled from its rows when opened
    before = compute_statistics(log.conn, Period(), SHIFTS)
    conn = sqlite3.connect(log.path)
    conn.executescript("DROP TRIGGER parts_summary_insert; DELETE FROM parts_summary; DELETE FROM parts_scores;")
    conn.close()
    log.close()
    again = ResultsLog(log.path)
    after = compute_statistics(again.conn, Period(), SHIFTS)
    assert after.totals.as_dict() == before.totals.as_dict() and after.hist == before.hist
    again.close()


class _PeakModel:
    """A map that is zero except at one pixel (row 30, column 10 of a 40 x 40 crop)."""

    model_id = "peak-1"

    class settings:  # noqa: N801 - the attribute the session reads
        batch_size = 2

    def predict(self, images, category=None):
        from types import SimpleNamespace

        out = []
        for img in images:
            amap = np.zeros(img.shape[:2], np.float32)
            amap[30, 10] = 0.9
            out.append(SimpleNamespace(score=0.9, anomaly_map=amap, category="part", category_source="given",
                                       category_confidence=None, reconstruction=None, timings={"unet": 1.0},
                                       latency_ms=1.0))
        return out


def test_the_session_logs_where_the_map_peaks_and_the_recipe_version(tmp_path):
    from inspection import Frame, InspectionRecipe, InspectionSession
    from inspection.session import peak_position

    assert peak_position(np.zeros((0, 0))) == (None, None)
    assert peak_position(np.full((4, 4), np.nan)) == (None, None)
    log = ResultsLog(tmp_path / "r.sqlite")
    session = InspectionSession(_PeakModel(), InspectionRecipe(recipe="coins", recipe_version="r4", view_max_side=0),
                                results_log=log)
    (part,) = session.inspect([Frame(np.zeros((40, 40, 3), np.uint8), "test", "a.png", 0)])
    assert (part.defect_x, part.defect_y) == pytest.approx((10.5 / 40, 30.5 / 40)) and part.recipe_version == "r4"
    row = log.conn.execute("SELECT recipe_version, defect_x, defect_y, model_id, threshold FROM parts").fetchone()
    assert (row[0], row[3]) == ("r4", "peak-1") and row[4] == InspectionRecipe().fail_threshold
    assert (row[1], row[2]) == pytest.approx((10.5 / 40, 30.5 / 40))
    stats = compute_statistics(log.conn, Period(), SHIFTS)
    assert stats.pareto[0][:2] == ("bottom left", 1)
    log.close()
