"""The accuracy rule of benchmarks/bench_accuracy.py: AUROC changes and verdict agreement against torch fp32."""

from __future__ import annotations

import pytest

from benchmarks.bench_accuracy import compare


def _metrics(image_auroc: float, pixel_auroc: float, scores: dict[str, float]) -> dict:
    return {"mean": {"image_auroc": image_auroc, "pixel_auroc": pixel_auroc},
            "categories": {"brick": {"image_auroc": image_auroc, "pixel_auroc": pixel_auroc, "scores": scores}},
            "settings": {"threshold": 0.5}}


def test_same_verdicts_and_close_aurocs_pass():
    scores = {f"{k:03d}.jpg [good]": 0.005 + 0.01 * k for k in range(100)}   # 0.005 .. 0.995
    other = {k: v + 0.01 for k, v in scores.items()}   # only 0.495 -> 0.505 crosses the threshold: 1 part of 100
    result = compare(_metrics(0.95, 0.98, scores), _metrics(0.947, 0.981, other))
    assert result["verdict_agreement"] == pytest.approx(0.99) and result["parts"] == 100
    assert result["image_auroc_delta"] == pytest.approx(-0.003) and result["passes"]


@pytest.mark.parametrize("image, pixel, shift", [(0.944, 0.98, 0.0), (0.95, 0.974, 0.0), (0.95, 0.98, 0.02)])
def test_an_auroc_drop_or_changed_verdicts_fail(image, pixel, shift):
    scores = {f"{k:03d}.jpg [good]": 0.005 + 0.01 * k for k in range(100)}
    other = {k: v + shift for k, v in scores.items()}   # +0.02: 0.485 and 0.495 change verdict, 98 % agree
    assert not compare(_metrics(0.95, 0.98, scores), _metrics(image, pixel, other))["passes"]
