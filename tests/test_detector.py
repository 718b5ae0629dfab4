"""The batched Detector on tiny models: shapes, categories, thresholds, save/load, determinism."""

import json

import numpy as np
import pytest
import torch

from engine.detector import Detector, DetectorSettings
from engine.loading import load_model
from engine.preprocess import PreprocessConfig
from engine.runtime import InspectionModel, ModelInfo
from engine.unet import GatedUNet, UNetConfig
from engine.vae import create_vae

TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 64,
}
PRE = PreprocessConfig(image_size=72, center_size=64, resize_filter="bicubic")


def make_detector(ncls=3, classifier=None, **settings):
    torch.manual_seed(0)
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=ncls, latent_size=8))
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vae = create_vae(TINY_VAE)
    names = [f"part{i}" for i in range(ncls)]
    return Detector(unet, vae, names, PRE, classifier=classifier, settings=DetectorSettings(**settings), device="cpu")


def frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (50 + 10 * i, 90, 3), dtype=np.uint8) for i in range(n)]


def test_predict_shapes_and_fields():
    det = make_detector(threshold=0.1)
    fs = frames()
    res = det.predict(fs, category="part1")
    assert len(res) == 3
    for f, r in zip(fs, res):
        assert r.anomaly_map.shape == f.shape[:2] and r.anomaly_map.dtype == np.float32
        assert r.crop_map.shape == (64, 64)
        assert r.reconstruction.shape == (64, 64, 3) and r.reconstruction.dtype == np.uint8
        assert r.category == "part1" and r.category_source == "given" and r.category_id == 1
        assert r.score == pytest.approx(float(r.crop_map.max()))
        assert r.is_anomalous == (r.score > 0.1)
        assert set(r.timings) == {"preprocess", "classify", "encode", "unet", "decode", "maps", "postprocess"}
        assert r.latency_ms > 0


def test_batching_does_not_change_results():
    fs = frames(5)
    a = make_detector(batch_size=5).predict(fs, category=0)
    b = make_detector(batch_size=2).predict(fs, category=0)
    for x, y in zip(a, b):
        assert abs(x.score - y.score) < 1e-5
        np.testing.assert_allclose(x.crop_map, y.crop_map, atol=1e-5)


def test_a_vae_with_other_latent_channels_than_the_unet_is_refused():
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=1, latent_size=8))
    vae = create_vae({**TINY_VAE, "latent_channels": 8})
    with pytest.raises(ValueError, match="VAE has 8 latent channels, the UNet expects 4"):
        Detector(unet, vae, ["part"], PRE, device="cpu")
    wide = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=1, latent_size=8,
                                in_channels=8, out_channels=8))
    det = Detector(wide, vae, ["part"], PRE, device="cpu")
    (r,) = det.predict(frames(1))
    assert r.crop_map.shape == (64, 64)


def test_cpu_lanes_give_the_same_results_as_one_thread():
    fs = frames(5)
    one = make_detector(batch_size=5, lanes=1)
    lanes = make_detector(batch_size=5, lanes=3, gate_fusion=True)
    assert one.lane_count(5) == 1 and lanes.lane_count(5) == 3 and lanes.lane_count(2) == 2
    assert lanes.lane_count(1) == 1
    a = one.with_settings(gate_fusion=True).predict(fs, category=[0, 1, 2, 0, 1])
    b = lanes.predict(fs, category=[0, 1, 2, 0, 1])
    assert lanes._lanes is not None and lanes._lanes.size == 3
    for x, y in zip(a, b):
        assert x.category == y.category
        assert abs(x.score - y.score) < 1e-5
        np.testing.assert_allclose(x.crop_map, y.crop_map, atol=1e-5)
        np.testing.assert_array_equal(x.reconstruction.shape, y.reconstruction.shape)
        assert set(y.timings) == set(x.timings) and y.latency_ms > 0
    maps, recons = lanes.score_latents(torch.zeros(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))
    assert maps.geometric.shape == (4, 64, 64) and maps.gate_fused.shape == (4, 64, 64)
    assert recons.shape == (4, 3, 64, 64)
    auto = make_detector(batch_size=4)  # 32 base channels: automatic lanes
    assert auto.prefers_lanes and auto.lane_count(4) == min(4, torch.get_num_threads())
    wide = Detector(GatedUNet(UNetConfig(model_channels=64, num_head_channels=16, context_dim=16, ncls=1,
                                         latent_size=8)), create_vae(TINY_VAE), ["part"], PRE, device="cpu")
    assert not wide.prefers_lanes and wide.lane_count(4) == 1
    assert wide.with_settings(lanes=2).lane_count(4) == 2
    assert make_detector(batch_size=4, compile=False, lanes=2).with_settings(lanes=1).lane_count(4) == 1
    assert not make_detector(batch_size=4, lanes=2).prefers_lanes  # lanes chosen: nothing automatic
    with pytest.raises(ValueError, match="lanes"):
        DetectorSettings(lanes=-1)


