"""What flows through an inspection session: frames in, a recipe, frozen `Inspection` records out
to listeners, and a summary at the end.

The listener interface is the stable contract between the session and everything that consumes
results (the window, the CLI's printer and CSV/JSON writers, line outputs):

    class MySink:
        def on_inspection(self, inspection: Inspection) -> None: ...   # every part, in order
        def on_session_end(self, summary: SessionSummary) -> None: ...  # once, when the session closes

`session.subscribe(MySink())`. Both methods are called on the session's thread, after the part's
row is committed to the results log (a listener never sees a part the log could lose). A listener
that raises is reported through the session's problem callback and the session carries on, so a
broken output never stops inspection. Records are frozen: a listener may keep them.
`Inspection.to_dict()` gives JSON-safe values (no arrays; NaN/inf as None) for outputs that send
or store them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from engine.defaults import DEFAULT_THRESHOLD

from .regions import Roi
from .verdicts import ERROR, FAIL, PASS, REVIEW

__all__ = ["Frame", "InspectionRecipe", "Inspection", "SessionSummary", "InspectionListener",
           "DEFAULT_VIEW_MAX_SIDE"]

DEFAULT_VIEW_MAX_SIDE = 1280   # pixels, the longer side of the display copies the window shows


@dataclass
class Frame:
    """One picture to inspect. `rgb` [H,W,3] uint8 is None when it could not be read (`error` says
    why). `source` and `frame_id` name it in the results log; `index` is its position in its source;
    `captured` is time.monotonic() when it was read. `file` and `frame_number` say where it came
    from on disk (a video's frame number; None for a still image), when it came from a file."""

    rgb: np.ndarray | None
    source: str
    frame_id: str
    index: int
    captured: float = 0.0
    live: bool = False
    error: str = ""
    file: str = ""
    frame_number: int | None = None


@dataclass(frozen=True)
class InspectionRecipe:
    """How frames are judged right now: pinned category (None = the classifier decides), the
    thresholds (score > fail_threshold: FAIL; above review_threshold: REVIEW), region of interest,
    the name of the saved recipe in force, what gets archived, and the display copies (view_max_side
    0 = none: a headless run needs no display images)."""

    category: str | None = None
    fail_threshold: float = DEFAULT_THRESHOLD
    review_threshold: float = DEFAULT_THRESHOLD
    roi: Roi | None = None
    recipe: str = ""
    archive_verdicts: tuple[str, ...] = (FAIL, REVIEW)
    thumbnails: bool = True
    view_max_side: int = DEFAULT_VIEW_MAX_SIDE
    full_heatmap: bool = False   # archived overlays colour the full map (as the window's display option)
    recipe_version: str = ""     # the saved recipe's revision the parts are judged with ('' = none)


def _json_number(value):
    """A float for JSON, None for missing or non-finite values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class Inspection:
    """One inspected part, as logged and shown.

    Identity: `part_id` (the results-log row id; None when the row could not be written, see
    `log_error`), `source`, `frame_id`, `index`, `file` / `frame_number`; `time` is the local time
    text of the row, `captured` / `inspected` time.monotonic() when the frame was read / its verdict
    was ready. Judgement: `category` (and how it was chosen), `score`, `verdict`, the thresholds and
    model that decided it. Display copies (None headless): view_frame is the whole frame, view_map the
    anomaly map over it (zero outside the ROI), view_roi the ROI rectangle in view pixels."""

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
    file: str = ""
    frame_number: int | None = None
    overlay_path: str = ""
    archive_error: str = ""
    recipe_version: str = ""
    defect_x: float | None = None   # where the anomaly map peaks, 0-1 across the inspected region (None: no map)
    defect_y: float | None = None   # ... and 0-1 down it
    view_frame: np.ndarray | None = None
    view_map: np.ndarray | None = None
    view_roi: tuple[int, int, int, int] | None = None
    reconstruction: np.ndarray | None = None
    thumbnail: np.ndarray | None = None

    @property
    def age_ms(self) -> float:
        """From the moment the frame was read to the moment its verdict was ready."""
        return max(0.0, (self.inspected - self.captured) * 1000.0)

    @property
    def inspected_ok(self) -> bool:
        """True when the part got a verdict (pass, review or fail), False for an error."""
        return self.verdict != ERROR

    def where(self) -> str:
        return self.frame_id or self.source

    def to_dict(self) -> dict:
        """The record without its images, with JSON-safe values (numbers finite or None)."""
        return {
            "part_id": self.part_id, "time": self.time, "source": self.source, "frame_id": self.frame_id,
            "index": self.index, "file": self.file, "frame_number": self.frame_number, "live": self.live,
            "category": self.category, "category_source": self.category_source,
            "category_confidence": _json_number(self.category_confidence),
            "score": _json_number(self.score), "verdict": self.verdict,
            "fail_threshold": _json_number(self.fail_threshold),
            "review_threshold": _json_number(self.review_threshold),
            "model_id": self.model_id, "recipe": self.recipe, "latency_ms": _json_number(self.latency_ms),
            "timings": {str(k): _json_number(v) for k, v in self.timings.items()},
            "overlay_path": self.overlay_path or None, "error": self.error, "log_error": self.log_error,
            "archive_error": self.archive_error,
        }


@dataclass(frozen=True)
class SessionSummary:
    """Counts of a session so far: parts per verdict, rows the log refused, the median engine
    latency of inspected parts (ms) and the seconds since the session started."""

    counts: dict
    not_logged: int
    median_latency_ms: float | None
    seconds: float

    @property
    def inputs(self) -> int:
        return sum(self.counts.values())

    @property
    def inspected(self) -> int:
        return sum(self.counts.get(v, 0) for v in (PASS, REVIEW, FAIL))

    @property
    def yield_percent(self) -> float | None:
        return round(100.0 * self.counts.get(PASS, 0) / self.inspected, 2) if self.inspected else None

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "inspected": self.inspected,
                **{v: self.counts.get(v, 0) for v in (PASS, REVIEW, FAIL, ERROR)},
                "not_logged": self.not_logged, "yield_percent": self.yield_percent,
                "median_latency_ms": self.median_latency_ms, "seconds": round(self.seconds, 2)}

    @staticmethod
    def median(latencies: list[float]) -> float | None:
        return round(float(statistics.median(latencies)), 2) if latencies else None


@runtime_checkable
class InspectionListener(Protocol):
    """Whoever wants the results of a session (see the module docstring for the contract)."""

    def on_inspection(self, inspection: Inspection) -> None:
        """One part, after its row is committed (or its `log_error` says why it is not)."""

    def on_session_end(self, summary: SessionSummary) -> None:
        """The session closed; no more parts will come."""
