"""training.calibrate_scores: per-category scales map each category's good-score quantile to one threshold."""

import json

import numpy as np
import pytest
import torch

from engine.detector import Detector, DetectorSettings
from engine.unet import GatedUNet, UNetConfig
from engine.vae import create_vae
from tests.test_detector import PRE, TINY_VAE
from tests.test_training import make_tiny_mvtec
from training import calibrate_scores
from training.datasets import build_dataset


def _tiny_model(folder, names):
    torch.manual_seed(0)
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=len(names),
                                latent_size=8))
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    det = Detector(unet, create_vae(TINY_VAE), names, PRE, settings=DetectorSettings(start_t=2, reverse_steps=2),
                   device="cpu")
    return det.save(folder)


def test_scales_bring_every_categorys_good_quantile_to_the_target(tmp_path):
    data = make_tiny_mvtec(tmp_path / "data")
    model = _tiny_model(tmp_path / "model", ["tile", "wood"])
    assert calibrate_scores.main(["--model", str(model), "--data-dir", str(data), "--quantile", "0.5",
                                  "--target", "0.4", "--device", "cpu"]) == 0
    settings = json.loads((model / "model.json").read_text())["settings"]
    assert settings["threshold"] == 0.4 and set(settings["score_scale"]) == {"tile", "wood"}
    assert settings["start_t"] == 2 and settings["reverse_steps"] == 2
    det = Detector.load(model, device="cpu")
    ds = build_dataset("mvtec", data, "all", "train", det.preprocess, augment=False, class_names=det.class_names)
    for cat in ("tile", "wood"):
        items = [ds[i] for i, s in enumerate(ds.samples) if s.category == cat]
        maps, _ = det.score_latents(torch.stack([it["image"] for it in items]),
                                    torch.tensor([det.class_id(cat)] * len(items)))
        assert float(np.quantile(maps.scores.numpy(), 0.5)) == pytest.approx(0.4, rel=1e-4)
    # calibrating again starts from raw scores, so it gives the same scales
    before = settings["score_scale"]
    assert calibrate_scores.main(["--model", str(model), "--data-dir", str(data), "--quantile", "0.5",
                                  "--target", "0.4", "--device", "cpu"]) == 0
    again = json.loads((model / "model.json").read_text())["settings"]["score_scale"]
    assert again == pytest.approx(before, rel=1e-5)


def test_every_category_of_the_model_needs_good_images(tmp_path):
    data = make_tiny_mvtec(tmp_path / "data")
    model = _tiny_model(tmp_path / "model", ["tile", "wood"])
    events = tmp_path / "events.jsonl"
    with pytest.raises(SystemExit, match="no good images of wood"):
        calibrate_scores.main(["--model", str(model), "--data-dir", str(data), "--object-category", "tile",
                               "--device", "cpu", "--events", str(events)])
    assert "score_scale" not in json.loads((model / "model.json").read_text())["settings"]
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in kinds] == ["started", "error"] and "wood" in kinds[-1]["message"]
    # the wizard reads these events: a good run ends with the scales and 'finished'
    events.unlink()
    assert calibrate_scores.main(["--model", str(model), "--data-dir", str(data), "--device", "cpu",
                                  "--events", str(events), "--dry-run"]) == 0
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in kinds] == ["started", "calibration", "finished"]
    assert set(kinds[1]["score_scale"]) == {"tile", "wood"} and kinds[1]["written"] is False
    assert "score_scale" not in json.loads((model / "model.json").read_text())["settings"]