def test_bgr_channel_order_is_explicit():
    det = make_detector()
    f = frames(1)[0]
    rgb = det.predict([f], category=0, channel_order="rgb")[0]
    bgr = det.predict([f[..., ::-1].copy()], category=0, channel_order="bgr")[0]
    assert rgb.score == bgr.score


def test_gray_rgba_and_16bit_frames():
    det = make_detector()
    gray = np.full((40, 40), 128, np.uint8)
    rgba = np.dstack([np.full((40, 40, 3), 128, np.uint8), np.full((40, 40), 255, np.uint8)])
    deep = np.full((40, 40, 3), 128 * 257, np.uint16)
    res = det.predict([gray, rgba, deep], category=0)
    assert res[0].score == pytest.approx(res[1].score, abs=1e-4)
    assert res[0].score == pytest.approx(res[2].score, abs=1e-4)


def test_category_rules():
    det = make_detector()
    with pytest.raises(ValueError, match="no category given and this model has no classifier"):
        det.predict(frames(1))
    with pytest.raises(ValueError, match="unknown category 'bolt'"):
        det.predict(frames(1), category="bolt")
    res = det.predict(frames(2), category=["part0", 2])
    assert [r.category for r in res] == ["part0", "part2"]
    single = make_detector(ncls=1)
    assert single.predict(frames(1))[0].category_source == "single"


class FakeClassifier:
    def __init__(self, answer):
        self.answer = answer

    def to(self, device):
        return self

    def predict(self, frames_rgb):
        return [(self.answer, 0.9) for _ in frames_rgb]


def test_classifier_picks_category():
    det = make_detector(classifier=FakeClassifier("part2"))
    r = det.predict(frames(1))[0]
    assert (r.category, r.category_source, r.category_confidence) == ("part2", "classifier", 0.9)


def test_gate_fusion_changes_map_and_needs_gating():
    det = make_detector()
    plain = det.predict(frames(1), category=0)[0]
    det.with_settings(gate_fusion=True)
    fused = det.predict(frames(1), category=0)[0]
    assert not np.allclose(plain.crop_map, fused.crop_map)
    det.unet.config.__class__  # config is frozen; a gateless model refuses fusion
    gateless = make_detector()
    object.__setattr__(gateless.unet.config, "use_gating", False)
    with pytest.raises(ValueError, match="gate fusion needs a model trained with gating"):
        gateless.with_settings(gate_fusion=True)
    assert gateless.settings.gate_fusion is False  # a refused change leaves the settings as they were
    before = gateless.settings
    with pytest.raises(ValueError, match="score_scale names categories"):
        gateless.with_settings(threshold=0.9, score_scale={"no-such-part": 2.0})
    assert gateless.settings is before and gateless._score_factors is None


def test_save_and_load_folder_round_trip(tmp_path):
    det = make_detector(threshold=0.42)
    before = det.predict(frames(2), category=1)
    det.save(tmp_path / "model", extra={"evaluation": {"image_auroc": 1.0}})
    loaded = Detector.load(tmp_path / "model", device="cpu")
    assert loaded.settings.threshold == 0.42 and loaded.class_names == det.class_names
    after = loaded.predict(frames(2), category=1)
    for x, y in zip(before, after):
        assert x.score == pytest.approx(y.score, abs=1e-6)
    assert Detector.load(tmp_path / "model", device="cpu", threshold=0.9).settings.threshold == 0.9


def test_describe_gives_model_info_with_the_deco_diff_keys(tmp_path):
    det = make_detector()
    det.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", device="cpu")
    assert isinstance(loaded, Detector) and isinstance(loaded, InspectionModel)
    info = loaded.describe()
    assert isinstance(info, ModelInfo) and info.detector is None and info.classes == ["part0", "part1", "part2"]
    assert list(info.to_dict()) == ["model_id", "source", "size", "ncls", "gating", "classes", "device",
                                    "unet_parameters", "vae", "classifier", "preprocess", "maps"]
    with pytest.raises(AttributeError):
        info.device = "cuda"


def test_reconstruction_of_a_zero_unet_is_the_vae_round_trip():
    det = make_detector()
    for p in det.unet.out.parameters():
        torch.nn.init.zeros_(p)
    r = det.predict(frames(1), category=0)[0]
    assert r.score == 0.0 and not r.is_anomalous


