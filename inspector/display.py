"""What the live view draws for an inspected part (Qt-free image composition)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.overlay import COLORMAPS, operator_overlay

from inspection import Inspection

__all__ = ["DisplayOptions", "render_part", "VERDICT_COLORS", "VERDICT_TEXT"]

VERDICT_COLORS = {"pass": "#1e9e4a", "review": "#f2a900", "fail": "#d93025", "error": "#7e57c2", "": "#3a4250"}
VERDICT_TEXT = {"pass": "PASS", "review": "REVIEW", "fail": "FAIL", "error": "ERROR", "": "READY"}
ROI_RGB = (80, 200, 255)


@dataclass(frozen=True)
class DisplayOptions:
    """Operator choices for the live view."""

    overlay: bool = True
    opacity: float = 0.5
    colormap: str = "jet"
    contour: bool = True
    reconstruction: bool = False
    repaint_hz: int = 30
    full_heatmap: bool = False   # False: heatmap only above the review level (as operators read it)

    def __post_init__(self) -> None:
        opacity = float(self.opacity)
        object.__setattr__(self, "opacity", min(max(opacity, 0.0), 1.0) if math.isfinite(opacity) else 0.5)
        if self.colormap not in COLORMAPS:
            object.__setattr__(self, "colormap", "jet")
        object.__setattr__(self, "repaint_hz", min(max(int(self.repaint_hz), 1), 120))


def render_part(part: Inspection, options: DisplayOptions) -> np.ndarray | None:
    """The part's frame with its heatmap (above the review level unless options.full_heatmap),
    threshold contours (white: fail, amber: review) and ROI."""
    frame = part.view_frame
    if frame is None:
        return None
    amap = part.view_map
    if amap is None:
        out = frame.copy()
    else:
        out = operator_overlay(frame, amap, part.fail_threshold, part.review_threshold, options.full_heatmap,
                               opacity=options.opacity, colormap=options.colormap, show_heatmap=options.overlay,
                               outlines=options.contour)
    if part.view_roi is not None:
        x, y, w, h = part.view_roi
        out = np.ascontiguousarray(out)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), ROI_RGB, max(1, round(max(out.shape[:2]) / 400)))
    return out
