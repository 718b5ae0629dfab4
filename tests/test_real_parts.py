"""Real-parts recipe: metrics without masks, map normalization, held-out validation, time budget, fit."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import CheckpointError
from engine.detector import Detector
from engine.loading import load_model
from engine.maps import compute_anomaly_maps
from engine.normalization import GOOD_TAIL_SCORE, fit_normalization, raw_discrepancies
from training.launch import SHIPPED_VAE
from tests.test_calibrate_scores import _tiny_model
from tests.test_training import TINY_VAE, _texture, make_tiny_mvtec
from training import evaluate, fit, normalize_maps, train_deco_diff
from training.common import MIN_IMPROVEMENT
from training.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]


def _hand_auroc(labels, scores) -> float:
    """Share of (defective, good) pairs ranked right, ties counting half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_image_metrics_without_masks_match_a_hand_computation():
    rng = np.random.default_rng(0)
    maps = rng.random((6, 4, 4)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 1, 0])
    m = compute_metrics(np.zeros((6, 4, 4)), maps, image_labels=labels, with_pixels=False)
    scores = maps.reshape(6, -1).max(axis=1)
    assert m["image_auroc"] == pytest.approx(_hand_auroc(labels, scores))
    assert m["pixel_auroc"] is None and m["pixel_aupro"] is None and m["pixel_ap"] is None
    with pytest.raises(ValueError, match="image labels must be given"):
        compute_metrics(np.zeros((6, 4, 4)), maps, with_pixels=False)


def _unmasked_mvtec(root: Path) -> Path:
    """The tiny MVTec dataset without its ground_truth folders (image-level labels only)."""
    make_tiny_mvtec(root)
    for cat in ("tile", "wood"):
        shutil.rmtree(root / cat / "ground_truth")
    return root


def _scores_and_labels(metrics: dict, category: str):
    scores = metrics["categories"][category]["scores"]
    return [0 if k.endswith("[good]") else 1 for k in scores], list(scores.values())


