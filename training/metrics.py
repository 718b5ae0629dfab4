"""Anomaly-detection metrics matching the DeCo-Diff reference evaluation.

All functions accept numpy arrays or torch tensors. Degenerate inputs never
raise: a metric that is undefined for them (e.g. AUROC when every label is of
one class, AUPRO without any defect region) is returned as ``float("nan")``.

Labels and ground-truth masks are binarised with ``> 0.5`` (so 0/1 floats,
booleans and 0/255 uint8 masks all work).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "auroc",
    "average_precision",
    "f1_max",
    "aupro",
    "compute_metrics",
    "suggest_threshold_from_good",
    "METRIC_NAMES",
]

METRIC_NAMES = (
    "pixel_auroc",
    "pixel_aupro",
    "pixel_f1max",
    "pixel_ap",
    "image_auroc",
    "image_ap",
    "image_f1max",
)

_F1_EPS = 1e-10
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _to_numpy(x) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or sequence) as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scores(x) -> np.ndarray:
    """Scores as a floating numpy array, keeping float32/float64 as given."""
    x = _to_numpy(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _labels(x) -> np.ndarray:
    """Binary ground truth (``> 0.5``) as a bool numpy array."""
    return _to_numpy(x) > 0.5


def _two_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and not bool(labels.all())


def _ranking_metric(metric, labels, scores) -> float:
    """`metric(labels, scores)` on flattened arrays; NaN if only one class is present."""
    y = _labels(labels).ravel()
    s = _scores(scores).ravel()
    if not _two_classes(y):
        return float("nan")
    return float(metric(y, s))


def auroc(labels, scores) -> float:
    """Area under the ROC curve (exact thresholds, trapezoidal).

    labels, scores: [N] (any shape, flattened). NaN if only one class is present.
    """
    return _ranking_metric(roc_auc_score, labels, scores)


def average_precision(labels, scores) -> float:
    """Average precision (sklearn definition, step-wise PR area).

    labels, scores: [N] (any shape, flattened). NaN if only one class is present.
    """
    return _ranking_metric(average_precision_score, labels, scores)


def f1_max(labels, scores) -> tuple[float, float]:
    """Best F1 = 2PR/(P+R+1e-10) over all thresholds of the PR curve.

    labels, scores: [N] (any shape, flattened).
    Returns ``(f1, threshold)``: predicting ``score >= threshold`` as anomalous
    achieves ``f1``. ``(nan, nan)`` if there is no positive label or no sample.
    """
    y = _labels(labels).ravel()
    s = _scores(scores).ravel()
    if not y.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = 2.0 * precision * recall / (precision + recall + _F1_EPS)
    f1 = f1[:-1]  # the final (P=1, R=0) point has no threshold
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def aupro(masks, maps, fpr_limit: float = 0.3, num_thresholds: int = 200) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit``.

    masks: [N, H, W] ground truth, maps: [N, H, W] anomaly maps.
    Thresholds are ``np.arange(min, max, (max - min) / num_thresholds)`` over
    ``maps``; a pixel is detected when ``map > th``. PRO is the mean detected
    fraction over every 8-connected GT region of every image, FPR is the
    fraction of normal pixels detected. Points with ``FPR < fpr_limit`` are
    kept, their FPRs divided by the largest kept FPR, and the area taken with
    ``sklearn.metrics.auc``. NaN without regions, normal pixels, a score range
    or at least two kept points with a positive FPR (the reference's 0/0, e.g. a
    map whose normal pixels all sit at its minimum).

    Memory: per threshold only the GT pixels are compared (normal pixels are
    counted by binary search in their sorted scores), never a full boolean map.
    """
    gt = _labels(masks)
    amaps = _scores(maps)
    if gt.shape != amaps.shape or gt.ndim != 3:
        raise ValueError(f"masks and maps must both be [N, H, W], got {gt.shape} and {amaps.shape}")
    if amaps.size == 0:
        return float("nan")

    region_parts = []
    num_regions = 0
    for mask in gt:
        labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        region_parts.append(labelled[mask] + (num_regions - 1))
        num_regions += count
    normal_scores = np.sort(amaps[~gt])
    if num_regions == 0 or normal_scores.size == 0:
        return float("nan")

    min_th, max_th = amaps.min(), amaps.max()
    if not min_th < max_th:
        return float("nan")
    thresholds = np.arange(min_th, max_th, (max_th - min_th) / num_thresholds)

    region_of_pixel = np.concatenate(region_parts).astype(np.intp)
    region_scores = amaps[gt]
    region_sizes = np.bincount(region_of_pixel, minlength=num_regions)

    pros = np.empty(len(thresholds))
    for k, th in enumerate(thresholds):
        hits = np.bincount(region_of_pixel, weights=region_scores > th, minlength=num_regions)
        pros[k] = np.mean(hits / region_sizes)
    false_pos = normal_scores.size - np.searchsorted(normal_scores, thresholds, side="right")
    fprs = false_pos / normal_scores.size

    keep = fprs < fpr_limit
    fprs, pros = fprs[keep], pros[keep]
    if fprs.size < 2 or fprs.max() <= 0:
        return float("nan")
    return float(auc(fprs / fprs.max(), pros))


