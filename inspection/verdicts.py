"""Verdicts: the one rule that turns a score into PASS / REVIEW / FAIL, and thresholds suggested
from known-good parts.

Two thresholds give three verdicts: score <= review threshold -> pass, above it up to the fail
threshold -> review (a person looks), above the fail threshold -> fail. Frames that could not be
inspected (or whose score is not a finite number) get the verdict 'error'. With the review
threshold equal to the fail threshold there is no review band: pass / fail, as `main.py inspect`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PASS", "REVIEW", "FAIL", "ERROR", "VERDICTS", "REVIEW_FRACTION", "verdict_for", "default_review_threshold",
           "Calibration", "calibrate_thresholds"]

PASS, REVIEW, FAIL, ERROR = "pass", "review", "fail", "error"
VERDICTS = (PASS, REVIEW, FAIL, ERROR)
MIN_CALIBRATION_MARGIN = 0.005   # the least distance between suggested review and fail thresholds
# The window's review band for a model without saved thresholds: review above this fraction of the
# fail threshold (the model's own threshold), so parts just below it are looked at by a person.
REVIEW_FRACTION = 0.8


def verdict_for(score: float | None, fail_threshold: float, review_threshold: float | None = None) -> str:
    """pass / review / fail for a score; a review threshold above the fail one counts as the fail one."""
    if score is None or not math.isfinite(score):
        return ERROR
    review = fail_threshold if review_threshold is None else min(review_threshold, fail_threshold)
    if score > fail_threshold:
        return FAIL
    if score > review:
        return REVIEW
    return PASS


def default_review_threshold(fail_threshold: float) -> float:
    """The review threshold that goes with `fail_threshold` when none is chosen: REVIEW_FRACTION of
    it, rounded to 4 decimals (as the threshold fields show it)."""
    return round(REVIEW_FRACTION * fail_threshold, 4)


@dataclass(frozen=True)
class Calibration:
    """Thresholds suggested from the scores of known-good parts."""

    count: int
    percentile: float
    percentile_score: float
    max_score: float
    review_threshold: float
    fail_threshold: float
    errors: tuple[str, ...] = ()


def calibrate_thresholds(scores, percentile: float = 99.0, margin: float = 0.1,
                         errors: tuple[str, ...] = ()) -> Calibration:
    """Review threshold = the `percentile` of the good scores; fail threshold = that plus
    `margin` (a fraction of it, at least MIN_CALIBRATION_MARGIN)."""
    values = np.asarray([s for s in scores if s is not None and math.isfinite(s)], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no good image could be scored, so no threshold can be suggested")
    p = float(np.percentile(values, percentile))
    fail = p + max(margin * abs(p), MIN_CALIBRATION_MARGIN)
    return Calibration(int(values.size), float(percentile), p, float(values.max()), p, fail, tuple(errors))