def test_settings_validation():
    with pytest.raises(ValueError, match="precision"):
        DetectorSettings(precision="fp8")
    with pytest.raises(ValueError, match="start_t"):
        DetectorSettings(start_t=6, reverse_steps=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu = make_detector()
    fs = frames(4)
    a = cpu.predict(fs, category=0)
    gpu = make_detector()
    gpu.device = torch.device("cuda")
    gpu.unet.to("cuda")
    gpu.vae.to("cuda")
    b = gpu.predict(fs, category=0)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.crop_map, y.crop_map, atol=1e-4)
        assert abs(x.score - y.score) < 1e-4


def test_reference_checkpoint_through_the_detector(tmp_path, reference_dir, model_fixture):
    """The reference .pt runs end to end with a local VAE folder, and its latent reconstruction
    is the reference's sampling loop."""
    import engine

    torch.manual_seed(0)
    from engine.vae import save_vae

    save_vae(create_vae(TINY_VAE), tmp_path / "vae")
    det = Detector.load(reference_dir / "reference_xs.pt", vae=tmp_path / "vae", device="cpu", batch_size=2)
    assert det.class_names[5] == "tile" and det.unet.config.size == "UNet_XS"
    assert det.preprocess.image_size == 288 and det.preprocess.center_size == 256
    frame = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    r = det.predict([frame], category="tile")[0]
    assert r.anomaly_map.shape == (300, 400) and r.crop_map.shape == (256, 256)
    x = torch.from_numpy(model_fixture["x"])
    final = engine.reconstruct_latents(det.unet, x, torch.from_numpy(model_fixture["class_ids"]))
    np.testing.assert_allclose(final.numpy(), model_fixture["loop_final"], atol=1e-4)


def test_missing_vae_is_one_clear_message(tmp_path, reference_dir, monkeypatch):
    from engine.vae import VAENotFoundError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VAENotFoundError) as e:
        Detector.load(reference_dir / "reference_xs.pt", device="cpu")
    assert "sd-vae-ft-ema" in str(e.value) and str(tmp_path / "empty-cache") in str(e.value)


def test_score_scale_multiplies_each_categorys_maps_and_scores(tmp_path):
    from engine.checkpoint import CheckpointError

    plain = make_detector()
    scaled = make_detector(score_scale={"part0": 2.0, "part2": 0.5}, threshold=0.3)
    for cat, factor in ((0, 2.0), (1, 1.0), (2, 0.5)):
        a, b = plain.predict(frames(2), category=cat), scaled.predict(frames(2), category=cat)
        for x, y in zip(a, b):
            assert y.score == pytest.approx(factor * x.score, rel=1e-5)
            np.testing.assert_allclose(y.crop_map, factor * x.crop_map, rtol=1e-5, atol=1e-7)
            assert y.is_anomalous == (y.score > 0.3)
    # saved and loaded with the model; unknown categories and bad factors are clear errors
    scaled.save(tmp_path / "model")
    assert Detector.load(tmp_path / "model", device="cpu").settings.score_scale == {"part0": 2.0, "part2": 0.5}
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    meta["settings"]["score_scale"] = {"part0": 2.0, "bolt": 1.5}
    (tmp_path / "model" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model.*bolt"):
        Detector.load(tmp_path / "model", device="cpu")
    with pytest.raises(ValueError, match="positive"):
        DetectorSettings(score_scale={"part0": 0.0})
    with pytest.raises(ValueError, match="positive"):
        DetectorSettings(score_scale={"part0": float("nan")})


def test_staged_prediction_gives_what_predict_gives_and_books_no_waiting():
    import time

    from engine.runtime import StagedModel
    from tests.gui_helpers import make_tiny_detector

    det = make_tiny_detector(ncls=2, batch_size=4)
    assert isinstance(det, StagedModel)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    whole = det.predict(frames, category=[0, 1, 1])
    started = time.perf_counter()
    prepared = det.prepare(frames, category=[0, 1, 1])
    with pytest.raises(ValueError, match="run_networks"):
        det.finish(prepared)
    time.sleep(0.1)                                   # waiting between stages (another thread's queue)
    staged = det.finish(det.run_networks(prepared))
    wall_ms = (time.perf_counter() - started) * 1000.0
    assert [r.category_id for r in staged] == [r.category_id for r in whole] == [0, 1, 1]
    for a, b in zip(whole, staged):
        assert b.score == pytest.approx(a.score, abs=1e-6)
        assert np.allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)
        assert set(b.timings) == set(a.timings)
    booked_ms = sum(staged[0].timings.values()) * len(frames)   # each frame carries its share of the batch
    assert booked_ms < wall_ms - 90.0                            # the 100 ms wait is booked to no stage
