"""Fit a DeCo-Diff model's map normalization on good images it was not trained on.

    python -m training.normalize_maps --model MODEL_DIR --data-dir DATA --split val [--mode position]
    python -m training.normalize_maps --model MODEL_DIR --images-list RUN/holdout.json

The good images are split in two, alternately by name within each category: the first half
gives each category's mean and std of the raw discrepancies (see `engine.normalization`), the
second half the score scale that puts its 99th-percentile score at 0.4; the model's threshold
becomes 0.5 (`DEFAULT_THRESHOLD`), so the review band (0.4-0.5) starts at the good parts' tail.
Per-category score scales (`calibrate_scores`) are dropped: the normalization replaces them.
Writes normalization.safetensors and model.json's `normalization` entry into the model folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from engine.checkpoint import read_model_json, update_model_json
from engine.imageio import read_image
from engine.normalization import GOOD_TAIL_SCORE, NORMALIZATION_MODES, MapNormalization, fit_normalization
from engine.preprocess import preprocess_frames

from .common import EventLog, run_reporting_errors
from .datasets import build_dataset

__all__ = ["build_arg_parser", "main", "fit_model_normalization", "split_halves", "DEFAULT_THRESHOLD"]

# The fail threshold of a normalized model: 25 % above the good parts' 99th-percentile score (0.4).
DEFAULT_THRESHOLD = 0.5
BATCH = 8


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="normalize_maps", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Fit a DeCo-Diff model's anomaly-map normalization on held-out good images.")
    p.add_argument("--model", type=Path, required=True, help="DeCo-Diff model folder (changed in place)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset whose good images to use")
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder", "auto"], default="auto")
    p.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="which split's good images (only images the UNet did not train on give a fair scale)")
    p.add_argument("--object-category", default="all")
    p.add_argument("--images-list", type=Path, default=None,
                   help="a JSON list of {path, category} (a training run's holdout.json) instead of --data-dir")
    p.add_argument("--mode", choices=NORMALIZATION_MODES, default="position",
                   help="position: each position's own statistics (aligned parts); global: one value per category")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="fail threshold stored in the model")
    p.add_argument("--device", default=None)
    p.add_argument("--events", type=Path, default=None)
    return p


def split_halves(items: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, category) pairs -> (statistics half, scale half): alternately by path within each
    category, so both halves hold every category."""
    by_cat: dict[str, list[str]] = {}
    for path, cat in items:
        by_cat.setdefault(cat, []).append(path)
    first, second = [], []
    for cat, paths in by_cat.items():
        paths = sorted(paths)
        first += [(p, cat) for p in paths[0::2]]
        second += [(p, cat) for p in paths[1::2]]
    return first, second


def _raw_maps(detector, items: Sequence[tuple[str, str]], bar) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{category: (image_raw [N,S,S], latent_raw [N,L,L])} of the images in `items`."""
    out: dict[str, list] = {}
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        images = preprocess_frames([read_image(p) for p, _ in chunk], detector.preprocess)
        ids = torch.tensor([detector.class_id(c) for _, c in chunk])
        image_raw, latent_raw = detector.raw_discrepancies(images, ids)
        for k, (_, cat) in enumerate(chunk):
            out.setdefault(cat, []).append((image_raw[k], latent_raw[k]))
        bar.update(len(chunk))
    return {c: (torch.stack([a for a, _ in v]), torch.stack([b for _, b in v])) for c, v in out.items()}


def fit_model_normalization(detector, items: Sequence[tuple[str, str]], mode: str = "position",
                            progress: bool = True) -> MapNormalization:
    """Fit `detector`'s map normalization on good images [(path, category)] and switch the detector
    to it. Each category needs at least 4 images (2 for the statistics, 2 for the scale)."""
    from tqdm import tqdm

    counts: dict[str, int] = {}
    for _, cat in items:
        counts[cat] = counts.get(cat, 0) + 1
    few = {c: n for c, n in counts.items() if n < 4}
    if few:
        raise ValueError("too few good images to normalize the maps (at least 4 per category): "
                         + ", ".join(f"{c} {n}" for c, n in few.items()))
    stats_items, scale_items = split_halves(items)
    with tqdm(total=len(items), desc="map statistics", unit="img", disable=not progress, file=sys.stderr) as bar:
        saved, detector.normalization = detector.normalization, None  # raw maps do not depend on it
        try:
            stats = _raw_maps(detector, stats_items, bar)
            scale = _raw_maps(detector, scale_items, bar)
        finally:
            detector.normalization = saved
    normalization = fit_normalization(stats, scale, detector.class_names, mode=mode)
    detector.normalization = normalization
    return normalization


def write_normalization(model_dir: Path, normalization: MapNormalization, threshold: float) -> dict:
    """Store the normalization in the model folder; the threshold becomes `threshold` and any
    per-category score scales are dropped. Returns the model.json entry."""
    entry = normalization.save(model_dir)

    def update(meta: dict) -> None:
        meta["normalization"] = entry
        settings = meta.setdefault("settings", {})
        settings.pop("score_scale", None)
        settings["threshold"] = threshold

    update_model_json(model_dir, update)
    return entry


def _items_from(args, detector) -> list[tuple[str, str]]:
    if args.images_list is not None:
        try:
            listed = json.loads(args.images_list.read_text(encoding="utf-8"))
            return [(str(e["path"]), str(e["category"])) for e in listed]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{args.images_list}: not a list of {{path, category}}: {e}") from None
    if args.data_dir is None:
        raise ValueError("give --data-dir (with --split) or --images-list")
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    dataset = build_dataset(args.dataset, args.data_dir, categories, args.split, detector.preprocess, augment=False,
                            test_dir=args.data_dir if args.dataset == "folder" and args.split != "train" else None)
    return [(str(s.path), s.category) for s in dataset.samples if not s.label]


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    events = EventLog(args.events)
    try:
        return run_reporting_errors("normalize_maps", events, lambda: _normalize(args, events))
    finally:
        events.close()


def _normalize(args, events: EventLog) -> int:
    from engine.detector import Detector

    meta = read_model_json(args.model)
    if meta.get("detector", "deco-diff") != "deco-diff":
        raise ValueError(f"{args.model}: map normalization is for DeCo-Diff models; this one is {meta['detector']}")
    detector = Detector.load(args.model, device=args.device)
    items = _items_from(args, detector)
    events.emit("started", images=len(items), mode=args.mode)
    normalization = fit_model_normalization(detector, items, args.mode)
    entry = write_normalization(args.model, normalization, args.threshold)
    scales = {c: round(float(normalization.scale[k]), 4) for k, c in enumerate(detector.class_names)
              if c in (normalization.images or {})}
    events.emit("normalization", mode=args.mode, scale=scales, images=entry["images"], threshold=args.threshold)
    print(f"map normalization ({args.mode}) from {len(items)} good images written to {args.model}; "
          f"score scale (z units at 1.0): {scales}; good tail at {GOOD_TAIL_SCORE}, threshold {args.threshold}")
    events.emit("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
