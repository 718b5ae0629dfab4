"""The general-purpose compact VAE: its corpus builder, and the shipped codec itself."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.launch import GENERAL_VAE

ROOT = Path(__file__).resolve().parents[1]
# The demo parts' test images are not in the corpus: an image kind the codec never saw.
UNSEEN_FOLDER = ROOT / "resources" / "demo_data" / "coin" / "test"
# Held-out PSNR floor (dB) the shipped codec must keep on unseen demo coins (measured 30+ dB).
MIN_UNSEEN_PSNR_DB = 27.0


def _script():
    spec = importlib.util.spec_from_file_location("make_general_vae", ROOT / "scripts" / "make_general_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def test_corpus_takes_textured_crops_from_folders_and_game_archives(tmp_path, monkeypatch):
    mod = _script()
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    textured = rng.integers(0, 256, (300, 600, 3), dtype=np.uint8)
    (src / "sub" / "photo.png").write_bytes(_png(textured))
    (src / "flat.png").write_bytes(_png(np.full((300, 300, 3), 128, np.uint8)))    # flat: no crop
    (src / "tiny.png").write_bytes(_png(textured[:50, :50]))                      # below the smallest side
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")                       # unreadable: counted
    with zipfile.ZipFile(src / "textures.pk3", "w") as z:
        z.writestr("textures/wall.png", _png(textured[:128, :128]))               # small: scaled to one crop
        z.writestr("scripts/wall.shader", "not an image")
    monkeypatch.setattr(mod, "SOURCES", (("test textures", src), ("absent", tmp_path / "nowhere")))
    monkeypatch.setattr(mod, "_skimage_images", lambda: iter(()))

    summary = mod.build_corpus(tmp_path / "corpus", seed=0)

    counts = summary["sources"]["test textures"]
    assert counts == {"files": 5, "unreadable": 1, "crops": 2}   # photo: 300*600 // (256*256*4) -> 1; the pk3 tile: 1
    assert summary["missing_sources"] == [str(tmp_path / "nowhere")]
    listing = json.loads((tmp_path / "corpus" / "corpus.json").read_text())["listing"]
    assert sorted(e["source"] for e in listing) == [f"{src / 'sub' / 'photo.png'}",
                                                    f"{src / 'textures.pk3'}:textures/wall.png"]
    for entry in listing:
        crop = cv2.imread(str(tmp_path / "corpus" / "images" / entry["crop"]))
        assert crop.shape == (mod.CROP, mod.CROP, 3) and crop.std() > mod.MIN_CROP_STD


def test_fine_tuning_passes_the_start_weights(tmp_path, monkeypatch):
    mod = _script()
    commands = []

    def fake_run(cmd, **_):
        commands.append(cmd)
        events = Path(cmd[cmd.index("--events") + 1])
        events.parent.mkdir(parents=True, exist_ok=True)
        events.write_text(json.dumps({"event": "epoch", "epoch": 1, "psnr": 30.0}) + "\n")

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    mod.train(tmp_path / "corpus", tmp_path / "work", minutes=0.1, nproc=1, init=tmp_path / "start_vae")
    assert len(commands) == 2   # the timed probe, then the run
    for cmd in commands:
        assert cmd[cmd.index("--init") + 1] == str(tmp_path / "start_vae")


@pytest.mark.skipif(not GENERAL_VAE.is_dir(), reason="the general VAE is not built in this checkout")
def test_the_shipped_general_vae_reconstructs_parts_it_never_saw():
    from engine.imageio import list_images, read_image
    from engine.preprocess import PreprocessConfig, preprocess_frames
    from engine.vae import load_vae
    from training.train_vae import evaluate_psnr

    record = json.loads((GENERAL_VAE / "training.json").read_text())
    assert record["corpus"]["crops"] >= 1000 and record["held_out_psnr_db"] > MIN_UNSEEN_PSNR_DB
    vae = load_vae(GENERAL_VAE, device="cpu")
    files = list_images(UNSEEN_FOLDER)[:6]
    images = preprocess_frames([read_image(f) for f in files], PreprocessConfig(image_size=256, center_size=256))
    with torch.no_grad():
        latents = vae.encode(images[:1])
        assert latents.shape == (1, 8, 32, 32)
        assert evaluate_psnr(vae, images, "cpu") > MIN_UNSEEN_PSNR_DB