def compute_metrics(masks, maps, image_labels=None, with_pixels: bool = True) -> dict[str, float | None]:
    """Pixel- and image-level metrics of one category.

    masks: [N, H, W] ground truth, maps: [N, H, W] anomaly maps.
    Image score = max of its map, image label = `image_labels` [N] when given, else the max of
    its mask. with_pixels False (a dataset without pixel masks, image-level labels only): the
    pixel metrics are None ("n/a"), the image metrics come from `image_labels`.
    Returns the keys of ``METRIC_NAMES`` plus ``pixel_f1_threshold`` and
    ``image_f1_threshold`` (score at which the F1-max is reached). A metric undefined for the
    data is NaN: AUROC/AP when all pixels (images) are of one class, F1 without any defect,
    AUPRO without defect regions.
    """
    gt = _labels(masks)
    amaps = _scores(maps)
    if gt.shape != amaps.shape or gt.ndim != 3:
        raise ValueError(f"masks and maps must both be [N, H, W], got {gt.shape} and {amaps.shape}")
    if image_labels is None and not with_pixels:
        raise ValueError("without pixel masks the image labels must be given")

    if gt.shape[0] > 0:
        mask_labels = gt.reshape(gt.shape[0], -1).max(axis=1)
        image_scores = amaps.reshape(amaps.shape[0], -1).max(axis=1)
    else:
        mask_labels = np.zeros(0, dtype=bool)
        image_scores = np.zeros(0, dtype=amaps.dtype)
    labels = mask_labels if image_labels is None else _labels(image_labels).ravel()
    if labels.shape != image_scores.shape:
        raise ValueError(f"{labels.shape[0]} image labels for {image_scores.shape[0]} maps")
    image_f1, image_th = f1_max(labels, image_scores)
    image = {
        "image_auroc": auroc(labels, image_scores),
        "image_ap": average_precision(labels, image_scores),
        "image_f1max": image_f1,
        "image_f1_threshold": image_th,
    }
    if not with_pixels:
        return {"pixel_auroc": None, "pixel_aupro": None, "pixel_f1max": None, "pixel_ap": None,
                **image, "pixel_f1_threshold": None}
    pixel_f1, pixel_th = f1_max(gt, amaps)
    return {
        "pixel_auroc": auroc(gt, amaps),
        "pixel_aupro": aupro(gt, amaps),
        "pixel_f1max": pixel_f1,
        "pixel_ap": average_precision(gt, amaps),
        **{k: image[k] for k in ("image_auroc", "image_ap", "image_f1max")},
        "pixel_f1_threshold": pixel_th,
        "image_f1_threshold": image_th,
    }


def suggest_threshold_from_good(scores, quantile: float = 0.99, margin: float = 0.0) -> float:
    """Operating threshold for a set without defects.

    scores: [N] anomaly scores of good images. Returns
    ``np.quantile(scores, quantile) + margin`` (linear interpolation); NaN
    values are ignored and NaN is returned if no finite score remains.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    s = _scores(scores).ravel().astype(np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan")
    return float(np.quantile(s, quantile) + margin)
