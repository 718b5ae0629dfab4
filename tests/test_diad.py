"""DiAD: noise schedules against closed forms, forward-diffusion statistics, the DDPM loss,
deterministic DDIM reconstruction, min-over-classes category choice, model folders through
`engine.loading.load_model`, and train_diad -> evaluate end to end on a tiny dataset."""

import json
import math
from argparse import Namespace

import numpy as np
import pytest
import torch
from torch import nn

from engine.checkpoint import CheckpointError
from engine.diad import (DiADConfig, DiADDetector, DiADSettings, DiADUNet, NoiseSchedule, NoiseScheduleConfig,
                         create_diad, ddim_reconstruct, ddim_sample, ddpm_loss, ddpm_sample, diffusion_error,
                         reconstruction_timesteps, save_diad_folder, score_timesteps, seeded_noise)
from engine.detector import Detector
from engine.loading import load_model
from engine.preprocess import PreprocessConfig
from engine.runtime import InspectionModel
from engine.vae import create_vae, save_vae
from tests.test_training import TINY_VAE, make_tiny_mvtec

TINY = dict(in_channels=4, out_channels=4, sample_size=8, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
            attention_levels=(1,), head_channels=16, norm_groups=8)
PRE = PreprocessConfig(image_size=72, center_size=64, resize_filter="bicubic")


def tiny_unet(ncls=2, seed=0, **overrides) -> DiADUNet:
    """A tiny latent-space model with every weight random (the output conv too, so eps != 0)."""
    torch.manual_seed(seed)
    unet = DiADUNet(DiADConfig(ncls=ncls, **{**TINY, **overrides}))
    for p in unet.parameters():
        nn.init.normal_(p, std=0.05)
    return unet.eval()


def tiny_detector(ncls=2, **settings) -> DiADDetector:
    torch.manual_seed(0)
    vae = create_vae(TINY_VAE)
    return DiADDetector(tiny_unet(ncls), vae, [f"part{i}" for i in range(ncls)], PRE,
                        settings=DiADSettings(**{"noise_t": 100, "score_t_max": 100, **settings}), device="cpu")


def frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8) for i in range(n)]


# ---------------------------------------------------------------------------- schedules
def test_linear_schedule_matches_hand_computed_values():
    s = NoiseSchedule(NoiseScheduleConfig(kind="linear"))
    step = (0.02 - 1e-4) / 999
    assert s.betas.shape == (1000,)
    assert s.betas[0] == pytest.approx(1e-4, abs=1e-15)
    assert s.betas[999] == pytest.approx(0.02, abs=1e-15)
    assert s.betas[500] == pytest.approx(1e-4 + 500 * step, abs=1e-15)
    assert s.alphas_cumprod[0] == pytest.approx(0.9999, abs=1e-15)
    assert s.alphas_cumprod[1] == pytest.approx(0.9999 * (1 - (1e-4 + step)), abs=1e-15)
    assert s.alphas_cumprod[2] == pytest.approx(0.9999 * (1 - (1e-4 + step)) * (1 - (1e-4 + 2 * step)), abs=1e-15)
    log_abar = sum(math.log(1 - (1e-4 + i * step)) for i in range(1000))
    assert s.alphas_cumprod[999] == pytest.approx(math.exp(log_abar), rel=1e-9)
    assert 4e-5 < s.alphas_cumprod[999] < 4.1e-5


def test_cosine_schedule_matches_the_formula():
    s = NoiseSchedule(NoiseScheduleConfig(kind="cosine"))

    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    raw = [1 - f(t + 1) / f(t) for t in range(1000)]
    for t in (13, 250, 500, 900, 998):
        assert 1e-4 < raw[t] < 0.9999 and s.betas[t] == pytest.approx(raw[t], rel=1e-12)
    # the clamps: the first 13 betas (4.1e-5 .. 9.9e-5 by the formula) are raised to 1e-4, the last (1.0) lowered
    assert [t for t in range(1000) if raw[t] < 1e-4] == list(range(13)) and np.all(s.betas[:13] == 1e-4)
    assert raw[999] == pytest.approx(1.0) and s.betas[999] == 0.9999
    # after the clamped start abar_t = (1 - 1e-4)^13 f(t + 1) / f(13)
    for t in (13, 100, 500, 990):
        assert s.alphas_cumprod[t] == pytest.approx(0.9999 ** 13 * f(t + 1) / f(13), rel=1e-9)


