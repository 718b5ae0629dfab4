"""Fit a DeCo-Diff model's map normalization on good images it was not trained on.

    python -m training.normalize_maps --model MODEL_DIR --data-dir DATA --split val [--mode position]
    python -m training.normalize_maps --model MODEL_DIR --images-list RUN/holdout.json

The good images are split in two, alternately by name within each category: the first half
gives each category's mean and std of the raw discrepancies (see `engine.normalization`), the
second half the score scale that puts its 99th-percentile score at 0.4. With `--train-images N`
up to N of each category's training images join the first half (many more images give steadier
per-position statistics; a UNet that reproduces its training images noticeably better than unseen
ones, by more than TRAIN_DEVIATION_TOLERANCE, is caught and they are left out). With
`--choose-fusion-on val` the fusion weight of each category is chosen on labelled validation parts
(`choose_image_weights`), and their good parts join the second half (more good images give a
steadier 99th percentile to scale on). The model's threshold
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

import numpy as np
import torch

from engine.checkpoint import read_model_json, update_model_json
from engine.imageio import read_image
from engine.latent_memory import MEMORY_WEIGHT_CHOICES, fit_memory
from engine.maps import resize_bilinear
from engine.normalization import (DEFAULT_IMAGE_WEIGHT, GOOD_TAIL_SCORE, IMAGE_WEIGHT_CHOICES, MIN_FUSION_GAIN,
                                  NORMALIZATION_MODES, SCALE_QUANTILE, MapNormalization, fit_normalization)
from engine.preprocess import preprocess_frames, preprocess_mask

from .common import EventLog, run_reporting_errors
from .datasets import DatasetLayoutError, build_dataset, read_mask
from .metrics import auroc

__all__ = ["build_arg_parser", "main", "fit_model_normalization", "split_halves", "choose_image_weights",
           "choose_memory_weights", "training_items", "labelled_items", "validation_masks", "DEFAULT_THRESHOLD",
           "TRAIN_STATS_IMAGES"]

# The fail threshold of a normalized model: 25 % above the good parts' 99th-percentile score (0.4).
DEFAULT_THRESHOLD = 0.5
BATCH = 8
# Training images per category that join the statistics half (fit's default).
TRAIN_STATS_IMAGES = 100
# With masks on every validation part of a category, its fusion and memory shares are chosen on
# the mean of image and pixel AUROC (localisation counts too: on the demo's coins a memory share
# of 0.5 raised the validation image AUROC 0.981 -> 0.989 and cut pixel AUROC 0.988 -> 0.982,
# AUPRO 0.923 -> 0.871); without masks on image AUROC alone.
SELECTION_BY_IMAGE = "image AUROC"
SELECTION_BY_IMAGE_AND_PIXEL = "mean of image and pixel AUROC"
# Training images whose mean raw latent discrepancy is lower than the held-out ones' by more than
# this share are left out of the statistics (the UNet has learnt them by heart).
TRAIN_DEVIATION_TOLERANCE = 0.15


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
    p.add_argument("--train-images", type=int, default=0,
                   help="also use up to this many training images per category for the mean and std (needs --data-dir)")
    p.add_argument("--choose-fusion-on", choices=["none", "val", "test"], default="none",
                   help="choose each category's fusion weight on this labelled split (needs --data-dir); "
                        "never the split you report on")
    p.add_argument("--memory-images", type=int, default=0,
                   help="keep up to this many good training images per category as a latent memory whose "
                        "distance map is mixed into the score (engine.latent_memory; needs --data-dir); 0: none")
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


def _per_category(detector, items: Sequence[tuple[str, str]], bar, compute) -> dict[str, tuple[torch.Tensor, ...]]:
    """Run `compute(images [B,3,S,S], class ids [B])` -> (tensors [B,...], ...) over `items` in
    batches of BATCH; {category: the outputs of its images stacked, in order}."""
    out: dict[str, list] = {}
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        images = preprocess_frames([read_image(p) for p, _ in chunk], detector.preprocess)
        outputs = compute(images, torch.tensor([detector.class_id(c) for _, c in chunk]))
        for k, (_, cat) in enumerate(chunk):
            out.setdefault(cat, []).append(tuple(t[k] for t in outputs))
        bar.update(len(chunk))
    return {c: tuple(torch.stack(parts) for parts in zip(*rows)) for c, rows in out.items()}


def _raw_maps(detector, items: Sequence[tuple[str, str]], bar, latents: dict | None = None
              ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{category: (image_raw [N,S,S], latent_raw [N,L,L])} of the images in `items`; with a
    `latents` dict, also fills it with {category: input latents [N,C,L,L]} in the same order."""
    maps = _per_category(detector, items, bar, lambda images, ids: detector.raw_discrepancies(
        images, ids, with_latents=latents is not None))
    if latents is not None:
        latents.update({c: v[2] for c, v in maps.items()})
    return {c: v[:2] for c, v in maps.items()}


