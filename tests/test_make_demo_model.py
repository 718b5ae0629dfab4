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