def test_schedule_config_validation():
    with pytest.raises(ValueError, match="linear' or 'cosine"):
        NoiseScheduleConfig(kind="sigmoid")
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        NoiseScheduleConfig(beta_start=0.02, beta_end=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_diffusion_statistics(kind):
    s = NoiseSchedule(NoiseScheduleConfig(kind=kind))
    x0 = torch.tensor([1.5, -0.7, 0.0, 0.3], dtype=torch.float64)
    n = 40_000
    g = torch.Generator().manual_seed(0)
    for t in (0, 100, 500, 999):
        noise = torch.randn(n, 4, generator=g, dtype=torch.float64)
        x_t = s.add_noise(x0.expand(n, 4), noise, torch.full((n,), t))
        abar = s.alphas_cumprod[t]
        sd_mean = math.sqrt((1 - abar) / n)
        np.testing.assert_allclose(x_t.mean(0).numpy(), math.sqrt(abar) * x0.numpy(), atol=5 * sd_mean + 1e-12)
        np.testing.assert_allclose(x_t.var(0).numpy(), 1 - abar, rtol=0.05, atol=1e-12)
    # predict_x0 inverts add_noise exactly for the true noise
    noise = torch.randn(3, 4, 8, 8, generator=g)
    clean = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([3, 400, 900])
    torch.testing.assert_close(s.predict_x0(s.add_noise(clean, noise, t), noise, t), clean, atol=2e-4, rtol=0)


def test_timestep_grids():
    assert reconstruction_timesteps(250, 5) == [250, 200, 150, 100, 50]
    assert reconstruction_timesteps(250, 5, start_t=2) == [100, 50]
    with pytest.raises(ValueError, match="start_t"):
        reconstruction_timesteps(250, 5, start_t=6)
    a = score_timesteps(4, 20, 250, seed=0)
    assert a == score_timesteps(4, 20, 250, seed=0) and a == sorted(a) and all(20 <= t <= 250 for t in a)
    assert torch.equal(seeded_noise((4, 8, 8), 3), seeded_noise((4, 8, 8), 3))


# ---------------------------------------------------------------------------- model and loss
def test_model_shapes_sizes_and_class_conditioning():
    unet = tiny_unet(ncls=3)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a = unet(x, torch.tensor([5, 5]), torch.tensor([0, 1]))
        b = unet(x, torch.tensor([5, 5]), torch.tensor([0, 2]))
    assert a.shape == x.shape
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    big = create_diad("DiAD_T", ncls=2, sample_size=32)
    assert big.config.size == "DiAD_T" and big.num_parameters < 2_000_000
    assert DiADConfig.from_dict(big.config.to_dict()) == big.config
    with pytest.raises(ValueError, match="unknown DiAD size"):
        create_diad("DiAD_XXL")
    with pytest.raises(ValueError, match="sample_size 30 must be divisible by 4"):
        DiADConfig(sample_size=30)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        DiADConfig(space="pixel")


def test_ddpm_loss_goes_down_on_a_tiny_set():
    torch.manual_seed(0)
    unet = DiADUNet(DiADConfig(ncls=2, **TINY))
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 8, 8, generator=g) * 0.5 + torch.linspace(-1, 1, 8).view(8, 1, 1, 1)
    ids = torch.tensor([0, 1] * 4)

    def held_out_loss():
        with torch.no_grad():
            return float(np.mean([ddpm_loss(unet, x0, ids, schedule, torch.Generator().manual_seed(100 + k))
                                  for k in range(6)]))

    before = held_out_loss()
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        ddpm_loss(unet, x0, ids, schedule, g).backward()
        opt.step()
    after = held_out_loss()
    assert before == pytest.approx(1.0, abs=0.1)  # zero-initialised output: eps_hat = 0
    assert after < 0.6 * before


