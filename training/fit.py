"""One command for the whole recipe: good images in, a model folder the inspector opens out.

    python main.py fit --data-dir DATA --out MODEL [--time-budget 45m] [--dataset auto]
                       [--object-category all] [--vae VAE] [--model-size UNet_T]

Steps (each one line on stderr, a progress bar with the time left while the network trains):
1. check the data: enough good images per category, every training image readable, sizes;
2. the category classifier, when there is more than one category;
3. the DeCo-Diff UNet (or the DiAD network, --detector diad) under `torchrun` (one process per
   CPU core or GPU), on whole latents, with 10 % of each category's good images held out: the
   epoch count is fitted to the time budget after the first epoch, the best epoch by the held-out
   loss is kept, training stops early when it no longer improves (not before half the epochs);
4. from the held-out good images: the map normalization and threshold (`normalize_maps`) for
   DeCo-Diff, its mean and std also from up to 100 training images per category, and, when the
   data has a labelled validation split (`<category>/val/good` and `val/<defect>`), each
   category's fusion weight chosen on it (its good parts also set the score scale); the threshold
   (`threshold_from_good`) for DiAD;
5. `evaluate` on the test split when the data has one (metrics recorded in the model folder).

The budget covers steps 1-4 (evaluation is extra) and is kept within 10 %. A work folder beside
--out (MODEL.work) holds every step's output: run the same command again after a stop and it
carries on where it was (finished steps are kept; the UNet resumes from its last checkpoint with
the time it had already spent).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import read_model_json, update_model_json
from engine.imageio import ImageReadError, read_image
from engine.latent_memory import MEMORY_MAX_IMAGES

from .common import HOLDOUT_MIN, EventLog, run_reporting_errors, split_holdout
from .datasets import DatasetLayoutError, build_dataset
from .launch import SHIPPED_VAE, launch_environment, python_module_command

__all__ = ["build_arg_parser", "main", "parse_duration", "machine_recipe", "check_training_images", "FitError"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOLDOUT_SHARE = 0.1
MIN_GOOD_IMAGES = 16
# Seconds kept back from the UNet's share of the budget for the map statistics, per held-out image.
NORMALIZE_S_PER_IMAGE = 0.3
# Seconds kept back for starting the training processes and exporting the model.
LAUNCH_ALLOWANCE_S = 10.0
# Held-out validation every VAL_EVERY epochs (each costs ~20 % of a CPU epoch on ELPV); early stop
# after PATIENCE validations without gain (8 epochs), or training.common.PATIENCE_SHARE of a longer run.
VAL_EVERY = 2
PATIENCE = 4


class FitError(ValueError):
    """A problem with the user's input that stops the recipe: one line (or one per problem)."""


