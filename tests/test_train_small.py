"""The VAE and classifier trainers on a tiny generated dataset (single process)."""

import json

import pytest
import torch

from tests.test_training import TINY_VAE, make_tiny_mvtec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_mvtec(tmp_path_factory.mktemp("small") / "data")


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_vae_compact_and_fine_tune(data, tmp_path):
    from engine.vae import create_vae, load_vae, save_vae
    from training import train_vae

    out = tmp_path / "vae"
    assert train_vae.main(["--data-dir", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "4",
                           "--crop", "32", "--image-size", "72", "--center-size", "64",
                           "--events", str(tmp_path / "ev.jsonl")]) == 0
    vae = load_vae(out)
    assert vae.latent_channels == 8 and vae.downsample_factor == 8
    events = _events(tmp_path / "ev.jsonl")
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 2 and all(e["psnr"] > 0 for e in epochs)
    assert events[-1]["event"] == "finished" and events[-1]["psnr"] > 0
    # fine-tuning an existing (e.g. Stable-Diffusion) VAE folder starts from its weights
    torch.manual_seed(0)
    save_vae(create_vae(TINY_VAE), tmp_path / "base")
    tuned = tmp_path / "tuned"
    assert train_vae.main(["--data-dir", str(data), "--out", str(tuned), "--init", str(tmp_path / "base"),
                           "--epochs", "1", "--batch-size", "4", "--crop", "32", "--image-size", "72",
                           "--center-size", "64"]) == 0
    assert load_vae(tuned).config["block_out_channels"] == [8, 8, 8, 8]


def test_train_vae_mixes_in_general_images(data, tmp_path):
    import numpy as np
    from PIL import Image

    from engine.vae import load_vae
    from training import train_vae

    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(photos / "small.png")
    Image.fromarray(rng.integers(0, 255, (120, 100), dtype=np.uint8)).save(photos / "gray.jpg")
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    files = train_vae.extra_image_files([str(tmp_path / "photos"), "skimage"])
    assert files[:3] == sorted(photos.iterdir())
    assert any(f.name == "astronaut.png" for f in files) and all(f.suffix in (".png", ".jpg") for f in files)
    images = train_vae.load_extra_images(files[:3], min_side=64)
    assert len(images) == 2  # the broken file is reported and skipped
    assert all(x.shape[0] == 3 and min(x.shape[1:]) >= 64 and -1 <= x.min() and x.max() <= 1 for x in images)
    crops = train_vae._random_extra_crops(images, 5, 32, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 32, 32)
    out = tmp_path / "vae"
    gen = torch.Generator().manual_seed(0)
    flat = torch.zeros(3, 32, 32)
    drawn = [train_vae.draw_random_lines(flat, gen) for _ in range(20)]
    changed = [(d != flat).any(0).float().mean().item() for d in drawn]
    assert all(0 < c < 0.5 for c in changed), changed  # thin curves, never a flood
    assert all(d.shape == flat.shape and -1 <= d.min() and d.max() <= 1 for d in drawn)
    assert torch.equal(flat, torch.zeros(3, 32, 32))  # the input crop is left alone
    assert train_vae.main(["--data-dir", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4",
                           "--crop", "32", "--image-size", "72", "--center-size", "64", "--extra-images",
                           str(tmp_path / "photos"), "--line-augment", "0.5",
                           "--events", str(tmp_path / "ev.jsonl")]) == 0
    assert _events(tmp_path / "ev.jsonl")[0]["extra_images"] == 2
    assert load_vae(out).downsample_factor == 8
    with pytest.raises(FileNotFoundError, match="not a folder"):
        train_vae.main(["--data-dir", str(data), "--out", str(out), "--extra-images", str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="line-augment"):
        train_vae.main(["--data-dir", str(data), "--out", str(out), "--line-augment", "2"])
    with pytest.raises(ValueError, match="extra-fraction"):
        train_vae.main(["--data-dir", str(data), "--out", str(out), "--extra-images", "skimage",
                        "--extra-fraction", "1"])


def test_train_classifier(data, tmp_path):
    from engine.classifier import load_classifier
    from engine.imageio import read_image
    from training import train_classifier

    out = tmp_path / "clf"
    assert train_classifier.main(["--data-dir", str(data), "--out", str(out), "--epochs", "6", "--batch-size", "4",
                                  "--image-size", "64", "--width", "8", "--events", str(tmp_path / "c.jsonl")]) == 0
    clf = load_classifier(out)
    assert clf.class_names == ["tile", "wood"]
    finished = _events(tmp_path / "c.jsonl")[-1]
    assert finished["event"] == "finished" and finished["test_accuracy"] is not None
    preds = clf.predict([read_image(p) for p in sorted((data / "wood" / "test" / "good").glob("*.png"))])
    assert [name for name, _ in preds] == ["wood", "wood"]