# ---------------------------------------------------------------------------- sampling
def test_ddim_reconstruction_is_deterministic_and_batch_independent():
    unet, schedule = tiny_unet(), NoiseSchedule()
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([0, 1, 1, 0])
    steps = reconstruction_timesteps(200, 4)
    noise = seeded_noise((4, 8, 8), 0)
    a = ddim_reconstruct(unet, z, ids, schedule, steps, noise)
    b = ddim_reconstruct(unet, z, ids, schedule, steps, noise)
    assert torch.equal(a, b)
    alone = ddim_reconstruct(unet, z[2:3], ids[2:3], schedule, steps, noise)
    torch.testing.assert_close(alone[0], a[2], atol=1e-5, rtol=0)
    t_score = score_timesteps(3, 20, 200, 0)
    noises = [seeded_noise((4, 8, 8), 1 + k) for k in range(3)]
    e = diffusion_error(unet, z, ids, schedule, t_score, noises)
    assert e.shape == (4, 8, 8) and torch.equal(e, diffusion_error(unet, z, ids, schedule, t_score, noises))
    torch.testing.assert_close(diffusion_error(unet, z[2:3], ids[2:3], schedule, t_score, noises)[0], e[2],
                               atol=1e-5, rtol=0)
    # sampling from pure noise is reproducible from its generator (DDIM with eta > 0 and DDPM draw noise per step)
    for sample in (lambda g: ddim_sample(unet, (2, 4, 8, 8), ids[:2], schedule, num_steps=4, eta=1.0, generator=g),
                   lambda g: ddpm_sample(unet, (2, 4, 8, 8), ids[:2], schedule, num_steps=4, generator=g)):
        first = sample(torch.Generator().manual_seed(5))
        assert torch.equal(first, sample(torch.Generator().manual_seed(5)))
        assert not torch.allclose(first, sample(torch.Generator().manual_seed(6)))


def test_detector_predictions_are_deterministic_and_batch_independent():
    det = tiny_detector(batch_size=3)
    fs = frames(3)
    a = det.predict(fs, category=1)
    b = det.predict(fs, category=1)
    single = det.with_settings(batch_size=1).predict(fs[1:2], category=1)[0]
    for x, y in zip(a, b):
        assert x.score == y.score
        np.testing.assert_array_equal(x.crop_map, y.crop_map)
    np.testing.assert_allclose(single.crop_map, a[1].crop_map, atol=1e-5)
    r = a[0]
    assert r.anomaly_map.shape == fs[0].shape[:2] and r.crop_map.shape == (64, 64)
    assert r.reconstruction.shape == (64, 64, 3) and r.reconstruction.dtype == np.uint8
    assert 0.0 <= r.score <= 1.0 and r.is_anomalous == (r.score > det.settings.threshold)
    assert set(r.timings) == {"preprocess", "classify", "encode", "unet", "decode", "maps", "postprocess"}


class OracleEps(nn.Module):
    """A perfect noise predictor for data that is one constant colour per class: from x_t and
    the class colour mu, eps = (x_t - sqrt(abar_t) mu) / sqrt(1 - abar_t)."""

    def __init__(self, colours: torch.Tensor, schedule: NoiseSchedule, size: int):
        super().__init__()
        self.config = DiADConfig(in_channels=3, out_channels=3, sample_size=size, model_channels=8,
                                 channel_mult=(1,), attention_levels=(), norm_groups=8, ncls=len(colours),
                                 space="pixel")
        self.colours = colours
        self.abar = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float32)
        self.dummy = nn.Parameter(torch.zeros(1))

    num_parameters = 1

    def forward(self, x, t, class_ids):
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        mu = self.colours[torch.as_tensor(class_ids).reshape(-1).expand(x.shape[0])].view(-1, 3, 1, 1)
        a = self.abar[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * mu) / (1 - a).sqrt()