def test_evaluate_without_masks_mvtec_style_and_folder(tmp_path, capsys):
    data = _unmasked_mvtec(tmp_path / "data")
    model = _tiny_model(tmp_path / "model", ["tile", "wood"])
    out = tmp_path / "eval"
    assert evaluate.main(["--model", str(model), "--data-dir", str(data), "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for cat in ("tile", "wood"):
        labels, scores = _scores_and_labels(metrics, cat)
        m = metrics["categories"][cat]
        assert m["image_auroc"] == pytest.approx(_hand_auroc(labels, scores), abs=1e-4)
        assert m["pixel_auroc"] is None and m["at_threshold"]["defective_caught"] is not None
    assert "n/a" in capsys.readouterr().out
    assert "n/a" in (out / "metrics.csv").read_text()
    good = metrics["categories"]["tile"]["good_scores"]
    tile_good = [v for k, v in metrics["categories"]["tile"]["scores"].items() if k.endswith("[good]")]
    assert good["max"] == pytest.approx(max(tile_good), abs=1e-4)
    # the warning when good parts sit at the top of the scale or above the threshold
    fake = {"categories": {"a": {"good_scores": {"p50": 0.5, "p99": 1.0, "max": 1.0, "at_top": 3},
                                 "at_threshold": {"threshold": 0.5}},
                           "b": {"good_scores": {"p50": 0.2, "p99": 0.6, "max": 0.7, "at_top": 0},
                                 "at_threshold": {"threshold": 0.5}},
                           "c": {"good_scores": {"p50": 0.2, "p99": 0.3, "max": 0.3, "at_top": 0},
                                 "at_threshold": {"threshold": 0.5}}}}
    warnings = evaluate.scale_warnings(fake)
    assert len(warnings) == 2 and "a: 3 good part(s)" in warnings[0] and "b: the good parts' 99th" in warnings[1]

    # a folder layout: good/ and one defect folder, no masks; the model's only category is used
    test = tmp_path / "folder_test"
    shutil.copytree(data / "wood" / "test", test)
    one = _tiny_model(tmp_path / "one", ["wood"])
    out2 = tmp_path / "eval2"
    assert evaluate.main(["--model", str(one), "--dataset", "folder", "--data-dir", str(data / "wood" / "train" / "good"),
                          "--test-dir", str(test), "--out", str(out2), "--device", "cpu"]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    labels, scores = _scores_and_labels(m2, "wood")
    assert m2["categories"]["wood"]["image_auroc"] == pytest.approx(_hand_auroc(labels, scores), abs=1e-4)

    # a model of several categories on a folder: one clear message, exit code 2
    assert evaluate.main(["--model", str(model), "--dataset", "folder", "--data-dir", str(data / "wood" / "train"),
                          "--test-dir", str(test), "--out", str(out2), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "pass --object-category" in err and "Traceback" not in err
    assert evaluate.main(["--model", str(model), "--data-dir", str(data), "--object-category", "carpet",
                          "--device", "cpu"]) == 2
    assert "does not know carpet" in capsys.readouterr().err


def _raw(seed, n=6, s=16, l=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, s, s, generator=g) * 0.2, torch.rand(n, l, l, generator=g) * 0.1


def test_normalization_by_hand_and_reference_maps_unchanged():
    # global statistics: z = (raw - mean) / std, divided by the scale, clipped to [0, 1]
    img, lat = _raw(0)
    norm = fit_normalization({"a": (img, lat)}, {"a": _raw(1)}, ["a"], mode="global")
    mean_i, std_i = float(img.mean()), float(img.std())
    assert torch.allclose(norm.image_mean[0], torch.full((16, 16), mean_i))
    assert float(norm.image_std[0, 0, 0]) == pytest.approx(std_i, rel=1e-5)
    new_i, new_l = _raw(2)
    d_img, d_lat = norm.normalize(new_i, new_l, torch.zeros(6, dtype=torch.long))
    expected = ((new_i - mean_i) / std_i / float(norm.scale[0])).clamp(0, 1)
    torch.testing.assert_close(d_img, expected, atol=1e-5, rtol=0)
    # the scale puts the 99th percentile of the second set's best z at GOOD_TAIL_SCORE
    held_i, held_l = _raw(1)
    z_i = ((held_i - norm.image_mean[0]) / norm.image_std[0]).clamp_min(0)
    z_l = ((held_l - norm.latent_mean[0]) / norm.latent_std[0]).clamp_min(0)
    from engine.maps import resize_bilinear
    best = torch.sqrt(z_i * resize_bilinear(z_l, (16, 16))).flatten(1).amax(1)
    assert float(np.quantile(best.numpy(), 0.99)) / float(norm.scale[0]) == pytest.approx(GOOD_TAIL_SCORE, rel=1e-4)

    # without a normalization the maps are the reference's, with one they differ
    g = torch.Generator().manual_seed(3)
    x0, xr = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    z, zr = torch.rand(2, 4, 4, 4, generator=g), torch.rand(2, 4, 4, 4, generator=g)
    ref = compute_anomaly_maps(x0, xr, z, zr)
    from engine.maps import IMAGE_CLIP, gaussian_blur

    image_d = gaussian_blur((xr - x0).abs().amax(1).clamp(0, IMAGE_CLIP) / IMAGE_CLIP, 3.0)
    torch.testing.assert_close(ref.image_discrepancy, image_d)
    normed = compute_anomaly_maps(x0, xr, z, zr, normalization=norm, class_ids=torch.zeros(2))
    i_raw, l_raw = raw_discrepancies(x0, xr, z, zr)
    torch.testing.assert_close(normed.image_discrepancy, norm.normalize(i_raw, l_raw, torch.zeros(2))[0])
    with pytest.raises(ValueError, match="class id"):
        compute_anomaly_maps(x0, xr, z, zr, normalization=norm)


def test_normalization_fitted_stored_reloaded_and_checked(tmp_path):
    data = make_tiny_mvtec(tmp_path / "data")
    model = _tiny_model(tmp_path / "model", ["tile", "wood"])
    assert normalize_maps.main(["--model", str(model), "--data-dir", str(data), "--split", "train",
                                "--device", "cpu"]) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["normalization"]["mode"] == "position" and meta["settings"]["threshold"] == 0.5
    assert meta["normalization"]["images"] == {"tile": [3, 3], "wood": [3, 3]}
    det = Detector.load(model, device="cpu")
    assert det.normalization is not None and "normalized" in det.describe().maps
    frame = np.asarray(Image.open(data / "wood" / "test" / "spot" / "000.png"))
    first = det.predict([frame], category="wood")[0]
    # saved again and reloaded: the same maps
    det.save(tmp_path / "copy")
    again = Detector.load(tmp_path / "copy", device="cpu").predict([frame], category="wood")[0]
    np.testing.assert_allclose(again.crop_map, first.crop_map, atol=1e-6)
    assert 0.0 <= first.score <= 1.0
    # without it the same model gives other (reference) maps
    det.normalization = None
    assert not np.allclose(det.predict([frame], category="wood")[0].crop_map, first.crop_map)
    # a missing or broken statistics file is one clear message naming it
    (model / "normalization.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="normalization.safetensors"):
        Detector.load(model, device="cpu")
    (model / "normalization.safetensors").unlink()
    with pytest.raises(CheckpointError, match="file is missing"):
        Detector.load(model, device="cpu")
    # too few good images
    assert normalize_maps.main(["--model", str(tmp_path / "copy"), "--data-dir", str(data), "--split", "test",
                                "--device", "cpu"]) == 2


def test_fusion_weight_formula_choice_and_storage(tmp_path):
    """The fused map is image_d ** w * latent_d ** (1 - w) per category; w is chosen on labelled
    parts (the latent-only weight where the image discrepancy is noise), stored and reloaded; an
    old statistics file without weights reads as the reference's geometric mean."""
    from safetensors.torch import load_file, save_file

    from engine.normalization import DEFAULT_IMAGE_WEIGHT, MapNormalization

    img, lat = _raw(0, n=12)
    norm = fit_normalization({"a": (img, lat), "b": (img, lat)}, {"a": _raw(1), "b": _raw(1)}, ["a", "b"])
    assert norm.image_weight.tolist() == [DEFAULT_IMAGE_WEIGHT] * 2
    # labelled parts: in "a" the defect shows in the latent only and the image is loud noise;
    # in "b" it shows in both, so the reference's weight stays
    g = torch.Generator().manual_seed(5)
    n_good, n_bad = 10, 10
    val_img = torch.rand(20, 16, 16, generator=g) * 0.2
    val_img[:, 4:12, 4:12] += torch.rand(20, 1, 1, generator=g) * 0.4  # noise unrelated to the label
    val_lat = torch.rand(20, 4, 4, generator=g) * 0.1
    val_lat[n_good:, 1:3, 1:3] += 0.04
    labels = [0] * n_good + [1] * n_bad
    b_img = val_img.clone()
    b_img[:, 4:12, 4:12] = 0.1
    b_img[n_good:, 6:10, 6:10] += 0.4
    weights, report = normalize_maps.choose_image_weights(
        norm, ["a", "b"], {"a": (val_img, val_lat), "b": (b_img, val_lat)}, {"a": labels, "b": labels})
    assert weights["a"] < DEFAULT_IMAGE_WEIGHT and weights["b"] == DEFAULT_IMAGE_WEIGHT
    assert report["a"]["auroc"][str(weights["a"])] > report["a"]["auroc"]["0.5"] + 0.005
    assert report["a"]["defective"] == n_bad and report["b"]["auroc"]["0.5"] == 1.0
    # a category with one kind of part only keeps the reference
    _, one_kind = normalize_maps.choose_image_weights(norm, ["a", "b"], {"a": (val_img, val_lat)}, {"a": [0] * 20})
    assert one_kind["a"]["image_weight"] == DEFAULT_IMAGE_WEIGHT and "needs good and defective" in one_kind["a"]["note"]

    chosen = norm.with_image_weights(torch.tensor([0.0, 0.5]))
    g = torch.Generator().manual_seed(3)
    x0, xr = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    z, zr = torch.rand(2, 4, 4, 4, generator=g), torch.rand(2, 4, 4, 4, generator=g)
    maps = compute_anomaly_maps(x0, xr, z, zr, normalization=chosen, class_ids=torch.tensor([0, 1]))
    torch.testing.assert_close(maps.geometric[0], maps.latent_discrepancy[0])  # w = 0: latent only
    torch.testing.assert_close(maps.geometric[1], torch.sqrt(maps.image_discrepancy[1] * maps.latent_discrepancy[1]))
    entry = chosen.save(tmp_path)
    again = MapNormalization.load(tmp_path, entry)
    assert again.image_weight.tolist() == [0.0, 0.5]
    tensors = load_file(str(tmp_path / entry["file"]))
    del tensors["image_weight"]
    save_file(tensors, str(tmp_path / entry["file"]))
    assert MapNormalization.load(tmp_path, entry).image_weight.tolist() == [DEFAULT_IMAGE_WEIGHT] * 2
    with pytest.raises(ValueError, match="image_weight"):
        norm.with_image_weights(torch.tensor([1.5, 0.5]))


def tiny_model_with_holdout(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny two-category MVTec folder and an untrained tile/wood model; tmp_path/holdout.json
    lists the first 4 good training images of each category, as a training run writes it."""
    data = make_tiny_mvtec(tmp_path / "data")
    model = _tiny_model(tmp_path / "model", ["tile", "wood"])
    held = [{"path": str(data / c / "train" / "good" / f"{i:03d}.png"), "category": c}
            for c in ("tile", "wood") for i in range(4)]
    (tmp_path / "holdout.json").write_text(json.dumps(held))
    return data, model


def test_normalize_maps_with_training_images_and_a_labelled_split(tmp_path, capsys):
    """The CLI as fit uses it: held-out good images, training images for the statistics, the
    fusion chosen on a labelled split; what was used lands in model.json."""
    data, model = tiny_model_with_holdout(tmp_path)
    assert normalize_maps.main(["--model", str(model), "--images-list", str(tmp_path / "holdout.json"),
                                "--data-dir", str(data), "--train-images", "5", "--choose-fusion-on", "test",
                                "--device", "cpu"]) == 0
    entry = json.loads((model / "model.json").read_text())["normalization"]
    # statistics: 2 held-out + 2 training images; scale: 2 held-out + the 2 good test parts
    assert entry["images"] == {"tile": [4, 4], "wood": [4, 4]} and entry["scale_val_good"] == {"tile": 2, "wood": 2}
    assert entry["train_images"] == {"tile": 2, "wood": 2}
    assert set(entry["fusion"]) == {"tile", "wood"} and entry["fusion"]["tile"]["parts"] == 4
    det = Detector.load(model, device="cpu")
    assert det.normalization.image_weight.tolist() == [entry["fusion"][c]["image_weight"] for c in det.class_names]
    assert "fusion image weights" in capsys.readouterr().out
    # no labelled split of that name: one clear message
    assert normalize_maps.main(["--model", str(model), "--images-list", str(tmp_path / "holdout.json"),
                                "--data-dir", str(data), "--choose-fusion-on", "val", "--device", "cpu"]) == 2
    assert "no val split with good and defective parts" in capsys.readouterr().err


def _toy_data(root: Path, per_category: int = 14) -> Path:
    make_tiny_mvtec(root)
    rng = np.random.default_rng(1)
    for cat, base in (("tile", np.array([120, 120, 130])), ("wood", np.array([150, 100, 60]))):
        for i in range(6, per_category):
            Image.fromarray(_texture(rng, base)).save(root / cat / "train" / "good" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from engine.vae import create_vae, save_vae

    root = tmp_path_factory.mktemp("toy")
    _toy_data(root / "data")
    torch.manual_seed(0)
    save_vae(create_vae(TINY_VAE), root / "vae")
    return root


def _train_args(toy: Path, exp: Path, *extra):
    return ["--dataset", "mvtec", "--data-dir", str(toy / "data"), "--model-size", "UNet_T", "--image-size", "72",
            "--center-size", "64", "--warmup-epochs", "1", "--global-batch-size", "4", "--ckpt-every", "1",
            "--log-every", "1", "--vae", str(toy / "vae"), "--experiment-dir", str(exp), "--device", "cpu",
            "--events", str(exp / "events.jsonl"), "--holdout", "0.2", "--holdout-min", "3",
            "--reverse-steps", "2", *extra]


def _events(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_held_out_validation_keeps_the_best_epoch_and_stops_early(toy, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp = toy / "early"
    # lr 3e-2 makes the toy UNet diverge after it first improves, so the held-out loss stops improving
    assert train_deco_diff.main(_train_args(toy, exp, "--epochs", "12", "--lr", "3e-2", "--val-every", "1",
                                            "--patience", "2")) == 0
    events = _events(exp / "events.jsonl")
    vals = [e for e in events if e["event"] == "validation"]
    assert vals and all(e["images"] == 6 for e in vals)
    best = [e for e in vals if e["improved"]][-1]  # the last one that beat the best by MIN_IMPROVEMENT
    assert best["loss"] == pytest.approx(min(e["loss"] for e in vals), rel=MIN_IMPROVEMENT)
    stop = next(e for e in events if e["event"] == "early_stop")
    # not before half of the 12 epochs (EARLY_STOP_AFTER_SHARE), then at the first stalled validation
    assert 6 <= stop["epoch"] < 12 and "has not improved for" in stop["reason"]
    assert [e["improved"] for e in vals[-2:]] == [False, False]
    selected = next(e for e in events if e["event"] == "selected")
    assert selected["epoch"] == best["epoch"]
    meta = json.loads((exp / "model" / "model.json").read_text())
    assert meta["training"]["epoch"] == best["epoch"] and meta["training"]["selected"]["loss"] == pytest.approx(
        best["loss"])
    # the exported weights are the best epoch's
    from safetensors.torch import load_file
    from training.common import load_training_checkpoint
    best_state = load_training_checkpoint(exp / "checkpoints" / "best.pt")["model"]
    exported = load_file(exp / "model" / "unet.safetensors")
    for k, v in exported.items():
        torch.testing.assert_close(v, best_state[k], atol=0, rtol=0)
    held = json.loads((exp / "holdout.json").read_text())
    assert len(held) == 6 and {h["category"] for h in held} == {"tile", "wood"}
    assert events[0]["images"] == 28 - 6


def test_too_few_good_images_to_hold_out_is_one_clear_message(toy):
    with pytest.raises(ValueError, match="too few to hold out 12"):
        train_deco_diff.main(_train_args(toy, toy / "few", "--epochs", "1", "--holdout-min", "12"))


def _budget_overrun_bound(events: list[dict], budget: float) -> float:
    """What the stop rule guarantees: an epoch starts only while at least one average epoch's
    time is left, so the run ends within the budget plus one epoch and the final validation and
    checkpoint. Measured from the events' wall-clock times (validation and checkpoints included)
    as twice the longest stretch between two epochs of a run: a loaded machine can stretch one
    epoch well past the average. (A run that ignored the budget would take minutes here.)"""
    longest, last = 0.0, None
    for e in events:
        if e["event"] == "started":
            last = e["time"]
        elif e["event"] == "epoch" and last is not None:
            longest, last = max(longest, e["time"] - last), e["time"]
    return budget + 2 * longest


def test_time_budget_is_kept_and_a_stopped_run_resumes(toy, monkeypatch):
    from training.common import load_training_checkpoint

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp = toy / "budget"
    assert train_deco_diff.main(_train_args(toy, exp, "--epochs", "1000", "--time-budget", "12",
                                            "--val-every", "2")) == 0
    events = _events(exp / "events.jsonl")
    fitted = next(e for e in events if e["event"] == "epochs_fitted")
    assert fitted["epochs"] < 1000
    done = next(e for e in events if e["event"] == "finished")["epoch"]
    assert done <= fitted["epochs"]
    # the trainer's own clock (from before the latents are cached to the last checkpoint); the
    # process start and the export after it are outside (fit keeps time back for them)
    spent = load_training_checkpoint(exp / "checkpoints" / "last.pt")["progress"]["seconds"]
    assert spent <= _budget_overrun_bound(events, 12)
    # stop a budgeted run mid-way (after 3 optimizer steps), then resume it: the time it spent counts
    exp2 = toy / "resumed"
    assert train_deco_diff.main(_train_args(toy, exp2, "--epochs", "1000", "--time-budget", "12",
                                            "--max-steps", "3")) == 0
    state = load_training_checkpoint(exp2 / "checkpoints" / "last.pt")
    first = state["progress"]["seconds"]
    assert first > 0
    assert train_deco_diff.main(_train_args(toy, exp2, "--epochs", "1000", "--time-budget", "12",
                                            "--resume", "auto")) == 0
    events2 = _events(exp2 / "events.jsonl")
    started = [e for e in events2 if e["event"] == "started"]
    assert started[-1]["start_epoch"] == state["epoch"]
    total = load_training_checkpoint(exp2 / "checkpoints" / "last.pt")["progress"]["seconds"]
    resumed_epochs = [e for e in events2[events2.index(started[-1]):] if e["event"] == "epoch"]
    if first >= 12:  # a loaded machine spent the whole budget before the stop: nothing is left
        assert not resumed_epochs and total == first
    else:
        assert resumed_epochs and first < total <= _budget_overrun_bound(events2, 12)


def test_fit_checks_the_data_before_training(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 100 + i, np.uint8)).save(good / f"{i}.png")
    (good / "broken.png").write_bytes(b"not a png")
    assert fit.main(["--data-dir", str(good), "--dataset", "folder", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "only 6 good training images" in err and "broken.png" in err and "Traceback" not in err
    (good / "broken.png").unlink()
    for i in range(5, 20):
        Image.fromarray(np.full((40 + i % 2 * 8, 40, 3), 90 + i, np.uint8)).save(good / f"{i}.png")
    from engine.preprocess import PreprocessConfig
    from training.datasets import build_dataset
    ds = build_dataset("folder", good, "all", "train", PreprocessConfig(image_size=64, center_size=64))
    notes = fit.check_training_images(ds)
    assert len(notes) == 1 and "2 different sizes" in notes[0]
    assert fit.main(["--data-dir", str(good), "--dataset", "folder", "--out", str(tmp_path / "m"),
                     "--runtime", "torch", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert "int8 needs runtime openvino" in err and "Traceback" not in err and not (tmp_path / "m").exists()
    assert fit.parse_duration("1h30m") == 5400 and fit.parse_duration("45m") == 2700
    assert fit.parse_duration("90s") == 90 and fit.parse_duration("600") == 600


@pytest.mark.slow
def test_fit_end_to_end_on_a_tiny_folder(toy, tmp_path):
    """`main.py fit` as a user runs it: a folder of good images and a test folder without masks,
    a 70 s budget; the model folder opens, is normalized, carries its threshold and evaluation."""
    good = tmp_path / "good"
    shutil.copytree(toy / "data" / "wood" / "train" / "good", good)
    rng = np.random.default_rng(2)
    for i in range(14, 20):
        Image.fromarray(_texture(rng, np.array([150, 100, 60]))).save(good / f"{i:03d}.png")
    test = tmp_path / "test"
    shutil.copytree(toy / "data" / "wood" / "test", test)
    shutil.rmtree(test.parent / "test" / "ground_truth", ignore_errors=True)
    out = tmp_path / "model"
    budget = 70
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "main.py", "fit", "--data-dir", str(good), "--dataset", "folder",
                           "--test-dir", str(test), "--out", str(out), "--time-budget", f"{budget}s",
                           "--vae", str(toy / "vae"), "--image-size", "64", "--center-size", "64", "--nproc", "1",
                           "--no-evaluate", "--runtime", "torch", "--precision", "bf16"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["recipe"]["seconds"] <= budget * 1.1  # fit's own clock: checks, training, calibration
    assert took < 2 * budget  # and the interpreter's start and imports on top stay small
    assert meta["normalization"]["mode"] == "position" and meta["settings"]["threshold"] == 0.5
    assert meta["recipe"]["time_budget_s"] == budget and meta["training"]["selected"]["by"]
    assert (meta["settings"]["runtime"], meta["settings"]["precision"]) == ("torch", "bf16")   # --runtime kept
    det = Detector.load(out, device="cpu")
    assert det.class_names == ["custom"] and det.normalization is not None
    # evaluate on the test folder (no masks): image metrics, pixel metrics n/a
    assert evaluate.main(["--model", str(out), "--dataset", "folder", "--data-dir", str(good), "--test-dir",
                          str(test), "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())["categories"]["custom"]
    assert m["pixel_auroc"] is None and 0.0 <= m["image_auroc"] <= 1.0
    assert "fit: model written to" in proc.stderr


def test_the_wizard_runs_the_fit_recipe_and_plots_the_held_out_loss(tmp_path):
    from training.events import StepProgress
    from training.jobs import TrainingPlan, build_steps

    data = make_tiny_mvtec(tmp_path / "data")
    plan = TrainingPlan(name="auto", dataset="mvtec", data_dir=str(data), output_dir=str(tmp_path / "runs"),
                        recipe="fit", time_budget_min=30, nproc=2, train_vae=False, image_size=256, center_size=256)
    assert plan.problems() == []
    steps = build_steps(plan, classes=2, has_test_images=True)
    assert [s.kind for s in steps] == ["detector", "evaluate"]
    argv = steps[0].argv
    assert argv[1:3] == ["-m", "training.fit"]  # fit starts torchrun itself
    args = fit.build_arg_parser().parse_args(argv[3:])
    assert args.time_budget == 1800 and args.out == plan.model_dir and args.nproc == 2 and args.no_evaluate
    assert args.vae == SHIPPED_VAE and args.events == steps[0].events   # the shipped VAE: nothing to train
    assert args.detector == "deco-diff"
    diad = TrainingPlan(name="auto", recipe="fit", detector="diad", model_size="DiAD_T", data_dir=str(data),
                        output_dir=str(tmp_path), train_vae=False)
    assert diad.problems() == []
    assert fit.build_arg_parser().parse_args(build_steps(diad)[0].argv[3:]).detector == "diad"
    assert args.runtime is None and args.precision is None   # the machine default
    fixed = TrainingPlan(**{**plan.to_dict(), "runtime": "openvino int8"})
    args = fit.build_arg_parser().parse_args(build_steps(fixed)[0].argv[3:])
    assert (args.runtime, args.precision) == ("openvino", "int8")
    assert "unknown runtime 'torch int8'" in " ".join(TrainingPlan(**{**plan.to_dict(), "runtime": "torch int8"})
                                                       .problems())

    # the held-out validation curve, the kept epoch and the fitted epoch count from the events
    p = StepProgress("detector")
    for ev in ({"event": "started", "epochs": 1000, "steps_per_epoch": 4},
               {"event": "epoch", "epoch": 1, "epochs": 1000, "loss": 0.3},
               {"event": "epochs_fitted", "epochs": 20},
               {"event": "validation", "epoch": 1, "loss": 0.2, "best_epoch": 1},
               {"event": "validation", "epoch": 2, "loss": 0.25, "best_epoch": 1},
               {"event": "warning", "message": "good parts score high"}):
        p.feed(ev)
    assert p.validation_curve == [(1, 0.2), (2, 0.25)] and p.best_epoch == 1 and p.epochs == 20
    p.feed({"event": "early_stop", "epoch": 2, "reason": "held-out loss has not improved"})
    assert p.epochs == 2
    assert p.warnings == ["good parts score high"]


def test_diad_gets_the_same_selection_budget_and_threshold(toy, monkeypatch):
    from training import train_diad

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp = toy / "diad"
    assert train_diad.main(["--data-dir", str(toy / "data"), "--model-size", "DiAD_T", "--image-size", "72",
                            "--center-size", "64", "--epochs", "1000", "--warmup-epochs", "1",
                            "--global-batch-size", "4", "--ckpt-every", "1", "--log-every", "1", "--lr", "1e-3",
                            "--vae", str(toy / "vae"), "--experiment-dir", str(exp), "--noise-t", "100",
                            "--events", str(exp / "events.jsonl"), "--holdout", "0.2", "--holdout-min", "3",
                            "--val-every", "1", "--time-budget", "15", "--device", "cpu"]) == 0
    events = _events(exp / "events.jsonl")
    vals = [e for e in events if e["event"] == "validation"]
    fitted = next(e for e in events if e["event"] == "epochs_fitted")
    assert vals and fitted["epochs"] < 1000 and vals[-1]["images"] == 6
    best = [e for e in vals if e["improved"]][-1]
    meta = json.loads((exp / "model" / "model.json").read_text())
    assert meta["detector"] == "diad" and meta["training"]["selected"]["epoch"] == best["epoch"]
    # fit's threshold for a model without map normalization: the held-out good tail plus the margin
    det = load_model(exp / "model", device="cpu")
    held = [(h["path"], h["category"]) for h in json.loads((exp / "holdout.json").read_text())]
    threshold = fit.threshold_from_good(det, held)
    scores = [r.score for r in det.predict([np.asarray(Image.open(p).convert("RGB")) for p, _ in held],
                                           category=[c for _, c in held])]
    assert threshold == pytest.approx(np.quantile(scores, 0.99) * 0.5 / GOOD_TAIL_SCORE, rel=1e-4)


def test_epoch_count_is_fitted_again_when_the_first_epoch_was_not_typical(monkeypatch, tmp_path):
    """A first epoch slowed by other work fits too few epochs; the count is fitted again from the
    epochs after it while the run is in its first third (and the schedule follows)."""
    import argparse
    from types import SimpleNamespace

    from training import common

    assert common.fitted_epoch_count(1, 100.0, 10.0, 1000) == 11
    assert common.fitted_epoch_count(5, -3.0, 10.0, 1000) == 5
    assert common.fitted_epoch_count(1, 1e6, 10.0, 40) == 40
    now = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    args = argparse.Namespace(time_budget=1000.0, epochs=1000, val_every=1, patience=0)
    ctx = common.DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    schedule = SimpleNamespace(total_epochs=1000)
    events = common.EventLog(tmp_path / "events.jsonl")
    monitor = common.EpochMonitor(args, ctx, events, unet=None, opt=None,
                                  scheduler=SimpleNamespace(lr_lambdas=[schedule]), ckpt_dir=tmp_path,
                                  resume_path=None, clock_start=0.0)
    epoch_seconds = [100.0] + [20.0] * 60  # a slow first epoch, then typical ones
    done = 0
    while done < args.epochs:
        now[0] += epoch_seconds[done]
        done += 1
        if monitor.end_of_epoch(done, epoch_seconds[done - 1]):
            break
        if done == 1:
            assert args.epochs == 10  # 900 s left at 100 s an epoch
    events.close()
    # 900 s after the first epoch at 20 s an epoch: 45 more
    assert args.epochs == 46 and schedule.total_epochs == 46
    assert done >= 44 and now[0] <= args.time_budget + 20


def test_fit_takes_validation_parts_from_another_folder(tmp_path):
    """--val-dir: labelled parts in a folder of the data's layout (its val split, else its test
    split; a folder dataset's good/ and <defect>/ folders); missing or one-kind folders are one
    clear FitError; without it the data's own val split (none here)."""
    from engine.preprocess import PreprocessConfig

    data = make_tiny_mvtec(tmp_path / "data")
    other = make_tiny_mvtec(tmp_path / "other")
    pre = PreprocessConfig(image_size=64, center_size=64)

    def parts(*extra, categories=("tile", "wood")):
        args = fit.build_arg_parser().parse_args(["--data-dir", str(data), "--out", str(tmp_path / "m"), *extra])
        args.dataset = "mvtec" if args.dataset == "auto" else args.dataset
        return fit.validation_parts(args, list(categories) if categories != "all" else "all", pre)

    assert parts() == []
    taken = parts("--val-dir", str(other))
    assert {c for _, c, _ in taken} == {"tile", "wood"} and {y for *_, y in taken} == {0, 1}
    assert all(p.startswith(str(other / c / "test")) for p, c, _ in taken)
    with pytest.raises(fit.FitError, match="no such folder"):
        parts("--val-dir", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(fit.FitError, match="no good and defective parts"):
        parts("--val-dir", str(tmp_path / "empty"))
    folder = parts("--dataset", "folder", "--val-dir", str(other / "tile" / "test"), categories="all")
    assert {y for *_, y in folder} == {0, 1} and all(p.startswith(str(other / "tile" / "test")) for p, _, _ in folder)


def _epoch_monitor(tmp_path, settings: dict, measure):
    """An EpochMonitor on a stand-in network without a time budget: (monitor, its args, its event log)."""
    import argparse

    from training import common

    args = argparse.Namespace(time_budget=0.0, **settings)
    ctx = common.DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    unet = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    events = common.EventLog(tmp_path / "events.jsonl")
    monitor = common.EpochMonitor(args, ctx, events, unet=unet, opt=opt, scheduler=scheduler, ckpt_dir=tmp_path,
                                  resume_path=None, clock_start=0.0, measure=measure)
    return monitor, args, events


def test_early_stopping_waits_for_half_of_the_epochs(tmp_path):
    """A held-out loss that stalls early (the learning rate still high) does not stop the run before
    EARLY_STOP_AFTER_SHARE of its epochs; after that, `patience` validations without gain do."""
    from training import common

    monitor, args, events = _epoch_monitor(tmp_path, dict(epochs=20, val_every=1, patience=2),
                                           measure=lambda model: {"loss": 0.05})
    reasons = {done: monitor.end_of_epoch(done, 1.0) for done in range(1, args.epochs + 1)}
    events.close()
    first_stop = min(done for done, reason in reasons.items() if reason)
    assert first_stop == int(common.EARLY_STOP_AFTER_SHARE * args.epochs) == 10
    assert "not improved for 9 validations" in reasons[first_stop]


def test_patience_grows_with_the_run(tmp_path):
    """A long run is not stopped by a few validations without a 1 % gain (the demo's 359-epoch fit
    stopped at epoch 228 while still improving): patience is PATIENCE_SHARE of its epochs when that
    is more than --patience."""
    from training import common

    # 2 % better at every validation up to epoch 220, flat after
    loss = {"epoch": 0}
    monitor, args, events = _epoch_monitor(tmp_path, dict(epochs=400, val_every=2, patience=4),
                                           measure=lambda model: {"loss": 0.98 ** min(loss["epoch"], 220)})
    assert monitor.patience() == 20 == round(common.PATIENCE_SHARE * 400 / 2)
    reasons = {}
    for done in range(1, args.epochs + 1):
        loss["epoch"] = done
        reasons[done] = monitor.end_of_epoch(done, 1.0)
    events.close()
    first_stop = min(done for done, reason in reasons.items() if reason)
    assert first_stop == 220 + 20 * 2 and "not improved for 20 validations" in reasons[first_stop]
    args.epochs, args.patience = 20, 6   # a short run keeps --patience
    assert monitor.patience() == 6
