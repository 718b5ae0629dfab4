"""Where on the frame: regions of interest, display-sized copies, and the anomaly map carried from
the inspected crop to the whole frame and to the display (the one place a map is resampled above
the engine)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Roi", "MIN_ROI_SIDE", "apply_roi", "place_map", "fit_within", "make_thumbnail", "view_map",
           "THUMBNAIL_SIDE"]

MIN_ROI_SIDE = 8      # pixels; a smaller region of interest means the whole frame
THUMBNAIL_SIDE = 96   # pixels, the longer side of a results-log thumbnail


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


def view_map(amap: np.ndarray, frame_shape: tuple[int, int], rect: tuple[int, int, int, int],
             view_shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A map over the ROI `rect` of a frame of `frame_shape` (H, W) -> the map over a display copy of
    `view_shape` (H, W), zero outside the ROI (bilinear), and the ROI rectangle in view pixels."""
    scale_x = view_shape[1] / frame_shape[1]
    scale_y = view_shape[0] / frame_shape[0]
    vx, vy = int(round(rect[0] * scale_x)), int(round(rect[1] * scale_y))
    vw = max(1, min(int(round(rect[2] * scale_x)), view_shape[1] - vx))
    vh = max(1, min(int(round(rect[3] * scale_y)), view_shape[0] - vy))
    out = np.zeros(view_shape[:2], np.float32)
    out[vy:vy + vh, vx:vx + vw] = cv2.resize(np.asarray(amap, np.float32), (vw, vh), interpolation=cv2.INTER_LINEAR)
    return out, (vx, vy, vw, vh)


def fit_within(image: np.ndarray, max_side: int, fast: bool = False) -> np.ndarray:
    """Downscale (never upscale) so that the longer side is at most `max_side`: area averaging for
    uint8 images, bilinear for others or with `fast` (a preview redrawn every display frame:
    bilinear is several times cheaper than area averaging at a non-integer scale)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    area = image.dtype == np.uint8 and not fast
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def make_thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    return np.ascontiguousarray(fit_within(image, side))
