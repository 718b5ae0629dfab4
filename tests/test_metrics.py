"""Tests for training.metrics: reference fixture, hand-computed cases, degenerate inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from skimage import measure
from sklearn.metrics import auc as sk_auc

from training.metrics import (
    METRIC_NAMES,
    aupro,
    auroc,
    average_precision,
    compute_metrics,
    f1_max,
    suggest_threshold_from_good,
)

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


@pytest.fixture(scope="module")
def fixture(reference_dir):
    with np.load(reference_dir / "math_fixture.npz") as data:
        return {k: data[k] for k in ("met_masks", "met_preds", "met_names", "met_values")}


def test_reproduces_reference_fixture(fixture):
    result = compute_metrics(fixture["met_masks"], fixture["met_preds"])
    assert tuple(str(n) for n in fixture["met_names"]) == METRIC_NAMES
    for name, expected in zip(fixture["met_names"], fixture["met_values"]):
        assert result[str(name)] == pytest.approx(float(expected), abs=1e-4), name


def test_fixture_accepts_torch(fixture):
    ref = compute_metrics(fixture["met_masks"], fixture["met_preds"])
    got = compute_metrics(torch.from_numpy(fixture["met_masks"]), torch.from_numpy(fixture["met_preds"]))
    assert got == pytest.approx(ref)


def test_compute_metrics_keys_and_types(fixture):
    result = compute_metrics(fixture["met_masks"], fixture["met_preds"])
    assert set(result) == set(METRIC_NAMES) | {"pixel_f1_threshold", "image_f1_threshold"}
    assert all(type(v) is float for v in result.values())


def test_auroc_by_hand():
    # positive/negative pairs ranked correctly: 0.35>0.1, 0.8>0.1, 0.8>0.4; wrong: 0.35<0.4 -> 3/4
    assert auroc(LABELS, SCORES) == pytest.approx(0.75)
    assert auroc(torch.tensor(LABELS), torch.tensor(SCORES)) == pytest.approx(0.75)


def test_auroc_ties_count_half():
    # one pair (0.5 vs 0.5) tied -> 0.5, the other pair (0.9 vs 0.5) correct -> (1 + 0.5) / 2
    assert auroc([0, 1, 1], [0.5, 0.5, 0.9]) == pytest.approx(0.75)


def test_average_precision_by_hand():
    # descending: 0.8(+) 0.4(-) 0.35(+) 0.1(-)
    # cut 0.8: P=1, R=1/2; cut 0.4: P=1/2, R=1/2; cut 0.35: P=2/3, R=1
    # AP = sum (R_k - R_{k-1}) P_k = 1/2*1 + 0*1/2 + 1/2*2/3 = 5/6
    assert average_precision(LABELS, SCORES) == pytest.approx(5 / 6)


def test_f1_max_by_hand():
    # cut 0.8: P=1, R=1/2 -> F1=2/3; cut 0.35: P=2/3, R=1 -> F1=2*(2/3)/(5/3)=4/5;
    # cut 0.1: P=1/2, R=1 -> F1=2/3; best is 4/5 at score >= 0.35
    f1, threshold = f1_max(LABELS, SCORES)
    assert f1 == pytest.approx(0.8, abs=1e-9)
    assert threshold == pytest.approx(0.35)


def test_f1_max_threshold_reaches_f1():
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.3
    scores = rng.random(200) + 0.5 * labels
    f1, threshold = f1_max(labels, scores)
    pred = scores >= threshold
    tp = np.sum(pred & labels)
    assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(f1, abs=1e-8)


def _one_image(mask_pixels, values):
    """A 1x4x4 mask with ``mask_pixels`` set and a map from a {(row, col): value} dict (rest 0)."""
    mask = np.zeros((1, 4, 4), dtype=np.float32)
    for r, c in mask_pixels:
        mask[0, r, c] = 1
    amap = np.zeros((1, 4, 4))
    for (r, c), v in values.items():
        amap[0, r, c] = v
    return mask, amap


REGION_2X2 = [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_aupro_perfect_map_is_one():
    # region scores 0.6..0.9 above every normal score (0.0..0.55): PRO = 1 at every kept FPR
    normals = [(r, c) for r in range(4) for c in range(4) if (r, c) not in REGION_2X2]
    values = {p: 0.05 * i for i, p in enumerate(normals)}
    values.update({p: 0.6 + 0.1 * i for i, p in enumerate(REGION_2X2)})
    mask, amap = _one_image(REGION_2X2, values)
    assert aupro(mask, amap) == pytest.approx(1.0)


def test_aupro_inverted_map_is_zero():
    # region at the minimum (0), normals 0.5..1.0: no threshold (map > th, th >= min) detects the region
    normals = [(r, c) for r in range(4) for c in range(4) if (r, c) not in REGION_2X2]
    values = {p: 0.5 + 0.5 * i / (len(normals) - 1) for i, p in enumerate(normals)}
    mask, amap = _one_image(REGION_2X2, values)
    assert aupro(mask, amap) == pytest.approx(0.0, abs=1e-12)


def test_aupro_by_hand():
    # region (2x2) scores 1.0, 0.6, 0.6, 0.2; normals 0.8, 0.4, 0.3 and nine at 0; 12 normals.
    # thresholds 0, 0.005, ..., 0.995; detected = map > th:
    #   th in [0, .2): PRO 1,   FPR 3/12      th in [.2, .3): PRO 3/4, FPR 3/12
    #   th in [.3, .4): PRO 3/4, FPR 2/12     th in [.4, .6): PRO 3/4, FPR 1/12
    #   th in [.6, .8): PRO 1/4, FPR 1/12     th in [.8, 1):  PRO 1/4, FPR 0
    # all FPR < 0.3 are kept; divided by the largest (3/12) -> x in {1, 2/3, 1/3, 0}
    # area = 1/3*3/4 (x 2/3..1) + 1/3*3/4 (x 1/3..2/3) + 1/3*1/4 (x 0..1/3) = 7/12
    values = {(0, 0): 1.0, (0, 1): 0.6, (1, 0): 0.6, (1, 1): 0.2, (3, 3): 0.8, (2, 2): 0.4, (3, 0): 0.3}
    mask, amap = _one_image(REGION_2X2, values)
    assert aupro(mask, amap) == pytest.approx(7 / 12)


def test_aupro_fpr_limit_normalises_by_largest_kept_fpr():
    # same map, fpr_limit 0.2 keeps FPR <= 2/12 -> x = FPR / (2/12) in {1, 1/2, 0}
    # area = 1/2*3/4 + 1/2*1/4 = 1/2 (dividing by the limit 0.2 instead would give 5/12)
    values = {(0, 0): 1.0, (0, 1): 0.6, (1, 0): 0.6, (1, 1): 0.2, (3, 3): 0.8, (2, 2): 0.4, (3, 0): 0.3}
    mask, amap = _one_image(REGION_2X2, values)
    assert aupro(mask, amap, fpr_limit=0.2) == pytest.approx(0.5)


def test_aupro_diagonal_pixels_form_one_region():
    # mask: row (0,0),(0,1),(0,2) plus (1,3), which touches (0,2) only diagonally.
    # scores: (1,3)=1.0, row=0.5; normals 0.75, 0.25 and ten at 0 (12 normals)
    #   th in [0, .25): PRO 1, FPR 2/12     th in [.25, .5): PRO 1, FPR 1/12
    #   th in [.5, .75): only (1,3) detected, FPR 1/12     th in [.75, 1): same, FPR 0
    # 8-connected (one region of 4): PRO = 1/4 there -> area = 1/2*1 + 1/2*1/4 = 0.625
    # 4-connected (regions of 3 and 1) would give PRO = (0 + 1)/2 -> 0.75
    pixels = [(0, 0), (0, 1), (0, 2), (1, 3)]
    values = {(1, 3): 1.0, (0, 0): 0.5, (0, 1): 0.5, (0, 2): 0.5, (3, 3): 0.75, (3, 0): 0.25}
    mask, amap = _one_image(pixels, values)
    assert measure.label(mask[0]).max() == 1
    assert aupro(mask, amap) == pytest.approx(0.625)


def _naive_pro(masks, amaps, fpr_limit=0.3, num_th=200):
    """Loop-per-threshold, per-region PRO written straight from the reference description."""
    lo, hi = amaps.min(), amaps.max()
    regions = [(i, r.coords) for i, m in enumerate(masks) for r in measure.regionprops(measure.label(m > 0.5))]
    normal = masks <= 0.5
    pros, fprs = [], []
    for th in np.arange(lo, hi, (hi - lo) / num_th):
        binary = amaps > th
        pros.append(np.mean([binary[i][c[:, 0], c[:, 1]].mean() for i, c in regions]))
        fprs.append(np.logical_and(normal, binary).sum() / normal.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < fpr_limit
    return sk_auc(fprs[keep] / fprs[keep].max(), pros[keep])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_aupro_matches_naive_loop(dtype):
    rng = np.random.default_rng(7)
    masks = np.zeros((4, 32, 32), dtype=np.float32)
    masks[0, 3:9, 4:12] = 1
    masks[0, 20:22, 20:30] = 1
    masks[1, 10, 10] = masks[1, 11, 11] = masks[1, 12, 12] = 1
    masks[3, 25:31, 0:5] = 1
    amaps = (rng.random(masks.shape) + 0.4 * masks).astype(dtype)
    assert aupro(masks, amaps) == pytest.approx(_naive_pro(masks, amaps), abs=1e-12)
    assert aupro(torch.from_numpy(masks), torch.from_numpy(amaps)) == pytest.approx(
        _naive_pro(masks, amaps), abs=1e-12
    )


def test_aupro_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        aupro(np.zeros((4, 4)), np.zeros((4, 4)))


def test_degenerate_single_class_returns_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
        assert math.isnan(auroc([1, 1], [0.1, 0.2]))
        assert math.isnan(average_precision([0, 0, 0], [0.1, 0.2, 0.3]))
        assert math.isnan(average_precision([1, 1], [0.1, 0.2]))
        assert all(math.isnan(v) for v in f1_max([0, 0], [0.1, 0.2]))
        assert all(math.isnan(v) for v in f1_max([], []))
        assert math.isnan(auroc([], []))


def test_degenerate_aupro_returns_nan():
    mask = np.zeros((2, 4, 4))
    amap = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(aupro(mask, amap))  # no defect region
    assert math.isnan(aupro(np.ones((2, 4, 4)), amap))  # no normal pixel
    assert math.isnan(aupro(mask + (amap > 0.5), np.full((2, 4, 4), 0.3)))  # constant map
    assert math.isnan(aupro(np.zeros((0, 4, 4)), np.zeros((0, 4, 4))))  # no image
    binary, _ = _one_image(REGION_2X2, {})
    assert math.isnan(aupro(binary, binary.astype(np.float64)))  # every kept FPR is 0 (reference 0/0)


def test_compute_metrics_all_good_set():
    amap = np.random.default_rng(0).random((3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(np.zeros((3, 8, 8)), amap)
    assert all(math.isnan(v) for v in result.values())


def test_compute_metrics_all_defective_images():
    masks = np.zeros((3, 8, 8))
    masks[:, 2:4, 2:4] = 1
    amap = np.random.default_rng(0).random((3, 8, 8)) + masks
    result = compute_metrics(masks, amap)
    assert math.isnan(result["image_auroc"]) and math.isnan(result["image_ap"])
    assert result["image_f1max"] == pytest.approx(1.0)
    assert result["pixel_auroc"] == pytest.approx(1.0)
    assert not math.isnan(result["pixel_aupro"])


def test_compute_metrics_image_level_by_hand():
    # image scores (map max) 0.9, 0.2, 0.7, 0.3 with labels 1, 0, 1, 0 -> perfectly separated
    masks = np.zeros((4, 4, 4))
    masks[0, 1, 1] = masks[2, 0, 3] = 1
    amap = np.zeros((4, 4, 4))
    amap[0, 1, 1], amap[1, 2, 2], amap[2, 0, 3], amap[3, 3, 3] = 0.9, 0.2, 0.7, 0.3
    result = compute_metrics(masks, amap)
    assert result["image_auroc"] == pytest.approx(1.0)
    assert result["image_ap"] == pytest.approx(1.0)
    assert result["image_f1max"] == pytest.approx(1.0)
    assert result["image_f1_threshold"] == pytest.approx(0.7)


def test_compute_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_suggest_threshold_from_good():
    scores = np.arange(101, dtype=np.float64)  # 0..100
    assert suggest_threshold_from_good(scores) == pytest.approx(99.0)
    assert suggest_threshold_from_good(scores, quantile=0.5, margin=0.25) == pytest.approx(50.25)
    # 4 values, linear interpolation: position 0.5 * 3 = 1.5 -> between 2 and 3
    assert suggest_threshold_from_good(torch.tensor([4.0, 1.0, 3.0, 2.0]), quantile=0.5) == pytest.approx(2.5)
    assert suggest_threshold_from_good([1.0, float("nan"), 3.0], quantile=1.0) == pytest.approx(3.0)
    assert math.isnan(suggest_threshold_from_good([]))
    with pytest.raises(ValueError):
        suggest_threshold_from_good(scores, quantile=1.5)
