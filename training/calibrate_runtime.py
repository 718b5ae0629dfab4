"""Calibrate a model for the OpenVINO int8 runtime: store some of its own good training images
beside it (`calibration.npz`), quantize its networks with NNCF on them (cached beside the model)
and check every runtime / precision on held-out good images (`engine.runtime_choice`).

    python main.py calibrate-runtime --model MODEL --data-dir DATA [--per-category 8]

`fit` calls `calibrate_model_runtime` at its end; this command does the same for existing models.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine.imageio import read_image
from engine.openvino_runtime import CalibrationSet, openvino_problem
from engine.preprocess import preprocess_frames
from engine.runtime_choice import RuntimeChoice, check_candidates

from .common import EventLog, run_entry
from .datasets import build_dataset

__all__ = ["QUANTIZE_PER_CATEGORY", "CHECK_PER_CATEGORY", "calibration_set", "calibrate_model_runtime",
           "pick_items", "calibrate_after_fit", "add_runtime_arguments", "runtime_overrides", "checked_overrides",
           "store_runtime_setting", "main"]

# good images per category NNCF calibrates on, and held out of it for the accuracy check
QUANTIZE_PER_CATEGORY = 8
CHECK_PER_CATEGORY = 3


def _draw(items: Sequence[tuple[str, str]], per_category: int, seed: int = 0) -> dict[str, list[str]]:
    """Per category, a fixed-seed draw of up to `per_category` distinct paths."""
    by_cat: dict[str, list[str]] = {}
    for path, cat in items:
        by_cat.setdefault(cat, []).append(str(path))
    return {cat: random.Random(seed).sample(sorted(paths), min(len(paths), per_category))
            for cat, paths in sorted(by_cat.items())}


def pick_items(items: Sequence[tuple[str, str]], quantize_per_category: int, check_per_category: int,
               seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, category) pairs -> (quantization items, check items): per category, a fixed-seed draw
    of `quantize_per_category` + `check_per_category` distinct images, split in that order (at
    least one image of each category is quantized on)."""
    quantize, check = [], []
    for cat, drawn in _draw(items, quantize_per_category + check_per_category, seed).items():
        n_check = min(check_per_category, max(0, len(drawn) - 1))
        quantize += [(p, cat) for p in drawn[:len(drawn) - n_check]]
        check += [(p, cat) for p in drawn[len(drawn) - n_check:]]
    return quantize, check


def calibrate_after_fit(model_dir: Path, train_items: Sequence[tuple[str, str]],
                        held_out_items: Sequence[tuple[str, str]], device: str | None, say=print) -> None:
    """fit's last step: calibration images drawn from the training images (int8) and from the
    held-out good images (the accuracy check), written beside the model; the int8 networks are
    quantized on them when first asked for (a few seconds to a minute, then cached), which keeps
    this step inside fit's time budget. Never fails the fit: a problem is said as a note."""
    held = {p for p, _ in held_out_items}
    quantize = [(p, c) for c, ps in _draw([i for i in train_items if i[0] not in held], QUANTIZE_PER_CATEGORY).items()
                for p in ps]
    check = [(p, c) for c, ps in _draw(held_out_items, CHECK_PER_CATEGORY).items() for p in ps]
    try:
        calibrate_model_runtime(model_dir, quantize, check, device, say, check_all=False)
    except Exception as e:  # noqa: BLE001 - the model is written; int8 is an extra
        say(f"note: the OpenVINO int8 calibration failed ({type(e).__name__}: {e}); "
            f"run `python main.py calibrate-runtime --model {model_dir} --data-dir DATA` later")