def test_min_over_classes_picks_the_class_that_explains_the_image():
    rgb = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)
    colours = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0)
    schedule = NoiseSchedule()
    det = DiADDetector(OracleEps(colours, schedule, 16), None, ["red", "green", "blue"],
                       PreprocessConfig(image_size=16, center_size=16), schedule=schedule, device="cpu",
                       settings=DiADSettings(threshold=0.1))
    images = [np.full((20, 24, 3), c, np.uint8) for c in rgb[[2, 0, 1]]]
    results = det.predict(images)
    assert [r.category for r in results] == ["blue", "red", "green"]
    assert all(r.category_source == "min-score" and r.score < 1e-3 and not r.is_anomalous for r in results)
    assert det.describe().category_selection == "min-score"
    wrong = det.predict(images[:1], category="red")[0]
    assert wrong.category_source == "given" and wrong.score > 0.5 and wrong.is_anomalous
    ids, scores = det.select_category(colours[1].view(1, 3, 1, 1).expand(1, 3, 16, 16))
    assert ids == [1] and scores.shape == (1, 3) and int(scores.argmin()) == 1
    # only classes the model was trained on are candidates
    det.trained_classes = ["red", "blue"]
    ids, scores = det.select_category(colours[1].view(1, 3, 1, 1).expand(1, 3, 16, 16))
    assert ids[0] in (0, 2) and torch.isnan(scores[0, 1]) and not torch.isnan(scores[0, [0, 2]]).any()
    # from pure noise the oracle generates the class colour, with DDIM and with DDPM
    g = torch.Generator().manual_seed(0)
    for sample in (ddim_sample(det.unet, (2, 3, 4, 4), torch.tensor([0, 2]), schedule, num_steps=10, generator=g),
                   ddpm_sample(det.unet, (2, 3, 4, 4), torch.tensor([0, 2]), schedule, num_steps=20, generator=g)):
        torch.testing.assert_close(sample, colours[[0, 2]].view(2, 3, 1, 1).expand(2, 3, 4, 4), atol=1e-3, rtol=0)


def test_classifier_and_single_class_take_precedence_over_min_score():
    class FakeClassifier:
        def to(self, device):
            return self

        def predict(self, frames_rgb):
            return [("part1", 0.8) for _ in frames_rgb]

    det = tiny_detector(ncls=2)
    det.classifier = FakeClassifier()
    r = det.predict(frames(1))[0]
    assert (r.category, r.category_source, r.category_confidence) == ("part1", "classifier", 0.8)
    assert tiny_detector(ncls=1).predict(frames(1))[0].category_source == "single"


# ---------------------------------------------------------------------------- settings and folders
def test_settings_validation_and_gate_fusion_refused():
    with pytest.raises(ValueError, match="start_t"):
        DiADSettings(start_t=6, reverse_steps=5)
    with pytest.raises(ValueError, match="DiAD has no DoD gate"):
        DiADSettings(gate_fusion=True)
    det = tiny_detector()
    with pytest.raises(ValueError, match="at most 999"):
        det.with_settings(noise_t=1000)
    assert det.with_settings(threshold=0.7, reverse_steps=3, start_t=3).settings.threshold == 0.7


