"""Verdicts, regions of interest and the record of one inspected part (Qt-free, no model math).

Two thresholds give three verdicts: score <= review threshold -> pass, above it up to the
fail threshold -> review (a person looks), above the fail threshold -> fail. Frames that
could not be inspected get the verdict 'error'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "PASS", "REVIEW", "FAIL", "ERROR", "VERDICTS",
    "verdict_for", "Roi", "apply_roi", "InspectionContext", "Inspection", "Calibration",
    "calibrate_thresholds", "fit_within", "make_thumbnail", "place_map",
]

PASS, REVIEW, FAIL, ERROR = "pass", "review", "fail", "error"
VERDICTS = (PASS, REVIEW, FAIL, ERROR)


def verdict_for(score: float, fail_threshold: float, review_threshold: float | None = None) -> str:
    """pass / review / fail for a score; a review threshold above the fail one counts as the fail one."""
    if score is None or not math.isfinite(score):
        return ERROR
    review = fail_threshold if review_threshold is None else min(review_threshold, fail_threshold)
    if score > fail_threshold:
        return FAIL
    if score > review:
        return REVIEW
    return PASS


@dataclass(frozen=True)
class Roi:
    """A region of interest as fractions of the frame (0..1), so it survives resolution changes."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        vals = [min(max(float(v), 0.0), 1.0) for v in (self.x0, self.y0, self.x1, self.y1)]
        x0, x1 = sorted(vals[0::2])
        y0, y1 = sorted(vals[1::2])
        for name, v in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1)):
            object.__setattr__(self, name, v)

    def pixels(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) in pixels of a height x width frame, at least 1 x 1."""
        x = min(int(round(self.x0 * width)), width - 1)
        y = min(int(round(self.y0 * height)), height - 1)
        w = max(1, min(int(round(self.x1 * width)), width) - x)
        h = max(1, min(int(round(self.y1 * height)), height) - y)
        return x, y, w, h

    def to_list(self) -> list[float]:
        return [round(v, 5) for v in (self.x0, self.y0, self.x1, self.y1)]

    @classmethod
    def from_list(cls, values) -> "Roi | None":
        if not values:
            return None
        if len(values) != 4:
            raise ValueError(f"a region of interest needs 4 numbers (x0, y0, x1, y1), got {values!r}")
        return cls(*map(float, values))

    def describe(self, height: int | None = None, width: int | None = None) -> str:
        if height and width:
            x, y, w, h = self.pixels(height, width)
            return f"{w}x{h} px at ({x}, {y})"
        return f"{100 * (self.x1 - self.x0):.0f}% x {100 * (self.y1 - self.y0):.0f}% of the frame"


MIN_ROI_SIDE = 8


def apply_roi(frame: np.ndarray, roi: Roi | None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The part of `frame` inside `roi` (a view, by slicing) and its (x, y, w, h). A missing or
    too small ROI gives the whole frame."""
    h, w = frame.shape[:2]
    if roi is None:
        return frame, (0, 0, w, h)
    x, y, rw, rh = roi.pixels(h, w)
    if rw < MIN_ROI_SIDE or rh < MIN_ROI_SIDE:
        return frame, (0, 0, w, h)
    return frame[y:y + rh, x:x + rw], (x, y, rw, rh)


def place_map(amap: np.ndarray, frame_shape: tuple[int, int], rect: tuple[int, int, int, int]) -> np.ndarray:
    """A map over the ROI -> a map over the whole frame (zero outside the ROI)."""
    x, y, w, h = rect
    if (x, y, w, h) == (0, 0, frame_shape[1], frame_shape[0]):
        return amap
    full = np.zeros(frame_shape[:2], np.float32)
    full[y:y + h, x:x + w] = amap
    return full


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longer side is at most `max_side`."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if image.dtype == np.uint8 else cv2.INTER_LINEAR)


def make_thumbnail(image: np.ndarray, side: int = 96) -> np.ndarray:
    return np.ascontiguousarray(fit_within(image, side))


@dataclass(frozen=True)
class InspectionContext:
    """How frames are judged right now: pinned category (None = the classifier decides),
    thresholds, region of interest, the recipe in force and what gets archived."""

    category: str | None = None
    fail_threshold: float = 0.3
    review_threshold: float = 0.3
    roi: Roi | None = None
    recipe: str = ""
    archive_verdicts: tuple[str, ...] = (FAIL, REVIEW)
    thumbnails: bool = True
    view_max_side: int = 1280
    full_heatmap: bool = False   # archived overlays colour the full map (as the window's display option)


@dataclass
class Inspection:
    """One inspected part, as logged and shown. Images are display-sized copies:
    view_frame is the whole frame, view_map the anomaly map over it (zero outside the ROI),
    view_roi the ROI rectangle in view pixels."""

    source: str
    frame_id: str
    index: int
    verdict: str
    score: float | None = None
    fail_threshold: float = 0.0
    review_threshold: float = 0.0
    category: str = ""
    category_source: str = ""
    category_confidence: float | None = None
    model_id: str = ""
    recipe: str = ""
    latency_ms: float = 0.0
    timings: dict = field(default_factory=dict)
    captured: float = 0.0
    inspected: float = 0.0
    time: str = ""
    live: bool = False
    error: str = ""
    part_id: int | None = None
    log_error: str = ""
    view_frame: np.ndarray | None = None
    view_map: np.ndarray | None = None
    view_roi: tuple[int, int, int, int] | None = None
    reconstruction: np.ndarray | None = None
    thumbnail: np.ndarray | None = None

    @property
    def age_ms(self) -> float:
        """From the moment the frame was read to the moment its verdict was ready."""
        return max(0.0, (self.inspected - self.captured) * 1000.0)

    def where(self) -> str:
        return self.frame_id or self.source


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
    `margin` (a fraction of it, at least 0.005)."""
    values = np.asarray([s for s in scores if s is not None and math.isfinite(s)], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no good image could be scored, so no threshold can be suggested")
    p = float(np.percentile(values, percentile))
    fail = p + max(margin * abs(p), 0.005)
    return Calibration(int(values.size), float(percentile), p, float(values.max()), p, fail, tuple(errors))