def calibration_set(model, quantize: Sequence[tuple[str, str]], check: Sequence[tuple[str, str]]) -> CalibrationSet:
    """The preprocessed crops (uint8) and class ids of the images, the `check` ones last (held out)."""
    items = list(quantize) + list(check)
    if not quantize:
        raise ValueError("no good images to calibrate on")
    frames = [read_image(p) for p, _ in items]
    images = preprocess_frames(frames, model.preprocess)
    crops = ((images * 0.5 + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ids = np.array([model.class_id(c) for _, c in items], dtype=np.int64)
    return CalibrationSet(np.ascontiguousarray(crops), ids, held_out=len(check))


def calibrate_model_runtime(model_dir: Path, quantize: Sequence[tuple[str, str]], check: Sequence[tuple[str, str]],
                            device: str | None = "cpu", say=print, check_all: bool = True) -> RuntimeChoice | None:
    """Write `model_dir`/calibration.npz from the (path, category) images, build the OpenVINO
    networks (int8 quantized on `quantize`) into the model's cache and check every runtime and
    precision on `check` (see engine.runtime_choice). With `check_all` off only the images are
    written. None (with a line said) when OpenVINO is not installed or `check_all` is off."""
    from engine.loading import load_model

    model = load_model(model_dir, device=device)
    calibration = calibration_set(model, quantize, check)
    path = calibration.save(Path(model_dir))
    say(f"calibration: {len(quantize)} good images for int8, {len(check)} held out for the check -> {path}")
    if not check_all:
        return None
    problem = openvino_problem()
    if problem:
        say(f"calibration: {problem}; the int8 networks are built when OpenVINO is installed")
        return None
    notices: list[str] = []
    model = load_model(model_dir, device=device)
    model.on_notice = notices.append
    choice = check_candidates(model, calibration)
    for line in notices:
        say(f"calibration: note: {line}")
    say(f"calibration: {choice.reason}")
    return choice


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """--runtime and --precision (inspect, evaluate): how the networks run (engine.openvino_runtime)."""
    p.add_argument("--runtime", choices=["torch", "openvino"], default=None,
                   help="run the networks on PyTorch or OpenVINO (default: the model's setting; inspect, station and "
                        "the window: else the fastest one that keeps the verdicts on this machine, decided once)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8", "fp16"], default=None,
                   help="network precision; int8 = OpenVINO with NNCF quantization (needs the model's calibration "
                        "images: python main.py calibrate-runtime); fp16 = torch autocast (CUDA)")


def runtime_overrides(args) -> dict:
    """The settings --runtime / --precision ask for ({} when neither was given; int8 implies openvino)."""
    out = {}
    if getattr(args, "precision", None):
        out["precision"] = args.precision
    runtime = getattr(args, "runtime", None) or ("openvino" if out.get("precision") == "int8" else None)
    if runtime:
        out["runtime"] = runtime
        out.setdefault("precision", "fp32")
    return out


def checked_overrides(args) -> dict:
    """runtime_overrides(args), checked: ValueError naming the problem for a pair the engine does
    not have (e.g. torch int8)."""
    from engine.openvino_runtime import check_runtime_setting

    out = runtime_overrides(args)
    if out:
        check_runtime_setting(out["runtime"], out["precision"])
    return out


def store_runtime_setting(model_dir: Path, overrides: dict, say=print) -> None:
    """Write --runtime / --precision into model.json's settings: the model then runs on them
    everywhere (inspect, the window) instead of the machine default. {}: nothing changes."""
    from engine.checkpoint import update_model_json

    if not overrides:
        return
    update_model_json(model_dir, lambda meta: meta.setdefault("settings", {}).update(overrides))
    say(f"runtime: the model runs on {overrides['runtime']} {overrides['precision']} (model.json settings; "
        f"the machine default is not used)")


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calibrate-runtime", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model folder (calibration.npz is written into it)")
    p.add_argument("--data-dir", type=Path, required=True, help="the dataset the model was trained on")
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder", "auto"], default="auto")
    p.add_argument("--object-category", default="all")
    p.add_argument("--per-category", type=int, default=QUANTIZE_PER_CATEGORY,
                   help="good training images per category to quantize on")
    p.add_argument("--check-per-category", type=int, default=CHECK_PER_CATEGORY,
                   help="good training images per category held out for the accuracy check")
    p.add_argument("--images-only", action="store_true",
                   help="only write the calibration images (seconds); the networks are quantized and the "
                        "runtimes checked when the model is first opened on a machine")
    p.add_argument("--device", default="cpu")
    p.add_argument("--events", type=Path, default=None)
    add_runtime_arguments(p)   # stored in model.json: the model then runs on it, not on the machine default
    return p


def main(argv: list[str] | None = None) -> int:
    return run_entry("calibrate-runtime", argv, build_arg_parser, lambda args, _ctx, events: _run(args, events),
                     distributed=False)


def _run(args, events: EventLog) -> int:
    from engine.preprocess import PreprocessConfig

    from .datasets import detect_layout

    if args.per_category < 1 or args.check_per_category < 0:
        raise ValueError("--per-category must be at least 1 and --check-per-category at least 0")
    overrides = checked_overrides(args)
    kind = detect_layout(args.data_dir) if args.dataset == "auto" else args.dataset
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    train = build_dataset(kind, args.data_dir, categories, "train", PreprocessConfig(), augment=False)
    good = [(str(s.path), s.category) for s in train.samples if not s.label]
    quantize, check = pick_items(good, args.per_category, args.check_per_category)
    events.emit("started", model=str(args.model), images=len(quantize) + len(check))
    calibrate_model_runtime(args.model, quantize, check, args.device, check_all=not args.images_only)
    store_runtime_setting(args.model, overrides)
    events.emit("finished", model_dir=str(args.model), **overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
