"""Heatmap overlays of anomaly maps on frames (image composition only, no model math).

Maps are drawn on an absolute scale, 0 to `vmax` (1.0 by default: the DeCo-Diff maps are
clipped and scaled into [0, 1]), so colours mean the same thing from part to part. As operators
read it, the heatmap is drawn only where the map exceeds the review level (`heat_above`) and the
rest of the part is shown as it is; `heat_above=None` draws the full map.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["COLORMAPS", "REVIEW_CONTOUR_RGB", "colorize", "render_overlay", "threshold_contours", "heat_level",
           "operator_overlay"]

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
}
FAIL_CONTOUR_RGB = (255, 255, 255)
REVIEW_CONTOUR_RGB = (255, 190, 40)


def colorize(amap: np.ndarray, colormap: str = "jet", vmax: float = 1.0) -> np.ndarray:
    """[H,W] float map -> [H,W,3] uint8 RGB colours."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    scaled = np.clip(np.nan_to_num(amap, nan=0.0) / max(vmax, 1e-6), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def threshold_contours(amap: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Outlines (OpenCV point arrays) of the regions where the map exceeds `threshold`."""
    binary = (amap > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def render_overlay(frame_rgb: np.ndarray, amap: np.ndarray, opacity: float = 0.5, colormap: str = "jet",
                   threshold: float | None = None, show_heatmap: bool = True, vmax: float = 1.0,
                   contour_rgb: tuple[int, int, int] = (255, 255, 255), heat_above: float | None = None) -> np.ndarray:
    """Blend the coloured map over the frame (each pixel weighted by its map value, so quiet
    areas keep the frame; with `heat_above`, only pixels whose map value exceeds it are coloured)
    and outline the region above `threshold`. [H,W,3] uint8 RGB."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.shape[:2] != frame_rgb.shape[:2]:
        amap = cv2.resize(amap, (frame_rgb.shape[1], frame_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    frame_rgb = np.ascontiguousarray(frame_rgb, dtype=np.uint8)
    if show_heatmap and opacity > 0:
        weight = np.clip(np.nan_to_num(amap, nan=0.0) * (1.0 / max(vmax, 1e-6)), 0.25, 1.0)
        weight *= opacity
        if heat_above is not None:
            weight[~(amap > heat_above)] = 0.0   # NaN counts as below
        out = cv2.blendLinear(frame_rgb, colorize(amap, colormap, vmax), 1.0 - weight, weight)
    else:
        out = frame_rgb.copy()
    if threshold is not None:
        contours = threshold_contours(amap, threshold)
        if contours:
            thickness = max(1, round(max(frame_rgb.shape[:2]) / 300))
            out = np.ascontiguousarray(out)
            cv2.drawContours(out, contours, -1, contour_rgb, thickness, lineType=cv2.LINE_AA)
    return out


def heat_level(fail_threshold: float | None, review_threshold: float | None = None,
               full_map: bool = False) -> float | None:
    """The map level above which the heatmap is drawn: the review level (never above the fail
    level; the fail level when there is no review level), or None for the full map."""
    if full_map:
        return None
    levels = [t for t in (review_threshold, fail_threshold) if t is not None]
    return min(levels) if levels else None


def operator_overlay(frame_rgb: np.ndarray, amap: np.ndarray, fail_threshold: float,
                     review_threshold: float | None = None, full_map: bool = False, opacity: float = 0.5,
                     colormap: str = "jet", show_heatmap: bool = True, outlines: bool = True) -> np.ndarray:
    """The overlay as operators read it, the same in the window, the saved overlays and the reject
    archive: the heatmap only where the map exceeds the review level (`full_map`: everywhere), the
    rest of the part as it is; a white outline at the fail level and an amber one at the review level."""
    amap = np.asarray(amap, dtype=np.float32)
    if amap.shape[:2] != frame_rgb.shape[:2]:
        amap = cv2.resize(amap, (frame_rgb.shape[1], frame_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = render_overlay(frame_rgb, amap, opacity=opacity, colormap=colormap,
                         threshold=fail_threshold if outlines else None, show_heatmap=show_heatmap,
                         contour_rgb=FAIL_CONTOUR_RGB,
                         heat_above=heat_level(fail_threshold, review_threshold, full_map))
    if outlines and review_threshold is not None and review_threshold < fail_threshold:
        review = threshold_contours(amap, review_threshold)
        if review:
            out = np.ascontiguousarray(out)
            cv2.drawContours(out, review, -1, REVIEW_CONTOUR_RGB, 1, lineType=cv2.LINE_AA)
    return out