def _encoded(detector, items: Sequence[tuple[str, str]], bar) -> dict[str, torch.Tensor]:
    """{category: VAE latents [N,C,L,L]} of the images in `items` (encoding only)."""
    latents = _per_category(detector, items, bar, lambda images, _: (detector.encode_latents(images),))
    return {c: v[0] for c, v in latents.items()}


def fit_model_normalization(detector, items: Sequence[tuple[str, str]], mode: str = "position",
                            progress: bool = True, train_items: Sequence[tuple[str, str]] = (),
                            labelled: Sequence[tuple] = (),
                            memory_items: Sequence[tuple[str, str]] = ()) -> MapNormalization:
    """Fit `detector`'s map normalization on held-out good images [(path, category)] and switch
    the detector to it. Each category needs at least 4 of them (2 for the statistics, 2 for the
    scale). `train_items`: training images that join the statistics half (see the module
    docstring); `labelled`: validation parts [(path, category, label 0/1[, mask path or ""])] to
    choose each category's fusion weight on (by image and pixel AUROC where every defective part
    of the category has a mask, see `validation_masks`); `memory_items`: good training images kept as the latent memory
    (`engine.latent_memory`; its statistics come from the held-out images, its share in the score
    is chosen on `labelled`). What was used and chosen is in the result's `details`."""
    from tqdm import tqdm

    counts: dict[str, int] = {}
    for _, cat in items:
        counts[cat] = counts.get(cat, 0) + 1
    few = {c: n for c, n in counts.items() if n < 4}
    if few:
        raise ValueError("too few good images to normalize the maps (at least 4 per category): "
                         + ", ".join(f"{c} {n}" for c, n in few.items()))
    stats_items, scale_items = split_halves(items)
    total = len(items) + len(train_items) + len(labelled) + len(memory_items)
    stats_z, scale_z, val_z = ({} if memory_items else None for _ in range(3))
    with tqdm(total=total, desc="map statistics", unit="img", disable=not progress, file=sys.stderr) as bar:
        saved, detector.normalization = detector.normalization, None  # raw maps do not depend on it
        try:
            stats = _raw_maps(detector, stats_items, bar, stats_z)
            scale = _raw_maps(detector, scale_items, bar, scale_z)
            train = _raw_maps(detector, train_items, bar) if train_items else {}
            val = _raw_maps(detector, [(p, c) for p, c, *_ in labelled], bar, val_z) if labelled else {}
            memory_z = _encoded(detector, memory_items, bar) if memory_items else {}
        finally:
            detector.normalization = saved
    details: dict = {"train_images": {}, "notes": []}
    for cat, (img, lat) in train.items():
        held_level = float(torch.cat([stats[cat][1], scale[cat][1]]).mean())
        train_level = float(lat.mean())
        if train_level < (1 - TRAIN_DEVIATION_TOLERANCE) * held_level:
            details["notes"].append(f"{cat}: training images reproduce {1 - train_level / held_level:.0%} better than "
                                    "held-out ones; statistics from held-out images only")
            continue
        stats[cat] = (torch.cat([stats[cat][0], img]), torch.cat([stats[cat][1], lat]))
        details["train_images"][cat] = int(img.shape[0])
    normalization = fit_normalization(stats, scale, detector.class_names, mode=mode)
    labels: dict[str, list[int]] = {}
    if val:
        for _, cat, label, *_ in labelled:
            labels.setdefault(cat, []).append(int(label))
        masks = validation_masks(labelled, detector.preprocess)
        weights, details["fusion"] = choose_image_weights(normalization, detector.class_names, val, labels, masks)
        # the validation split's good parts join the scale half: a longer good tail to scale on
        details["scale_val_good"] = {}
        for cat, (img, lat) in val.items():
            good = torch.tensor([label == 0 for label in labels[cat]])
            if cat in scale and bool(good.any()):
                scale[cat] = (torch.cat([scale[cat][0], img[good]]), torch.cat([scale[cat][1], lat[good]]))
                if memory_items:
                    scale_z[cat] = torch.cat([scale_z[cat], val_z[cat][good]])
                details["scale_val_good"][cat] = int(good.sum())
        normalization = fit_normalization(stats, scale, detector.class_names, mode=mode, image_weight=weights)
    if memory_items:
        memory = fit_memory(memory_z, stats_z, scale_z, detector.class_names, SCALE_QUANTILE, GOOD_TAIL_SCORE)
        if val:
            chosen, details["memory"] = choose_memory_weights(normalization.with_memory(memory),
                                                              detector.class_names, val, val_z, labels, masks)
            memory = memory.with_weights(torch.tensor([chosen.get(c, float(memory.weight[k]))
                                                       for k, c in enumerate(detector.class_names)]), memory.gain)
        memory = memory.with_weights(memory.weight, _memory_gains(normalization.with_memory(memory),
                                                                  detector.class_names, scale, scale_z))
        normalization = normalization.with_memory(memory)
        details["memory_images"] = {c: int(z.shape[0]) for c, z in memory_z.items()}
    normalization.details = details
    detector.normalization = normalization
    return normalization