def parse_duration(text: str) -> float:
    """'45m', '1h30m', '90s', '2h', '600' (seconds) -> seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", value)
    if not value or parts is None or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"a duration like 45m, 1h30m or 600s, got {text!r}")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (folder: the good images)")
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder", "auto"], default="auto")
    p.add_argument("--test-dir", type=Path, default=None, help="--dataset folder: a test folder (good/, <defect>/)")
    p.add_argument("--object-category", default="all", help="a category, a comma list, or all")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--time-budget", type=parse_duration, default=parse_duration("45m"),
                   help="wall time for checking, training and calibrating (45m, 1h30m, 600s)")
    p.add_argument("--detector", choices=["deco-diff", "diad"], default="deco-diff", help="the detector to train")
    p.add_argument("--vae", type=Path, default=SHIPPED_VAE, help="VAE folder (default: resources/compact_vae, the compact VAE shipped with the app; "
                   "resources/general_vae is the general-purpose one, trained on photos and textures)")
    p.add_argument("--model-size", default=None,
                   help="model size (default: UNet_T / DiAD_T on a CPU, UNet_XS / DiAD_S on CUDA)")
    p.add_argument("--image-size", type=int, default=256, help="images are resized to this (px)")
    p.add_argument("--center-size", type=int, default=256, help="and center-cropped to this (px)")
    p.add_argument("--nproc", type=int, default=None, help="training processes (default: CPU cores / GPUs)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA when present")
    p.add_argument("--map-normalization", choices=["position", "global"], default="position",
                   help="position: each position's own good statistics (aligned parts); global: one per category")
    p.add_argument("--memory-images", type=int, default=MEMORY_MAX_IMAGES,
                   help="good training images per category kept as a latent memory, whose distance map is "
                        "mixed into the score (DeCo-Diff; share chosen on labelled validation parts); 0: none")
    p.add_argument("--val-dir", type=Path, default=None,
                   help="labelled parts (good and defective) to choose the map fusion on, in a folder of the "
                        "data's layout (its val split, else its test split; a folder dataset: good/ and "
                        "<defect>/ folders); default: the data's own val split, when it has one. Never the "
                        "parts you report on")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--no-evaluate", action="store_true", help="skip the evaluation on the test split")
    from .calibrate_runtime import add_runtime_arguments

    add_runtime_arguments(p)   # stored in model.json: the model then runs on it, not on the machine default
    p.add_argument("--events", type=Path, default=None,
                   help="append JSON-line events here (the wizard): the UNet's own events are relayed")
    return p


def machine_recipe(device: str, cores: int, gpus: int, detector: str = "deco-diff") -> dict:
    """Training settings for this machine and detector: CPU (one gloo process per core, one
    thread each) or CUDA (one NCCL process per GPU)."""
    cuda = device == "cuda"
    if detector == "diad":
        recipe = {"trainer": "training.train_diad", "model_size": "DiAD_S" if cuda else "DiAD_T",
                  "global_batch_size": 64 if cuda else 32, "lr": 2e-4 if cuda else 5e-4, "reverse_steps": None}
    else:
        recipe = {"trainer": "training.train_deco_diff", "model_size": "UNet_XS" if cuda else "UNet_T",
                  "global_batch_size": 64 if cuda else 32, "lr": 2e-4 if cuda else 5e-4,
                  "reverse_steps": 5 if cuda else 2}
    recipe.update(nproc=max(1, gpus) if cuda else max(1, min(cores, 4)), threads=None if cuda else 1)
    return recipe


def check_training_images(dataset, holdout_min: int = HOLDOUT_MIN) -> list[str]:
    """Read every training image once. Returns notes (mixed sizes); raises FitError listing every
    unreadable file and every category with too few good images."""
    problems, sizes = [], Counter()
    per_cat = Counter(s.category for s in dataset.samples)
    for cat, n in per_cat.items():
        if n < MIN_GOOD_IMAGES:
            problems.append(f"{cat}: only {n} good training images; the recipe needs at least {MIN_GOOD_IMAGES} "
                            f"({holdout_min} of them are held out to check the model)")
    for s in dataset.samples:
        try:
            img = read_image(s.path)
        except ImageReadError as e:
            problems.append(str(e))
            continue
        sizes[(img.shape[1], img.shape[0])] += 1
    if problems:
        raise FitError("\n".join(problems + ["fix or remove these, then run fit again"]))
    notes = []
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(4))
        notes.append(f"training images have {len(sizes)} different sizes ({common}); all are resized to "
                     f"{dataset.preprocess.image_size} px, so parts should fill the frame alike")
    return notes


def threshold_from_good(detector, items, quantile: float = 0.99) -> float:
    """A threshold for a model without map normalization (DiAD): the held-out good images'
    `quantile` score, raised by the same margin the normalized maps keep between the good tail
    (GOOD_TAIL_SCORE) and the threshold (DEFAULT_THRESHOLD)."""
    from engine.normalization import GOOD_TAIL_SCORE

    from .normalize_maps import DEFAULT_THRESHOLD

    scores = []
    for start in range(0, len(items), 8):
        chunk = items[start:start + 8]
        results = detector.predict([read_image(p) for p, _ in chunk], category=[c for _, c in chunk])
        scores += [r.score for r in results]
    return float(np.quantile(scores, quantile)) * DEFAULT_THRESHOLD / GOOD_TAIL_SCORE


def set_threshold(model_dir: Path, threshold: float) -> None:
    update_model_json(model_dir, lambda meta: meta.setdefault("settings", {}).update(threshold=threshold))


def _say(text: str) -> None:
    print(f"fit: {text}", file=sys.stderr, flush=True)


def _events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def _run_unet(args, recipe: dict, work: Path, categories: str, budget_s: float, classifier: Path | None,
              events: EventLog) -> Path:
    """Train the UNet under torchrun in work/unet (resuming when a checkpoint is there), with a
    progress bar over the budget; its events are relayed to `events` (all but its 'finished').
    Returns the exported model folder."""
    from tqdm import tqdm

    exp = work / "unet"
    events_path = exp / "events.jsonl"
    train_args = [
        "--dataset", args.dataset, "--data-dir", str(args.data_dir), "--object-category", categories,
        "--model-size", recipe["model_size"], "--vae", str(args.vae), "--image-size", str(args.image_size),
        "--center-size", str(args.center_size), "--epochs", "1000", "--warmup-epochs", "3",
        "--global-batch-size", str(recipe["global_batch_size"]), "--accumulation-steps", "1",
        "--lr", str(recipe["lr"]), "--log-every", "5", "--ckpt-every", "1", "--experiment-dir", str(exp),
        "--events", str(events_path), "--holdout", str(HOLDOUT_SHARE), "--holdout-min", str(HOLDOUT_MIN),
        "--val-every", str(VAL_EVERY), "--patience", str(PATIENCE), "--time-budget", f"{budget_s:.0f}",
        "--global-seed", str(args.seed), "--resume", "auto",
    ]
    if recipe["reverse_steps"]:
        train_args += ["--reverse-steps", str(recipe["reverse_steps"])]
    if args.test_dir is not None:
        train_args += ["--test-dir", str(args.test_dir)]
    if classifier is not None:
        train_args += ["--classifier", str(classifier)]
    if args.device:
        train_args += ["--device", args.device]
    env = launch_environment()
    if recipe["threads"]:
        env["OMP_NUM_THREADS"] = str(recipe["threads"])
    exp.mkdir(parents=True, exist_ok=True)
    seen = len(_events(events_path))
    relayed = 0
    with open(exp / "train.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(python_module_command(recipe["trainer"], train_args, nproc=recipe["nproc"]),
                                env=env, stdout=log, stderr=log, cwd=PROJECT_ROOT)
        t0 = time.monotonic()
        with tqdm(total=int(budget_s), desc=f"training {recipe['model_size']}", unit="s", file=sys.stderr,
                  bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]") as bar:
            try:
                while proc.poll() is None:
                    time.sleep(2)
                    bar.n = min(int(time.monotonic() - t0), int(budget_s))
                    new = _events(events_path)[seen:]
                    for e in new[relayed:]:
                        if e["event"] not in ("finished", "error"):
                            events.emit(e["event"], **{k: v for k, v in e.items() if k not in ("event", "time")})
                    relayed = len(new)
                    epochs = [e for e in new if e["event"] == "epoch"]
                    vals = [e for e in new if e["event"] == "validation"]
                    if epochs:
                        post = f"epoch {epochs[-1]['epoch']}/{epochs[-1]['epochs']} loss {epochs[-1]['loss']:.4f}"
                        if vals:
                            post += f" held-out {vals[-1]['loss']:.4f} (best epoch {vals[-1]['best_epoch']})"
                        bar.set_postfix_str(post)
                    bar.refresh()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
    if proc.returncode != 0:
        errors = [e["message"] for e in _events(events_path)[seen:] if e["event"] == "error"]
        raise FitError(f"UNet training failed ({errors[-1] if errors else 'exit code ' + str(proc.returncode)}); "
                       f"see {exp / 'train.log'}")
    return exp / "model"


def _train_classifier(args, work: Path, categories: str) -> Path:
    """The category classifier in work/classifier (kept when a previous run finished it)."""
    from . import train_classifier

    out = work / "classifier"
    if (out / "classifier.json").is_file():
        _say(f"classifier: kept from the previous run ({out})")
        return out
    cli = ["--dataset", args.dataset, "--data-dir", str(args.data_dir), "--object-category", categories,
           "--out", str(out), "--epochs", "15", "--batch-size", "32", "--image-size", "128",
           "--global-seed", str(args.seed), "--events", str(work / "classifier_events.jsonl")]
    if args.device:
        cli += ["--device", args.device]
    if train_classifier.main(cli) != 0:
        raise FitError("the category classifier could not be trained; see the messages above")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    events = EventLog(args.events)
    try:
        return run_reporting_errors("fit", events, lambda: _fit(args, events))
    finally:
        events.close()


def _fit(args, events: EventLog) -> int:
    from engine.loading import load_model

    from .normalize_maps import (DEFAULT_THRESHOLD, TRAIN_STATS_IMAGES, fit_model_normalization,
                                 training_items, write_normalization)

    from .calibrate_runtime import calibrate_after_fit, checked_overrides, store_runtime_setting

    started = time.monotonic()
    runtime = checked_overrides(args)
    cuda = torch.cuda.is_available() if args.device is None else args.device == "cuda"
    recipe = machine_recipe("cuda" if cuda else "cpu", os.cpu_count() or 1, torch.cuda.device_count() if cuda else 0,
                            args.detector)
    if args.model_size:
        recipe["model_size"] = args.model_size
    if args.nproc:
        recipe["nproc"] = args.nproc
    if args.dataset == "auto":
        from .datasets import detect_layout

        args.dataset = detect_layout(args.data_dir)
    if not args.vae.is_dir():
        raise FitError(f"{args.vae}: no VAE folder there (--vae)")
    work = args.out.parent / (args.out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)

    # 1. the data
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    from engine.preprocess import PreprocessConfig

    pre = PreprocessConfig(image_size=args.image_size, center_size=args.center_size)
    train = build_dataset(args.dataset, args.data_dir, categories, "train", pre, augment=False,
                          test_dir=args.test_dir)
    cat_arg = args.object_category if args.dataset != "folder" else (
        "custom" if args.object_category == "all" else args.object_category)
    _say(f"{len(train)} good training images in {len(train.categories)} categor"
         f"{'y' if len(train.categories) == 1 else 'ies'} ({', '.join(train.categories)}); "
         f"{recipe['model_size']} on {'CUDA' if cuda else 'the CPU'}, {recipe['nproc']} process(es); "
         f"budget {args.time_budget / 60:.0f} min")
    for note in check_training_images(train):
        _say(f"note: {note}")

    # 2. the classifier (several categories)
    classifier = None
    if len(train.categories) > 1:
        classifier = _train_classifier(args, work, cat_arg)

    # 3. the UNet, in what is left of the budget less the calibration
    n_held = len(split_holdout(train.samples, HOLDOUT_SHARE, HOLDOUT_MIN, args.seed)[1])
    labelled = []
    n_calibration = n_held
    if args.detector == "deco-diff":
        labelled = validation_parts(args, categories, pre, with_masks=True)
        per_cat = Counter(s.category for s in train.samples if not s.label)
        n_calibration += len(labelled) + sum(min(n, TRAIN_STATS_IMAGES) for n in per_cat.values())
    spent = time.monotonic() - started
    unet_budget = args.time_budget - spent - NORMALIZE_S_PER_IMAGE * n_calibration - LAUNCH_ALLOWANCE_S
    if unet_budget < 30:
        raise FitError(f"a time budget of {args.time_budget:.0f} s leaves {unet_budget:.0f} s for the UNet; give more")
    events.emit("stage", stage="unet", budget_s=unet_budget)
    model_dir = _run_unet(args, recipe, work, cat_arg, unet_budget, classifier, events)
    trained = read_model_json(model_dir).get("training", {})
    selected = trained.get("selected", {})
    _say(f"{args.detector}: {trained.get('epochs', '?')} epochs, kept epoch {trained.get('epoch', '?')}"
         + (f" (held-out loss {selected['loss']:.4f})" if "loss" in selected else ""))

    # 4. map normalization (DeCo-Diff) and the threshold from the held-out good images
    holdout = json.loads((work / "unet" / "holdout.json").read_text(encoding="utf-8"))
    items = [(h["path"], h["category"]) for h in holdout]
    detector = load_model(model_dir, device="cuda" if cuda else "cpu")
    if args.detector == "deco-diff":
        memory_items = training_items(train, items, args.memory_images) if args.memory_images > 0 else []
        normalization = fit_model_normalization(detector, items, args.map_normalization,
                                                train_items=training_items(train, items, TRAIN_STATS_IMAGES),
                                                labelled=labelled, memory_items=memory_items)
        threshold = DEFAULT_THRESHOLD
        entry = write_normalization(model_dir, normalization, threshold)
        weights = {c: float(normalization.image_weight[k]) for k, c in enumerate(detector.class_names)}
        events.emit("normalization", mode=args.map_normalization, images=entry["images"], threshold=threshold,
                    train_images=entry.get("train_images"), image_weight=weights)
        if labelled:
            by = sorted({d.get("by", "") for d in (normalization.details or {}).get("fusion", {}).values()} - {""})
            _say(f"fusion chosen on {len(labelled)} labelled validation parts" + (f" by {' / '.join(by)}" if by else "")
                 + f": image weight {weights} (0.5 = geometric mean, 0 = latent discrepancy only)")
        if normalization.memory is not None:
            described = normalization.memory.describe()
            events.emit("latent_memory", **described, details=entry.get("memory"))
            _say(f"latent memory of {described['images']} good training images per category, share in the "
                 f"score {described['weight']}" + (" (chosen on the labelled validation parts)" if labelled else ""))
        for note in entry.get("notes", []):
            _say(f"note: {note}")
    else:
        threshold = threshold_from_good(detector, items)
        set_threshold(model_dir, threshold)
        events.emit("threshold", threshold=threshold, images=len(items))
    fit_seconds = time.monotonic() - started
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(model_dir, args.out)
    update_model_json(args.out, lambda meta: meta.update(
        model_id=args.out.name,
        recipe={"command": "python main.py fit " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["fit"] else sys.argv[1:]),
                "time_budget_s": args.time_budget, "seconds": round(fit_seconds, 1), "machine": recipe,
                "held_out_images": len(holdout)}))
    _say(f"model written to {args.out} in {fit_seconds / 60:.1f} min (budget {args.time_budget / 60:.1f} min); "
         f"threshold {threshold:.4g}")
    events.emit("finished", model_dir=str(args.out), seconds=fit_seconds, epoch=trained.get("epochs"),
                selected_epoch=trained.get("epoch"))

    # 4b. OpenVINO int8: calibration images beside the model and its quantized networks; the
    # runtime asked for, if any
    calibrate_after_fit(args.out, [(str(s.path), s.category) for s in train.samples if not s.label], items, "cpu", _say)
    store_runtime_setting(args.out, runtime, _say)

    # 5. evaluation on the test split
    if not args.no_evaluate and _has_test_split(args):
        from . import evaluate

        cli = ["--model", str(args.out), "--dataset", args.dataset, "--data-dir", str(args.data_dir), "--record"]
        if args.test_dir is not None:
            cli += ["--test-dir", str(args.test_dir)]
        if args.object_category != "all":
            cli += ["--object-category", args.object_category]
        if args.device:
            cli += ["--device", args.device]
        if args.events is not None:
            cli += ["--events", str(args.events)]
        events.close()
        return evaluate.main(cli)
    return 0


def validation_parts(args, categories, preprocess, with_masks: bool = False) -> list[tuple]:
    """The labelled parts to choose settings on: --val-dir's val split, else its test split (a
    folder dataset: the folder itself); without --val-dir the data's own val split, if any. A
    --val-dir without both good and defective parts is a FitError. `with_masks`: each part's mask
    path too (see normalize_maps.labelled_items)."""
    from functools import partial

    from .normalize_maps import labelled_items

    labelled = partial(labelled_items, with_masks=with_masks)
    if args.val_dir is None:
        return [] if args.dataset == "folder" else labelled(args.dataset, args.data_dir, categories, "val", preprocess)
    if not args.val_dir.is_dir():
        raise FitError(f"{args.val_dir}: no such folder (--val-dir)")
    if args.dataset == "folder":
        parts = labelled("folder", args.data_dir, categories, "test", preprocess, test_dir=args.val_dir)
    else:
        parts = (labelled(args.dataset, args.val_dir, categories, "val", preprocess)
                 or labelled(args.dataset, args.val_dir, categories, "test", preprocess))
    if not parts:
        raise FitError(f"{args.val_dir}: no good and defective parts of the training categories there (--val-dir)")
    return parts


def _has_test_split(args) -> bool:
    if args.dataset == "folder":
        return args.test_dir is not None
    try:
        categories = "all" if args.object_category == "all" else args.object_category.split(",")
        return len(build_dataset(args.dataset, args.data_dir, categories, "test", augment=False)) > 0
    except (DatasetLayoutError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
