"""Reproduce the bundled demo model from scratch with the project's own training commands.

    python scripts/make_demo_model.py [--data resources/demo_data] [--out resources/demo_model] [--work /tmp/demo]

Stages (each one the public entry point a user would run; pass --nproc 2 to use torchrun):
 1. training.train_vae         the compact VAE on the demo train images plus scikit-image's
                               bundled photos and textures, thin random curves drawn on half of
                               the crops (a codec must reproduce defects too; --vae-init DIR
                               fine-tunes an earlier VAE instead of starting anew)
 2. training.train_classifier  the category classifier
 3. training.train_deco_diff   a gated UNet_T on cached latents of the train images: first on
                               random 16x16 latent windows, then on whole 32x32 latents, then
                               longer on whole latents (resumed under a longer cosine schedule)
 4. training.calibrate_scores  per-category score scales from good images written with another
                               seed (one threshold then fits all three products)
 5. training.evaluate          on the demo test split, recorded into the model folder
 6. training.train_diad        with --diad-out: the DiAD demo model on the same VAE, evaluated too
The result is copied to --out (unet.safetensors, vae/, classifier/, model.json with the
evaluation and the exact commands used).
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


def run(cmd: list[str], log: list[dict]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    # one OpenMP thread per process: on small CPUs shared with other work, oversubscribed
    # OpenMP threads slow training down by an order of magnitude (seen here: 25 s vs 1 s a step)
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "1")})
    log.append({"command": " ".join(cmd), "seconds": round(time.time() - t0, 1)})


def module_cmd(module: str, nproc: int) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module]
    return [sys.executable, "-m", module]


def publish(model_dir: Path, out: Path, data: Path, eval_dir: Path, detector: str, log: list[dict],
            calibration: Path | None = None) -> None:
    """Copy a trained model folder to `out`; with `calibration` (good images in an MVTec test split)
    give it per-category score scales and their common threshold (training.calibrate_scores);
    evaluate it on the demo test split (recorded in its model.json); without calibration set its
    threshold to the F1-optimal one; record how it was made."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    if calibration is not None:
        run([sys.executable, "-m", "training.calibrate_scores", "--model", str(out), "--data-dir", str(calibration),
             "--split", "test"], log)
    run([sys.executable, "-m", "training.evaluate", "--model", str(out), "--detector", detector,
         "--dataset", "mvtec", "--data-dir", str(data), "--out", str(eval_dir), "--record"], log)
    meta_path = out / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model_id"] = "demo-" + meta.get("model_id", "model")
    suggested = json.loads((eval_dir / "metrics.json").read_text())["suggested_threshold"]
    if calibration is None and suggested.get("f1_optimal") is not None:
        meta["settings"]["threshold"] = round(float(suggested["f1_optimal"]), 4)
    meta["reproduce"] = {"script": "scripts/make_demo_model.py", "commands": list(log)}
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"demo model written to {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "resources" / "demo_data")
    p.add_argument("--out", type=Path, default=REPO / "resources" / "demo_model")
    p.add_argument("--work", type=Path, default=Path("/tmp/deco_demo_model"))
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--vae-epochs", type=int, default=80)
    p.add_argument("--vae-extra-images", nargs="*", default=["skimage"],
                   help="general images mixed into VAE training (training.train_vae --extra-images)")
    p.add_argument("--vae-line-augment", type=float, default=0.5, help="training.train_vae --line-augment")
    p.add_argument("--vae-init", type=Path, default=None, help="fine-tune this VAE folder instead of a new one")
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--unet-epochs", type=int, default=180, help="epochs on 16x16 latent windows")
    p.add_argument("--full-latent-epochs", type=int, default=60, help="then epochs on whole latents")
    p.add_argument("--continue-epochs", type=int, default=160,
                   help="then this many more whole-latent epochs under a longer cosine schedule (a third "
                        "run resuming the second with a larger --epochs; 0 = none)")
    p.add_argument("--diad-out", type=Path, default=None, help="also train the DiAD demo model into this folder")
    p.add_argument("--diad-epochs", type=int, default=250)
    p.add_argument("--skip-unet", action="store_true", help="reuse WORK/unet (e.g. to add the DiAD model)")
    p.add_argument("--model-size", default="UNet_T")
    p.add_argument("--skip-vae", action="store_true", help="reuse WORK/vae")
    p.add_argument("--skip-classifier", action="store_true", help="reuse WORK/classifier")
    args = p.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    if not args.skip_vae:
        run(module_cmd("training.train_vae", args.nproc) + [
            "--data-dir", str(args.data), "--out", str(work / "vae"), "--epochs", str(args.vae_epochs),
            "--batch-size", "16", "--crop", "128", "--events", str(work / "vae_events.jsonl")]
            + (["--extra-images", *args.vae_extra_images] if args.vae_extra_images else [])
            + ["--line-augment", str(args.vae_line_augment)]
            + (["--init", str(args.vae_init)] if args.vae_init else []), log)
    if not args.skip_classifier:
        run(module_cmd("training.train_classifier", args.nproc) + [
            "--data-dir", str(args.data), "--out", str(work / "classifier"), "--epochs", str(args.classifier_epochs),
            "--batch-size", "32", "--image-size", "128", "--events", str(work / "classifier_events.jsonl")], log)
    exp = work / "unet"
    common = ["--dataset", "mvtec", "--data-dir", str(args.data), "--vae", str(work / "vae"),
              "--classifier", str(work / "classifier"), "--warmup-epochs", "5", "--global-batch-size", "32",
              "--accumulation-steps", "1", "--lr", "5e-4", "--log-every", "5", "--experiment-dir", str(exp),
              "--events", str(work / "unet_events.jsonl")]
    if not args.skip_unet:
        if exp.exists():
            shutil.rmtree(exp)
        run(module_cmd("training.train_deco_diff", args.nproc) + common + [
            "--model-size", args.model_size, "--epochs", str(args.unet_epochs), "--latent-crop", "16",
            "--ckpt-every", "20"], log)
        # then whole 32x32 latents (the windows alone leave seams and miss the object's context)
        run(module_cmd("training.train_deco_diff", args.nproc) + common + [
            "--model-size", args.model_size, "--epochs", str(args.unet_epochs + args.full_latent_epochs),
            "--ckpt-every", "5", "--resume", "auto"], log)
        if args.continue_epochs:
            run(module_cmd("training.train_deco_diff", args.nproc) + common + [
                "--model-size", args.model_size,
                "--epochs", str(args.unet_epochs + args.full_latent_epochs + args.continue_epochs),
                "--ckpt-every", "10", "--resume", "auto"], log)
    # good images of another seed for the per-category score scales (never the test split)
    calibration = work / "calibration_data"
    run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), "--out", str(calibration), "--seed", "101",
         "--train-count", "1", "--test-good", "20", "--per-defect", "7"], log)
    publish(exp / "model", args.out, args.data, work / "evaluation", "deco-diff", log, calibration=calibration)
    if args.diad_out is not None:
        diad = work / "diad"
        if diad.exists():
            shutil.rmtree(diad)
        run(module_cmd("training.train_diad", args.nproc) + [
            "--dataset", "mvtec", "--data-dir", str(args.data), "--model-size", "DiAD_T",
            "--vae", str(work / "vae"), "--classifier", str(work / "classifier"), "--epochs", str(args.diad_epochs),
            "--warmup-epochs", "5", "--global-batch-size", "32", "--lr", "5e-4", "--latent-crop", "16",
            "--ckpt-every", "25", "--log-every", "6", "--experiment-dir", str(diad),
            "--events", str(work / "diad_events.jsonl")], log)
        publish(diad / "model", args.diad_out, args.data, work / "evaluation_diad", "diad", log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