def _selection_score(y: np.ndarray, maps: torch.Tensor, masks: np.ndarray | None) -> tuple[float, float | None]:
    """(the measure a choice is made on, pixel AUROC or None): image AUROC of the maps' maxima
    [N,S,S] for labels y [N]; with masks [N,S,S] the mean of that and the pixel AUROC."""
    image = float(auroc(y, maps.flatten(1).amax(dim=1).numpy()))
    if masks is None:
        return image, None
    pixel = float(auroc(masks.ravel(), maps.numpy().ravel()))
    return (image + pixel) / 2, pixel


def choose_image_weights(normalization: MapNormalization, class_names: Sequence[str],
                         val_maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         labels: dict[str, list[int]], masks: dict[str, np.ndarray | None] | None = None
                         ) -> tuple[dict[str, float], dict]:
    """Each category's fusion weight (IMAGE_WEIGHT_CHOICES) by image AUROC on labelled
    validation parts: val_maps[c] = raw (image [N,S,S], latent [N,L,L]) maps, labels[c] = their
    N labels in the same order; with masks[c] ([N,S,S] {0,1}, zeros for good parts) by the mean
    of image and pixel AUROC. The reference's weight stays unless another beats it by
    MIN_FUSION_GAIN; a category without both good and defective parts keeps it. Returns
    ({category: weight}, {category: {"image_weight", "auroc": {weight: measure}, "by", "parts"}})."""
    weights, report = {}, {}
    for cat, (img, lat) in val_maps.items():
        y = np.asarray(labels.get(cat, []))
        if len(y) != img.shape[0] or y.min(initial=1) != 0 or y.max(initial=0) != 1:
            report[cat] = {"image_weight": DEFAULT_IMAGE_WEIGHT, "parts": int(len(y)),
                           "note": "needs good and defective validation parts"}
            continue
        k = class_names.index(cat)
        ids = torch.full((img.shape[0],), k, dtype=torch.long)
        image_d, latent_d = normalization.normalize(img, lat, ids)
        latent_d = resize_bilinear(latent_d, tuple(image_d.shape[-2:]))
        cat_masks = (masks or {}).get(cat)
        scores, pixel = {}, {}
        for w in IMAGE_WEIGHT_CHOICES:
            scores[w], pixel[w] = _selection_score(y, image_d.pow(w) * latent_d.pow(1 - w), cat_masks)
        best = max(scores, key=scores.get)
        if scores[best] < scores[DEFAULT_IMAGE_WEIGHT] + MIN_FUSION_GAIN:
            best = DEFAULT_IMAGE_WEIGHT
        weights[cat] = best
        report[cat] = _choice_report({"image_weight": best}, scores, pixel, y)
    return weights, report


def _choice_report(chosen: dict, scores: dict, pixel: dict, y: np.ndarray) -> dict:
    """What a choice was made on, for model.json: each option's measure (and pixel AUROC)."""
    out = {**chosen, "auroc": {str(w): round(a, 4) for w, a in scores.items()},
           "by": SELECTION_BY_IMAGE if all(v is None for v in pixel.values()) else SELECTION_BY_IMAGE_AND_PIXEL,
           "parts": int(len(y)), "defective": int(y.sum())}
    if out["by"] == SELECTION_BY_IMAGE_AND_PIXEL:
        out["pixel_auroc"] = {str(w): round(a, 4) for w, a in pixel.items()}
    return out


