"""scripts/make_demo_model.py's last stage: the fitted model evaluated on unseen defect kinds and
published under the demo's name, with the commands that made it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_demo_model", ROOT / "scripts" / "make_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_names_the_model_records_unseen_metrics_and_replaces_the_old_folder(tmp_path, monkeypatch):
    mod = _script()
    model = tmp_path / "work" / "model"
    (model / "openvino_cache").mkdir(parents=True)
    (model / "unet.safetensors").write_bytes(b"weights")
    (model / "model.json").write_text(json.dumps({"model_id": "model", "unet": {"size": "UNet_T"},
                                                  "evaluation": {"mean": {"image_auroc": 0.99}}}))
    out = tmp_path / "demo_model"
    out.mkdir()
    (out / "old.txt").write_text("previous demo")
    eval_dir = tmp_path / "work" / "evaluation_unseen"
    commands = []

    def fake_run(cmd, log):
        commands.append(cmd)
        eval_dir.mkdir(parents=True)
        (eval_dir / "metrics.json").write_text(json.dumps({"mean": {"image_auroc": 1.0, "pixel_aupro": 0.7}}))
        log.append({"command": " ".join(cmd), "seconds": 1.0})

    monkeypatch.setattr(mod, "run", fake_run)
    log = [{"command": "python main.py fit ...", "seconds": 5400.0}]
    mod.publish(model, out, tmp_path / "unseen", eval_dir, "deco-diff", log)
    assert commands[0][commands[0].index("--data-dir") + 1] == str(tmp_path / "unseen")
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_id"] == f"{mod.DEMO_VERSION}-UNet_T"
    assert meta["evaluation"]["mean"]["image_auroc"] == 0.99   # the test split's figures stay
    assert meta["evaluation"]["unseen_defect_kinds"]["pixel_aupro"] == 0.7
    assert [c["command"] for c in meta["reproduce"]["commands"]][0] == "python main.py fit ..."
    assert not (out / "old.txt").exists() and not (out / "openvino_cache").exists()
    assert (out / "unet.safetensors").read_bytes() == b"weights" and not out.with_name("demo_model.new").exists()


def test_a_new_small_vae_and_the_live_size_reach_train_vae_and_fit(tmp_path, monkeypatch):
    """`--new-vae small --model-size UNet_live` (the live-speed demo model): the VAE is trained from
    scratch at that size (not fine-tuned from --vae), and fit gets the size; DiAD would not."""
    mod = _script()
    commands = []

    def fake_run(cmd, log):
        commands.append([str(c) for c in cmd])
        if "--out" in cmd and "train_vae" not in " ".join(map(str, cmd)):
            Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        log.append({"command": " ".join(map(str, cmd)), "seconds": 1.0})

    published = []
    monkeypatch.setattr(mod, "run", fake_run)
    monkeypatch.setattr(mod, "publish", lambda model, out, *rest: published.append((model, out)))
    monkeypatch.setattr("sys.argv", ["make_demo_model.py", "--work", str(tmp_path / "work"), "--out",
                                     str(tmp_path / "demo"), "--new-vae", "small", "--model-size", "UNet_live"])
    assert mod.main() == 0
    vae_cmd = next(c for c in commands if "training.train_vae" in c)
    assert vae_cmd[vae_cmd.index("--size") + 1] == "small" and "--init" not in vae_cmd
    assert vae_cmd[vae_cmd.index("--epochs") + 1] == str(mod.NEW_VAE_EPOCHS)
    fit_cmd = next(c for c in commands if "fit" in c)
    assert fit_cmd[fit_cmd.index("--model-size") + 1] == "UNet_live"
    assert fit_cmd[fit_cmd.index("--vae") + 1] == str(tmp_path / "work" / "vae")
    assert published == [(tmp_path / "work" / "model", tmp_path / "demo")]
