"""The latent memory (engine.latent_memory): nearest good latent nearby, by hand; normalized and
mixed into the fused map; its share chosen on labelled parts; stored, reloaded and checked."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import CheckpointError
from engine.detector import Detector
from engine.latent_memory import MEMORY_FILE, LatentMemory, fit_memory, memory_distances
from engine.maps import compute_anomaly_maps
from engine.normalization import GOOD_TAIL_SCORE, SCALE_QUANTILE, MapNormalization, fit_normalization
from tests.test_real_parts import tiny_model_with_holdout
from training import normalize_maps


def _brute_force(memory: torch.Tensor, latents: torch.Tensor, shift: int) -> torch.Tensor:
    """Distance of each query vector to the closest memory vector within `shift` pixels, by loops."""
    n, c, h, w = memory.shape
    out = torch.zeros(latents.shape[0], h, w)
    for b in range(latents.shape[0]):
        for y in range(h):
            for x in range(w):
                best = float("inf")
                for yy in range(max(0, y - shift), min(h, y + shift + 1)):
                    for xx in range(max(0, x - shift), min(w, x + shift + 1)):
                        d = (memory[:, :, yy, xx] - latents[b, :, y, x]).norm(dim=1).min()
                        best = min(best, float(d))
                out[b, y, x] = best
    return out


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_distances_match_a_brute_force_search(shift):
    g = torch.Generator().manual_seed(shift)
    memory = torch.randn(5, 3, 6, 7, generator=g)
    latents = torch.randn(4, 3, 6, 7, generator=g)
    latents[1] = memory[2]  # a memory image itself: distance 0 everywhere
    got = memory_distances(memory, latents, shift=shift, sigma=0.0)
    # |q|^2 + |m|^2 - 2 q.m cancels to a few 1e-6 where q = m (float32, |q|^2 up to ~20): its square
    # root is up to ~2e-3 (1.4e-3 seen in CI with shift 2)
    torch.testing.assert_close(got, _brute_force(memory, latents, shift), atol=2e-3, rtol=1e-4)
    assert float(got[1].abs().max()) < 2e-3


def test_a_shifted_good_part_is_near_and_an_unseen_patch_is_far():
    """A good latent moved by one pixel is found at distance 0 with shift 1 (not with shift 0,
    away from the border it moved in from); a vector 3 units off at one position is 3 away."""
    memory = torch.zeros(1, 2, 5, 5)
    memory[0, 0] = torch.arange(25.0).view(5, 5)
    moved = torch.roll(memory, shifts=1, dims=3)
    d1 = memory_distances(memory, moved, shift=1, sigma=0.0)[0]
    d0 = memory_distances(memory, moved, shift=0, sigma=0.0)[0]
    assert float(d1[:, 1:].abs().max()) < 1e-3 and float(d0[:, 1:].min()) == pytest.approx(1.0, abs=1e-3)
    odd = memory.clone()
    odd[0, 1, 2, 2] = 3.0
    d = memory_distances(memory, odd, shift=1, sigma=0.0)[0]
    assert float(d[2, 2]) == pytest.approx(3.0, abs=1e-3) and float(d.sum() - d[2, 2]) < 1e-3
    with pytest.raises(ValueError, match="do not match a memory of 2 channels"):
        memory_distances(memory, torch.zeros(1, 3, 5, 5))


def _normalization_with_memory(seed: int = 0, n: int = 12):
    """A fitted normalization (16 px maps, 4 px latents) and a memory of 2-channel good latents."""
    g = torch.Generator().manual_seed(seed)
    img, lat = torch.rand(n, 16, 16, generator=g) * 0.2, torch.rand(n, 4, 4, generator=g) * 0.1
    norm = fit_normalization({"a": (img[:6], lat[:6]), "b": (img[:6], lat[:6])},
                             {"a": (img[6:], lat[6:]), "b": (img[6:], lat[6:])}, ["a", "b"])
    good = torch.randn(30, 2, 4, 4, generator=g) * 0.1
    memory = fit_memory({"a": good[:16]}, {"a": good[16:23]}, {"a": good[23:]}, ["a", "b"],
                        SCALE_QUANTILE, GOOD_TAIL_SCORE)
    return norm, memory, g, good


def test_memory_statistics_mix_formula_and_storage(tmp_path):
    norm, memory, g, good = _normalization_with_memory()
    assert memory.memories[1] is None and memory.weight.tolist() == [0.5, 0.0]
    # mean and std from the statistics images; the scale puts the scale images' 99th-percentile
    # best z at the good tail score
    stats = memory_distances(good[:16], good[16:23])
    assert float(memory.mean[0]) == pytest.approx(float(stats.mean()), rel=1e-5)
    assert float(memory.std[0]) == pytest.approx(float(stats.std()), rel=1e-5)
    z = ((memory_distances(good[:16], good[23:]) - memory.mean[0]) / memory.std[0]).flatten(1).amax(dim=1)
    assert float(np.quantile(z.numpy(), SCALE_QUANTILE)) / float(memory.scale[0]) == pytest.approx(GOOD_TAIL_SCORE)
    chosen = memory.with_weights(torch.tensor([0.25, 0.0]), torch.tensor([1.5, 1.0]))
    mixed = norm.with_memory(chosen)
    x0, xr = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    zr = torch.rand(2, 2, 4, 4, generator=g)
    latents = torch.cat([good[23:24], good[23:24] + 2.0])
    ids = torch.tensor([0, 1])
    maps = compute_anomaly_maps(x0, xr, latents, zr, normalization=mixed, class_ids=ids)
    plain = compute_anomaly_maps(x0, xr, latents, zr, normalization=norm, class_ids=ids)
    # category a: clip(gain * ((1 - w) * fused + w * memory_d)); category b (w = 0): unchanged
    expected = (1.5 * (0.75 * plain.geometric[0] + 0.25 * maps.memory_discrepancy[0])).clamp(0, 1)
    torch.testing.assert_close(maps.geometric[0], expected)
    torch.testing.assert_close(maps.geometric[1], plain.geometric[1])
    assert float(maps.memory_discrepancy[1].abs().max()) == 0.0 and plain.memory_discrepancy is None
    # stored beside the statistics and read back the same
    entry = mixed.save(tmp_path)
    assert entry["latent_memory"]["file"] == MEMORY_FILE and entry["latent_memory"]["images"] == [16, 0]
    again = MapNormalization.load(tmp_path, entry)
    assert again.memory.weight.tolist() == [0.25, 0.0] and again.memory.gain.tolist() == [1.5, 1.0]
    reloaded = compute_anomaly_maps(x0, xr, latents, zr, normalization=again, class_ids=ids)
    torch.testing.assert_close(reloaded.geometric, maps.geometric, atol=2e-3, rtol=0)  # memory kept as float16
    (tmp_path / MEMORY_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=MEMORY_FILE):
        MapNormalization.load(tmp_path, entry)
    (tmp_path / MEMORY_FILE).unlink()
    with pytest.raises(CheckpointError, match="file is missing"):
        MapNormalization.load(tmp_path, entry)
    with pytest.raises(ValueError, match="weights"):
        memory.with_weights(torch.tensor([1.5, 0.0]), memory.gain)


def test_the_memorys_share_is_chosen_on_labelled_parts():
    """Where the defects show only as unseen latents the memory gets a share; where the latents
    of defective parts look like good ones it gets none."""
    norm, memory, g, _ = _normalization_with_memory(seed=1)
    n = 10
    img, lat = torch.rand(2 * n, 16, 16, generator=g) * 0.2, torch.rand(2 * n, 4, 4, generator=g) * 0.1
    good = memory.memories[0]
    latents = good[torch.randint(0, good.shape[0], (2 * n,), generator=g)].clone()
    unseen = latents.clone()
    unseen[n:, :, 1:3, 1:3] += 1.0
    labels = {"a": [0] * n + [1] * n}
    with_memory = norm.with_memory(memory)
    weights, report = normalize_maps.choose_memory_weights(with_memory, ["a", "b"], {"a": (img, lat)},
                                                           {"a": unseen}, labels)
    assert weights["a"] > 0 and report["a"]["auroc"][str(weights["a"])] == 1.0
    weights, report = normalize_maps.choose_memory_weights(with_memory, ["a", "b"], {"a": (img, lat)},
                                                           {"a": latents}, labels)
    assert weights["a"] == 0.0 and report["a"]["defective"] == n


def test_normalize_maps_keeps_a_memory_the_detector_uses(tmp_path, capsys):
    """The CLI as fit uses it: training images as the memory, its share chosen on a labelled split,
    the good tail of the final scores back at 0.4; the detector loads and applies it."""
    data, model = tiny_model_with_holdout(tmp_path)
    assert normalize_maps.main(["--model", str(model), "--images-list", str(tmp_path / "holdout.json"),
                                "--data-dir", str(data), "--memory-images", "10", "--choose-fusion-on", "test",
                                "--device", "cpu"]) == 0
    entry = json.loads((model / "model.json").read_text())["normalization"]
    assert entry["memory_images"] == {"tile": 2, "wood": 2}  # the training images not held out
    assert entry["latent_memory"]["images"] == [2, 2] and set(entry["memory"]) == {"tile", "wood"}
    assert "latent memory of [2, 2]" in capsys.readouterr().out
    det = Detector.load(model, device="cpu")
    memory = det.normalization.memory
    assert "latent memory of [2, 2] good images" in det.describe().maps
    assert memory.weight.tolist() == [entry["memory"][c]["weight"] for c in det.class_names]
    # whatever share was chosen, a forced one changes the maps and zero gives the plain ones back
    frame = np.asarray(Image.open(data / "wood" / "test" / "spot" / "000.png"))
    det.normalization = det.normalization.with_memory(memory.with_weights(torch.tensor([0.0, 0.0]), torch.ones(2)))
    plain = det.predict([frame], category="wood")[0]
    det.normalization = det.normalization.with_memory(memory.with_weights(torch.tensor([0.0, 0.75]), torch.ones(2)))
    mixed = det.predict([frame], category="wood")[0]
    assert not np.allclose(plain.crop_map, mixed.crop_map)
    det.normalization = det.normalization.with_memory(None)
    np.testing.assert_allclose(det.predict([frame], category="wood")[0].crop_map, plain.crop_map, atol=1e-6)


def test_a_memory_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="different shapes"):
        LatentMemory([torch.zeros(2, 2, 4, 4), torch.zeros(2, 3, 4, 4)], torch.zeros(2), torch.ones(2),
                     torch.ones(2), torch.zeros(2), torch.ones(2))


def _pixel_auroc_by_ranks(masks: np.ndarray, maps: np.ndarray) -> float:
    """Mann-Whitney: the chance that a defect pixel outscores a good one (ties count half)."""
    from scipy.stats import rankdata

    y, s = masks.ravel().astype(bool), maps.ravel().astype(np.float64)
    ranks = rankdata(s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_choices_count_pixel_auroc_where_the_validation_parts_have_masks(tmp_path):
    """With masks on every labelled part, each memory share is judged on the mean of image and
    pixel AUROC (the demo's coins: a share that lifted image AUROC cost localisation); without, on
    image AUROC as before. Masks are read from the parts' mask paths and cropped like the images."""
    from engine.preprocess import PreprocessConfig
    from training.metrics import auroc

    norm, memory, g, _ = _normalization_with_memory(seed=1)
    n = 10
    img, lat = torch.rand(2 * n, 16, 16, generator=g) * 0.2, torch.rand(2 * n, 4, 4, generator=g) * 0.1
    good = memory.memories[0]
    latents = good[torch.randint(0, good.shape[0], (2 * n,), generator=g)].clone()
    latents[n:, :, 1:3, 1:3] += 1.0
    labels = {"a": [0] * n + [1] * n}
    masks = np.zeros((2 * n, 16, 16), np.uint8)
    masks[n:, 3:9, 3:9] = 1            # overlaps the unseen latent patch (image pixels 4-11) in part
    with_memory = norm.with_memory(memory)
    _, by_image = normalize_maps.choose_memory_weights(with_memory, ["a", "b"], {"a": (img, lat)}, {"a": latents}, labels)
    weights, report = normalize_maps.choose_memory_weights(with_memory, ["a", "b"], {"a": (img, lat)},
                                                           {"a": latents}, labels, {"a": masks})
    assert by_image["a"]["by"] == normalize_maps.SELECTION_BY_IMAGE and "pixel_auroc" not in by_image["a"]
    assert report["a"]["by"] == normalize_maps.SELECTION_BY_IMAGE_AND_PIXEL
    y = np.array(labels["a"])
    for w in report["a"]["auroc"]:
        trial = memory.with_weights(torch.tensor([float(w), float(memory.weight[1])]), memory.gain)
        maps = normalize_maps._final_maps(norm.with_memory(trial), 0, img, lat, latents).numpy()
        pixel = _pixel_auroc_by_ranks(masks, maps)
        assert report["a"]["pixel_auroc"][w] == pytest.approx(pixel, abs=1e-4)
        image = auroc(y, maps.reshape(2 * n, -1).max(axis=1))
        assert report["a"]["auroc"][w] == pytest.approx((image + pixel) / 2, abs=1e-4)
        assert by_image["a"]["auroc"][w] == pytest.approx(image, abs=1e-4)
    best = max(report["a"]["auroc"], key=report["a"]["auroc"].get)
    expected = float(best) if report["a"]["auroc"][best] >= report["a"]["auroc"]["0.0"] + 0.005 else 0.0
    assert weights["a"] == expected

    # masks from mask paths: good parts zeros, a defective part without a mask leaves its category to image AUROC
    pre = PreprocessConfig(image_size=20, center_size=16)
    drawn = np.zeros((20, 20), np.uint8)
    drawn[8:12, 8:12] = 255
    Image.fromarray(drawn).save(tmp_path / "m.png")
    parts = [("g.png", "a", 0, ""), ("d.png", "a", 1, str(tmp_path / "m.png")), ("x.png", "b", 1, "")]
    read = normalize_maps.validation_masks(parts, pre)
    assert read["b"] is None and read["a"].shape == (2, 16, 16) and read["a"][0].sum() == 0
    assert read["a"][1][6:10, 6:10].all() and read["a"][1].sum() == 16   # 2 px cropped off each side
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "empty.png")
    assert normalize_maps.validation_masks([("d.png", "a", 1, str(tmp_path / "empty.png"))], pre)["a"] is None