def _final_maps(normalization: MapNormalization, k: int, img: torch.Tensor, lat: torch.Tensor,
                latents: torch.Tensor) -> torch.Tensor:
    """The final maps [N,S,S] of category k's parts from their raw maps and latents."""
    ids = torch.full((img.shape[0],), k, dtype=torch.long)
    return torch.cat([normalization.maps(i, la, z, c)[2]
                      for i, la, z, c in zip(img.split(BATCH), lat.split(BATCH), latents.split(BATCH), ids.split(BATCH))])


def _final_scores(normalization: MapNormalization, k: int, img: torch.Tensor, lat: torch.Tensor,
                  latents: torch.Tensor) -> np.ndarray:
    """Image scores (max of the final map) of category k's parts from their raw maps and latents."""
    return _final_maps(normalization, k, img, lat, latents).flatten(1).amax(dim=1).numpy()


def choose_memory_weights(normalization: MapNormalization, class_names: Sequence[str],
                          val_maps: dict[str, tuple[torch.Tensor, torch.Tensor]], val_latents: dict[str, torch.Tensor],
                          labels: dict[str, list[int]], masks: dict[str, np.ndarray | None] | None = None
                          ) -> tuple[dict[str, float], dict]:
    """Each category's share of the latent memory in the final map (MEMORY_WEIGHT_CHOICES) by
    image AUROC on labelled validation parts (raw maps, latents and labels in the same order;
    with masks[c], as in `choose_image_weights`, by the mean of image and pixel AUROC). A
    share above 0 must beat DeCo-Diff alone (0) by MIN_FUSION_GAIN; a category without both kinds
    of part keeps the default. Returns ({category: share}, {category: report})."""
    memory = normalization.memory
    weights, report = {}, {}
    for cat, (img, lat) in val_maps.items():
        y = np.asarray(labels.get(cat, []))
        k = class_names.index(cat)
        if len(y) != img.shape[0] or y.min(initial=1) != 0 or y.max(initial=0) != 1 or memory.memories[k] is None:
            report[cat] = {"weight": float(memory.weight[k]), "parts": int(len(y)),
                           "note": "needs good and defective validation parts"}
            continue
        scores, pixel = {}, {}
        for w in MEMORY_WEIGHT_CHOICES:
            trial = memory.with_weights(torch.where(torch.arange(len(class_names)) == k, torch.tensor(float(w)),
                                                    memory.weight), memory.gain)
            maps = _final_maps(normalization.with_memory(trial), k, img, lat, val_latents[cat])
            scores[w], pixel[w] = _selection_score(y, maps, (masks or {}).get(cat))
        best = max(scores, key=scores.get)
        if best != 0.0 and scores[best] < scores[0.0] + MIN_FUSION_GAIN:
            best = 0.0
        weights[cat] = best
        report[cat] = _choice_report({"weight": best}, scores, pixel, y)
    return weights, report