def test_save_and_load_round_trip_through_load_model(tmp_path):
    det = tiny_detector(threshold=0.42, noise_t=120, score_steps=2)
    det.model_id = "tiny-diad"
    before = det.predict(frames(2), category="part1")
    det.save(tmp_path / "model", extra={"evaluation": {"image_auroc": 1.0}})
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["detector"] == "diad" and meta["vae"] == "vae" and meta["schedule"]["kind"] == "linear"
    loaded = load_model(tmp_path / "model", device="cpu")
    assert isinstance(loaded, DiADDetector) and loaded.kind == "diad"
    assert loaded.settings.threshold == 0.42 and loaded.settings.noise_t == 120 and loaded.settings.score_steps == 2
    assert loaded.class_names == det.class_names and loaded.model_id == "tiny-diad"
    assert loaded.source == str(tmp_path / "model") and loaded.describe().detector == "diad"
    for x, y in zip(before, loaded.predict(frames(2), category="part1")):
        assert x.score == pytest.approx(y.score, abs=1e-6)
        np.testing.assert_allclose(x.crop_map, y.crop_map, atol=1e-6)
    assert load_model(tmp_path / "model", device="cpu", threshold=0.9).settings.threshold == 0.9
    with pytest.raises(CheckpointError, match="DoD gate"):
        load_model(tmp_path / "model", device="cpu", gate_fusion=True)
    meta["detector"] = "patchcore"
    (tmp_path / "model" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown detector 'patchcore'"):
        load_model(tmp_path / "model", device="cpu")


def test_diad_folders_load_through_load_model_only(tmp_path):
    tiny_detector().save(tmp_path / "model")
    with pytest.raises(CheckpointError, match="is a 'diad' model, not a DeCo-Diff model"):
        Detector.load(tmp_path / "model", device="cpu")
    loaded = load_model(tmp_path / "model", device="cpu")
    assert isinstance(loaded, InspectionModel)
    assert list(loaded.describe().to_dict()) == [
        "detector", "model_id", "source", "size", "ncls", "gating", "classes", "device", "unet_parameters", "vae",
        "classifier", "preprocess", "space", "schedule", "category_selection", "trained_classes"]


def test_pixel_space_folder_has_no_vae(tmp_path):
    unet = create_diad("DiAD_T", ncls=1, sample_size=16, space="pixel")
    pre = PreprocessConfig(image_size=16, center_size=16)
    with pytest.raises(ValueError, match="takes no VAE"):
        save_diad_folder(tmp_path / "bad", unet, ["a"], pre, vae_ref="ema")
    save_diad_folder(tmp_path / "px", unet, ["a"], pre, NoiseScheduleConfig(kind="cosine"))
    det = load_model(tmp_path / "px", device="cpu")
    assert det.vae is None and det.schedule.config.kind == "cosine"
    r = det.predict([np.full((16, 16, 3), 90, np.uint8)])[0]
    assert r.category_source == "single" and r.crop_map.shape == (16, 16)


# ---------------------------------------------------------------------------- training and evaluation
def test_train_diad_resume_export_and_evaluate(tmp_path, capsys):
    from training.evaluate import load_detector_for_eval
    from training.evaluate import main as evaluate_main
    from training.train_diad import main as train_main

    make_tiny_mvtec(tmp_path / "data")
    torch.manual_seed(0)
    save_vae(create_vae(TINY_VAE), tmp_path / "vae")

    def train(exp, epochs, *extra):
        return train_main(["--data-dir", str(tmp_path / "data"), "--model-size", "DiAD_T", "--image-size", "72",
                           "--center-size", "64", "--epochs", str(epochs), "--warmup-epochs", "1",
                           "--global-batch-size", "4", "--ckpt-every", "1", "--log-every", "1", "--lr", "1e-3",
                           "--vae", str(tmp_path / "vae"), "--experiment-dir", str(exp), "--noise-t", "100",
                           "--events", str(exp / "events.jsonl"), *extra])

    assert train(tmp_path / "straight", 3) == 0
    events = [json.loads(line) for line in (tmp_path / "straight" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and events[0]["detector"] == "diad"
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3]
    from engine.checkpoint import safe_torch_load

    final = safe_torch_load(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert final["epoch"] == 3 and set(final) >= {"model", "opt", "scheduler", "epoch", "args"}
    # stopped at the end of epoch 2 (3 steps per epoch), then resumed: the same end state
    assert train(tmp_path / "resumed", 3, "--max-steps", "6") == 0
    assert [json.loads(x)["event"] for x in (tmp_path / "resumed" / "events.jsonl").read_text().splitlines()][-1] \
        == "stopped"
    assert train(tmp_path / "resumed", 3, "--resume", "auto") == 0
    resumed = safe_torch_load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for k, v in final["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, atol=1e-6, rtol=0, msg=k)

    model = tmp_path / "straight" / "model"
    det = load_model(model, device="cpu")
    assert isinstance(det, DiADDetector) and det.settings.noise_t == 100 and det.vae is not None
    # MVTec models keep all 15 class ids; the min-score choice only considers the trained ones
    assert len(det.class_names) == 15 and det.trained_classes == ["tile", "wood"]
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "data" / "wood" / "test" / "spot" / "000.png"))
    r = det.predict([img])[0]
    assert r.category in ("tile", "wood") and r.category_source == "min-score" and r.anomaly_map.shape == (80, 80)
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(model), "--detector", "diad", "--dataset", "mvtec", "--data-dir",
                          str(tmp_path / "data"), "--out", str(out), "--batch-size", "4", "--reverse-steps", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["categories"]) == {"tile", "wood"} and metrics["images"] == 8
    assert metrics["model"]["detector"] == "diad" and metrics["settings"]["reverse_steps"] == 2
    for m in metrics["categories"].values():
        assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["pixel_auroc"] <= 1.0
    with pytest.raises(ValueError, match="is a diad model"):
        load_detector_for_eval(Namespace(model=str(model), detector="deco-diff"), "cpu")
