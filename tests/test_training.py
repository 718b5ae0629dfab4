"""Training and evaluation end to end on a tiny generated dataset: torchrun with 2 gloo ranks,
kill, resume to the same state, evaluate under torchrun, export loads in the Detector."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.vae import create_vae, save_vae

REPO = Path(__file__).resolve().parents[1]
TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 64,
}


def _texture(rng, base, size=80):
    img = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)
    return img.astype(np.uint8)


def make_tiny_mvtec(root: Path, seed=0):
    """Two categories (MVTec names 'tile' and 'wood'), 6 train images each, test: 2 good + 2 defect with masks."""
    rng = np.random.default_rng(seed)
    for cat, base in (("tile", np.array([120, 120, 130])), ("wood", np.array([150, 100, 60]))):
        (root / cat / "train" / "good").mkdir(parents=True)
        (root / cat / "test" / "good").mkdir(parents=True)
        (root / cat / "test" / "spot").mkdir(parents=True)
        (root / cat / "ground_truth" / "spot").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_texture(rng, base)).save(root / cat / "train" / "good" / f"{i:03d}.png")
        for i in range(2):
            Image.fromarray(_texture(rng, base)).save(root / cat / "test" / "good" / f"{i:03d}.png")
            img = _texture(rng, base)
            mask = np.zeros((80, 80), np.uint8)
            y, x = 25 + 10 * i, 30
            img[y:y + 14, x:x + 14] = (20, 200, 20)
            mask[y:y + 14, x:x + 14] = 255
            Image.fromarray(img).save(root / cat / "test" / "spot" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / cat / "ground_truth" / "spot" / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    make_tiny_mvtec(root / "data")
    torch.manual_seed(0)
    save_vae(create_vae(TINY_VAE), root / "vae")
    return root


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return env


def _train_cmd(ws: Path, exp: Path, epochs=4, extra=()):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "training.train_deco_diff", "--dataset", "mvtec", "--data-dir", str(ws / "data"),
            "--model-size", "UNet_T", "--image-size", "72", "--center-size", "64", "--epochs", str(epochs),
            "--warmup-epochs", "1", "--global-batch-size", "4", "--ckpt-every", "1", "--log-every", "1",
            "--vae", str(ws / "vae"), "--experiment-dir", str(exp), "--events", str(exp / "events.jsonl"),
            *extra]


def _events(path: Path):
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _state(path: Path):
    from engine.checkpoint import safe_torch_load

    return safe_torch_load(path)


@pytest.mark.slow
def test_torchrun_train_kill_resume_evaluate_export(workspace):
    ws = workspace
    # 1. an uninterrupted run: the reference for what a resumed run must reproduce
    straight = ws / "straight"
    subprocess.run(_train_cmd(ws, straight), cwd=REPO, env=_env(), check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events = _events(straight / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[0]["world_size"] == 2 and events[0]["per_rank_batch"] == 2
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(e["loss"] > 0 and e["images_per_s"] > 0 for e in steps)
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3, 4]
    final = _state(straight / "checkpoints" / "last.pt")
    assert final["epoch"] == 4 and set(final) >= {"model", "opt", "scheduler", "epoch", "args"}
    assert final["args"].model_size == "UNet_T"
    # the first epoch already trains (the reference's runs at learning rate 0)
    first_step = next(e for e in steps if e["epoch"] == 1)
    assert first_step["lr"] > 0

    # 2. the same run killed with SIGKILL after its epoch-2 checkpoint ...
    killed = ws / "killed"
    killed.mkdir()
    proc = subprocess.Popen(_train_cmd(ws, killed), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if any(e["event"] == "checkpoint" and e["epoch"] == 2 for e in _events(killed / "events.jsonl")):
            break
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    # torchrun starts its workers in sessions of their own: kill every process of this run
    subprocess.run(["pkill", "-KILL", "-f", str(killed)], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    saved = _state(killed / "checkpoints" / "last.pt")
    assert saved["epoch"] in (2, 3)
    # ... resumes from its checkpoint and ends in the same state as the uninterrupted run
    subprocess.run(_train_cmd(ws, killed, extra=("--resume", "auto")), cwd=REPO, env=_env(), check=True,
                   timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resumed = _state(killed / "checkpoints" / "last.pt")
    assert resumed["epoch"] == 4
    assert resumed["scheduler"]["last_epoch"] == final["scheduler"]["last_epoch"]
    for k, v in final["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, atol=1e-6, rtol=0, msg=k)
    restarted = [e for e in _events(killed / "events.jsonl") if e["event"] == "started"]
    assert restarted[-1]["start_epoch"] == saved["epoch"]

    # 3. evaluate under torchrun (results gathered on rank 0) writes the metrics JSON
    out = ws / "eval"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "training.evaluate", "--model", str(killed / "model"), "--dataset", "mvtec",
                    "--data-dir", str(ws / "data"), "--out", str(out), "--batch-size", "2"],
                   cwd=REPO, env=_env(), check=True, timeout=600, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["categories"]) == {"tile", "wood"}
    for m in metrics["categories"].values():
        assert m["n_good"] == 2 and m["n_defect"] == 2
        assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["pixel_auroc"] <= 1.0
    assert metrics["images"] == 8
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("category,image_auroc")

    # 4. the exported model folder loads in the Detector and inspects an image
    from engine.detector import Detector

    det = Detector.load(killed / "model", device="cpu")
    # MVTec category names keep the reference's MVTec class ids (tile 5, wood 14)
    assert det.class_names[5] == "tile" and det.class_names[14] == "wood" and det.unet.config.size == "UNet_T"
    img = np.asarray(Image.open(ws / "data" / "wood" / "test" / "spot" / "000.png"))
    r = det.predict([img], category="wood")[0]
    assert r.anomaly_map.shape == (80, 80) and np.isfinite(r.score)
    shutil.rmtree(straight)


def _single_process_args(ws: Path, exp: Path, extra=()):
    return ["--dataset", "mvtec", "--data-dir", str(ws / "data"), "--model-size", "UNet_T", "--image-size", "72",
            "--center-size", "64", "--epochs", "1", "--warmup-epochs", "0", "--global-batch-size", "4",
            "--ckpt-every", "1", "--log-every", "1", "--vae", str(ws / "vae"), "--experiment-dir", str(exp),
            "--device", "cpu", *extra]


def test_init_starts_from_another_models_weights(workspace, monkeypatch):
    from safetensors.torch import load_file

    from engine.checkpoint import CheckpointError
    from training import train_deco_diff

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = workspace
    assert train_deco_diff.main(_single_process_args(ws, ws / "first")) == 0
    first = load_file(ws / "first" / "model" / "unet.safetensors")
    # learning rate 0: the exported weights are exactly the ones --init loaded
    assert train_deco_diff.main(_single_process_args(
        ws, ws / "second", ("--init", str(ws / "first" / "model"), "--lr", "0"))) == 0
    second = load_file(ws / "second" / "model" / "unet.safetensors")
    assert first.keys() == second.keys()
    for k in first:
        torch.testing.assert_close(second[k], first[k], atol=0, rtol=0, msg=k)

    # a model of other classes is refused with the file named
    other = ws / "other_classes"
    shutil.copytree(ws / "first" / "model", other)
    meta = json.loads((other / "model.json").read_text())
    meta["class_names"] = ["carpet", "grid"]
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="other_classes.*carpet"):
        train_deco_diff.main(_single_process_args(ws, ws / "third", ("--init", str(other))))
    # and so is another size
    with pytest.raises(CheckpointError, match="first.*UNet_T.*UNet_XS|first.*UNet_XS.*UNet_T"):
        train_deco_diff.main(_single_process_args(ws, ws / "fourth", ("--init", str(ws / "first" / "model")))
                             [:-2] + ["--model-size", "UNet_XS", "--init", str(ws / "first" / "model")])