def _memory_gains(normalization: MapNormalization, class_names: Sequence[str],
                  scale_maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  scale_latents: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-category gain [K] that puts the good scale images' SCALE_QUANTILE final score back at
    GOOD_TAIL_SCORE once the memory is mixed in (1 where the memory's share is 0)."""
    memory = normalization.memory
    gains = torch.ones(len(class_names))
    unit = normalization.with_memory(memory.with_weights(memory.weight, gains))
    for k, cat in enumerate(class_names):
        if float(memory.weight[k]) == 0.0 or cat not in scale_maps:
            continue
        scores = _final_scores(unit, k, *scale_maps[cat], scale_latents[cat])
        gains[k] = GOOD_TAIL_SCORE / max(float(np.quantile(scores, SCALE_QUANTILE)), 1e-3)
    return gains


def training_items(dataset, held_out: Sequence[tuple[str, str]], per_category: int,
                   seed: int = 0) -> list[tuple[str, str]]:
    """Up to `per_category` good training images of each category that are not held out,
    drawn with a fixed seed (the same ones on every run)."""
    import random

    held = {p for p, _ in held_out}
    by_cat: dict[str, list[str]] = {}
    for sample in dataset.samples:
        if not sample.label and str(sample.path) not in held:
            by_cat.setdefault(sample.category, []).append(str(sample.path))
    out = []
    for cat, paths in sorted(by_cat.items()):
        paths = sorted(paths)
        out += [(p, cat) for p in random.Random(seed).sample(paths, min(per_category, len(paths)))]
    return out


def validation_masks(labelled: Sequence[tuple], preprocess) -> dict[str, np.ndarray | None]:
    """{category: masks [N,S,S] uint8 {0,1} of its labelled parts in order (zeros for good ones)}
    from the parts' mask paths (4th element), cropped like the images; None for a category where
    a defective part has no mask or no mask marks a pixel (its choices then go by image AUROC alone)."""
    out: dict[str, list | None] = {}
    size = preprocess.center_size
    for path, cat, label, *rest in labelled:
        mask_path = rest[0] if rest else ""
        if cat in out and out[cat] is None:
            continue
        if not label:
            out.setdefault(cat, []).append(np.zeros((size, size), np.uint8))
        elif mask_path:
            out.setdefault(cat, []).append(preprocess_mask(read_mask(mask_path), preprocess))
        else:
            out[cat] = None
    stacked = {c: (np.stack(m) if m else None) for c, m in out.items()}
    return {c: (m if m is not None and m.any() else None) for c, m in stacked.items()}   # empty masks: no pixel AUROC


def labelled_items(dataset_kind: str, data_dir: Path, categories, split: str, preprocess,
                   test_dir: Path | None = None, with_masks: bool = False) -> list[tuple]:
    """The labelled parts [(path, category, label)] of a split (a folder dataset: of `test_dir`),
    or [] when the data has no such split (or it holds only one kind of part); `with_masks` adds
    each part's mask path ("" for good parts and defective ones without a mask)."""
    try:
        dataset = build_dataset(dataset_kind, data_dir, categories, split, preprocess, augment=False,
                                test_dir=test_dir)
    except (DatasetLayoutError, ValueError, FileNotFoundError):
        return []
    items = [(str(s.path), s.category, int(s.label)) + ((str(s.mask_path or ""),) if with_masks else ())
             for s in dataset.samples]
    return items if len({item[2] for item in items}) == 2 else []


def write_normalization(model_dir: Path, normalization: MapNormalization, threshold: float) -> dict:
    """Store the normalization in the model folder; the threshold becomes `threshold` and any
    per-category score scales are dropped. Returns the model.json entry."""
    entry = normalization.save(model_dir)
    entry.update(normalization.details or {})

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
    train, labelled = [], []
    memory = []
    if (args.train_images or args.memory_images or args.choose_fusion_on != "none") and args.data_dir is None:
        raise ValueError("--train-images, --memory-images and --choose-fusion-on need --data-dir")
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    if args.train_images or args.memory_images:
        dataset = build_dataset(args.dataset, args.data_dir, categories, "train", detector.preprocess, augment=False)
        train = training_items(dataset, items, args.train_images) if args.train_images else []
        memory = training_items(dataset, items, args.memory_images) if args.memory_images else []
    if args.choose_fusion_on != "none":
        labelled = labelled_items(args.dataset, args.data_dir, categories, args.choose_fusion_on, detector.preprocess,
                                  with_masks=True)
        if not labelled:
            raise ValueError(f"{args.data_dir}: no {args.choose_fusion_on} split with good and defective parts")
    events.emit("started", images=len(items), mode=args.mode, train_images=len(train), labelled=len(labelled))
    normalization = fit_model_normalization(detector, items, args.mode, train_items=train, labelled=labelled,
                                            memory_items=memory)
    entry = write_normalization(args.model, normalization, args.threshold)
    scales = {c: round(float(normalization.scale[k]), 4) for k, c in enumerate(detector.class_names)
              if c in (normalization.images or {})}
    events.emit("normalization", mode=args.mode, scale=scales, images=entry["images"], threshold=args.threshold)
    weights = {c: float(normalization.image_weight[k]) for k, c in enumerate(detector.class_names)
               if c in (normalization.images or {})}
    events.emit("fusion", image_weight=weights, details=entry.get("fusion"))
    print(f"map normalization ({args.mode}) from {len(items)} held-out and {len(train)} training good images "
          f"written to {args.model}; score scale (z units at 1.0): {scales}; fusion image weights {weights}; "
          f"good tail at {GOOD_TAIL_SCORE}, threshold {args.threshold}")
    if normalization.memory is not None:
        described = normalization.memory.describe()
        events.emit("latent_memory", **described, details=entry.get("memory"))
        print(f"latent memory of {described['images']} good training images per category, "
              f"share in the score {described['weight']}")
    for note in entry.get("notes", []):
        print(f"note: {note}")
    events.emit("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
