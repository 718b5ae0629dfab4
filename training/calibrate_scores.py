"""Per-category score scales: one threshold for products whose normal scores differ.

    python -m training.calibrate_scores --model MODEL_DIR --data-dir GOOD_DATA [--split train]
        [--quantile 0.99] [--target 0.5] [--dry-run]

Scores every good image of each category with the model (without any earlier scales), takes
the `--quantile` of each category's scores, and writes `settings.score_scale` = target / quantile
per category and `settings.threshold` = target into the model's model.json. After it, a normal
part of any category scores under `target` about as often as `--quantile` says, whatever the
product. Use good images the UNet was not trained on where you have them (a held-out test split,
or a folder written for the purpose); the trained-on train split works too when the model does
not overfit it (compare with `evaluate`). Then run `training.evaluate --record` again.
DeCo-Diff models only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import read_model_json, update_model_json
from engine.detector import Detector

from .common import EventLog
from .datasets import build_dataset


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calibrate_scores", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (its model.json is updated)")
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder"], default="mvtec")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="which split's good images to score (default: train)")
    p.add_argument("--object-category", default="all", help="a category, a comma list, or all")
    p.add_argument("--quantile", type=float, default=0.99, help="share of good parts that must score under target")
    p.add_argument("--target", type=float, default=0.5, help="the common threshold the quantiles are mapped to")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--dry-run", action="store_true", help="print the scales, write nothing")
    p.add_argument("--events", type=Path, default=None, help="append JSON-line events here (for the wizard)")
    return p


def good_score_quantiles(detector: Detector, dataset, quantile: float, batch_size: int = 8,
                         progress: bool = True) -> dict[str, tuple[float, int]]:
    """{category: (quantile of its good images' scores, image count)} with the detector as it is."""
    from tqdm import tqdm

    good = [i for i, s in enumerate(dataset.samples) if int(s.label) == 0]
    scores: dict[str, list[float]] = {}
    bar = tqdm(total=len(good), desc="scoring good images", unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(good), batch_size):
        items = [dataset[i] for i in good[start:start + batch_size]]
        images = torch.stack([it["image"] for it in items])
        ids = torch.tensor([detector.class_id(it["category"]) for it in items])
        maps, _ = detector.score_latents(images, ids)
        for it, score in zip(items, maps.scores.float().cpu().tolist()):
            scores.setdefault(it["category"], []).append(score)
        bar.update(len(items))
    bar.close()
    return {c: (float(np.quantile(v, quantile)), len(v)) for c, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    events = EventLog(args.events)
    try:
        return _calibrate(args, events)
    except (Exception, SystemExit) as e:
        if not (isinstance(e, SystemExit) and e.code in (0, None)):
            events.emit("error", message=str(e) if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}")
        raise
    finally:
        events.close()


def _calibrate(args, events: EventLog) -> int:
    if not 0 < args.quantile <= 1:
        raise SystemExit(f"--quantile must be in (0, 1], got {args.quantile}")
    if args.target <= 0:
        raise SystemExit(f"--target must be positive, got {args.target}")
    meta = read_model_json(args.model)
    if meta.get("detector", "deco-diff") != "deco-diff":
        raise SystemExit(f"{args.model}: score scales are for DeCo-Diff models; this one is {meta['detector']}")
    detector = Detector.load(args.model, device=args.device, score_scale=None, batch_size=args.batch_size)
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    dataset = build_dataset(args.dataset, args.data_dir, categories, args.split, detector.preprocess,
                            augment=False, class_names=detector.class_names)
    events.emit("started", model=str(args.model), images=sum(int(s.label) == 0 for s in dataset.samples))
    quantiles = good_score_quantiles(detector, dataset, args.quantile, args.batch_size)
    missing = [c for c in detector.class_names if c not in quantiles]
    if missing:
        raise SystemExit(f"{args.data_dir}: no good images of {', '.join(missing)} in the {args.split} split; "
                         f"every category of the model needs some (scores of categories left out would not "
                         f"be comparable)")
    scale = {}
    for category, (q, n) in sorted(quantiles.items()):
        if q <= 0:
            raise SystemExit(f"{category}: the good images' {args.quantile:g} quantile score is {q}; cannot scale it")
        scale[category] = round(args.target / q, 6)
        print(f"{category:16s} {n:5d} good images  {args.quantile:g} quantile {q:.4f}  scale {scale[category]:.4f}")
    events.emit("calibration", score_scale=scale, threshold=args.target,
                quantiles={c: q for c, (q, _) in quantiles.items()}, written=not args.dry_run)
    if not args.dry_run:
        update_model_json(args.model, lambda m: m.setdefault("settings", {}).update(score_scale=scale,
                                                                                     threshold=args.target))
        print(f"wrote score_scale and threshold {args.target} to {args.model / 'model.json'}; "
              f"run training.evaluate --record again")
    events.emit("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
