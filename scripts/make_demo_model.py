"""Rebuild the bundled demo model with the product's own recipe (`python main.py fit`).

    python scripts/make_demo_model.py [--data resources/demo_data] [--out resources/demo_model]
                                      [--work /tmp/deco_demo_model] [--time-budget 90m]

Stages (each one the public command a user would run):
 1. scripts/make_demo_data.py --seed 101   a labelled validation split (other parts than the
                                           bundled ones): fit chooses each product's fusion
                                           weight and latent-memory share on it
 2. main.py fit                            classifier, UNet_T on whole latents within the time
                                           budget (held-out good parts pick the epoch), map
                                           normalization, latent memory, threshold, runtime
                                           calibration set, evaluation on the demo test split
 3. scripts/make_demo_data.py --unseen     defect kinds no model saw ('burn', 'dent'), and
    training.evaluate                      the model evaluated on them (recorded in model.json)
 4. the model folder copied to --out, named DEMO_VERSION-<size> (demo-v6-UNet_live), with the
    commands that made it.
With --diad-out the DiAD demo model goes through the same recipe (`fit --detector diad`).
The VAE is `--vae` (default: the shipped compact VAE); `--train-vae` fine-tunes it on the demo images first
(training.train_vae --init, with scikit-image's photos and drawn curves mixed in); `--new-vae SIZE`
trains a new compact VAE of that size from scratch the same way (`--new-vae small --model-size
UNet_live`: the live-speed demo model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.vae import COMPACT_VAE_SIZES  # noqa: E402
from training.launch import SHIPPED_VAE  # noqa: E402
DEMO_VERSION = "demo-v6"
# fit's image geometry for the demo: 288 px resize, 256 px center crop (the parts fill the crop)
IMAGE_SIZE, CENTER_SIZE = 288, 256
# the validation split's generator settings (a different seed from the bundled data)
VAL_DATA_ARGS = ["--seed", "101", "--train-count", "1", "--test-good", "20", "--per-defect", "7"]
FINE_TUNE_VAE_EPOCHS = 20   # --train-vae: fine-tuning --vae on the demo images
NEW_VAE_EPOCHS = 300        # --new-vae: a compact VAE from scratch (small: ~4 s an epoch on 2 cores)


def run(cmd: list[str], log: list[dict]) -> None:
    """Run one stage in the repository, echo it, and record it with its wall time."""
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True, env=dict(os.environ))
    log.append({"command": " ".join(cmd), "seconds": round(time.time() - t0, 1)})


def fit(args, detector: str, vae: Path, val: Path, model: Path, log: list[dict]) -> None:
    cmd = [sys.executable, "main.py", "fit", "--data-dir", str(args.data), "--out", str(model),
           "--image-size", str(IMAGE_SIZE), "--center-size", str(CENTER_SIZE), "--time-budget", args.time_budget,
           "--vae", str(vae), "--detector", detector]
    if detector == "deco-diff":
        cmd += ["--val-dir", str(val)]
    if args.nproc:
        cmd += ["--nproc", str(args.nproc)]
    if detector == "deco-diff" and args.model_size:
        cmd += ["--model-size", args.model_size]
    run(cmd, log)


def publish(model: Path, out: Path, unseen: Path, eval_dir: Path, detector: str, log: list[dict]) -> None:
    """Evaluate `model` on the unseen defect kinds (recorded in its model.json), then copy it to
    `out` under the demo's name with the commands that made it."""
    run([sys.executable, "-m", "training.evaluate", "--model", str(model), "--detector", detector,
         "--dataset", "mvtec", "--data-dir", str(unseen), "--out", str(eval_dir)], log)
    staged = out.with_name(out.name + ".new")
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(model, staged, ignore=shutil.ignore_patterns("openvino_cache"))
    meta_path = staged / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    size = meta.get("unet", {}).get("size") or meta.get("network", {}).get("size") or detector
    meta["model_id"] = f"{DEMO_VERSION}-{size}"
    unseen_metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    meta.setdefault("evaluation", {})["unseen_defect_kinds"] = unseen_metrics.get("mean", {})
    meta["reproduce"] = {"script": "scripts/make_demo_model.py", "commands": list(log)}
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    print(f"demo model written to {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "resources" / "demo_data")
    p.add_argument("--out", type=Path, default=REPO / "resources" / "demo_model")
    p.add_argument("--work", type=Path, default=Path("/tmp/deco_demo_model"),
                   help="work folder (fit's MODEL.work inside resumes a stopped run)")
    p.add_argument("--time-budget", default="90m", help="fit --time-budget")
    p.add_argument("--nproc", type=int, default=0, help="training processes (default: fit's, one per core)")
    p.add_argument("--vae", type=Path, default=SHIPPED_VAE)
    p.add_argument("--model-size", default=None, help="fit --model-size for the DeCo-Diff model (default: fit's)")
    p.add_argument("--train-vae", action="store_true", help="fine-tune --vae on the demo images first")
    p.add_argument("--new-vae", choices=list(COMPACT_VAE_SIZES), default=None,
                   help="train a new compact VAE of this size from scratch instead (--vae is then not used)")
    p.add_argument("--vae-epochs", type=int, default=None, help="VAE epochs (default: 20 fine-tuning, 300 new)")
    p.add_argument("--diad-out", type=Path, default=None, help="also rebuild the DiAD demo model into this folder")
    args = p.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    vae = work / "vae"
    if vae.exists():
        shutil.rmtree(vae)
    if args.train_vae or args.new_vae:
        start = ["--size", args.new_vae] if args.new_vae else ["--init", str(args.vae)]
        epochs = args.vae_epochs or (NEW_VAE_EPOCHS if args.new_vae else FINE_TUNE_VAE_EPOCHS)
        run([sys.executable, "-m", "training.train_vae", "--data-dir", str(args.data), "--out", str(vae), *start,
             "--epochs", str(epochs), "--batch-size", "16", "--crop", "128",
             "--extra-images", "skimage", "--line-augment", "0.5", "--events", str(work / "vae_events.jsonl")], log)
    else:
        shutil.copytree(args.vae, vae)   # --out may be the folder the VAE comes from
    val, unseen = work / "val_data", work / "unseen_data"
    if not val.exists():
        run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), "--out", str(val), *VAL_DATA_ARGS], log)
    if not unseen.exists():
        run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), "--unseen", str(unseen)], log)
    fit(args, "deco-diff", vae, val, work / "model", log)
    publish(work / "model", args.out, unseen, work / "evaluation_unseen", "deco-diff", log)
    if args.diad_out is not None:
        diad_log: list[dict] = []
        fit(args, "diad", vae, val, work / "diad", diad_log)
        publish(work / "diad", args.diad_out, unseen, work / "evaluation_unseen_diad", "diad", diad_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
