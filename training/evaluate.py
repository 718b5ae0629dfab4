"""Evaluate a model on a test split: per category and mean I-AUROC, P-AUROC, AUPRO, image and
pixel AP, F1-max, a suggested threshold, CPU/GPU time per image, classifier accuracy.

    python -m training.evaluate --model resources/demo_model --dataset mvtec --data-dir resources/demo_data
    torchrun --nproc_per_node=2 -m training.evaluate ...      (images split across ranks, gathered on rank 0)

Writes metrics.json and metrics.csv to --out (default: <model>/evaluation or ./evaluation),
optionally the maps (.npy) and overlays (.png) of every test image.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from engine.loading import load_model, model_kind
from engine.runtime import InspectionModel

from .calibrate_runtime import add_runtime_arguments, runtime_overrides
from .common import EventLog, add_run_arguments, run_entry, str2bool
from .datasets import build_dataset
from .metrics import METRIC_NAMES, compute_metrics, suggest_threshold_from_good

__all__ = ["build_arg_parser", "main", "evaluate_detector", "format_table"]

# A score at or above this is the top of the scale (maps are clipped to [0, 1]).
SATURATED_SCORE = 0.999

TABLE_COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_aupro", "AUPRO"),
                 ("image_ap", "I-AP"), ("pixel_ap", "P-AP"), ("image_f1max", "I-F1"), ("pixel_f1max", "P-F1"))


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate", description="Evaluate an anomaly model on a test split.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or reference .pt checkpoint")
    p.add_argument("--vae", default=None, help="VAE for a reference checkpoint (folder, cached HF id, ema/mse)")
    p.add_argument("--detector", choices=["deco-diff", "diad"], default=None,
                   help="detector kind (default: what the model folder says)")
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder", "auto"], default="auto")
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (folder: the good images)")
    p.add_argument("--test-dir", type=Path, default=None, help="--dataset folder: the test folder")
    p.add_argument("--object-category", default="all",
                   help="a category, a comma list or all; --dataset folder: default the model's only category")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="which split to score: test, or val (MVTec-style <category>/val/, for choosing settings)")
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--reverse-steps", type=int, default=None)
    p.add_argument("--start-t", type=int, default=None)
    p.add_argument("--gate-fusion", type=str2bool, default=None)
    add_runtime_arguments(p)
    p.add_argument("--compile", action="store_true",
                   help="run the networks through torch.compile (DeCo-Diff; the first batch compiles for a minute or more)")
    p.add_argument("--noise-t", type=int, default=None, help="DiAD: timestep the input is noised to")
    p.add_argument("--good-quantile", type=float, default=0.99, help="quantile of good scores for the threshold")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json / metrics.csv")
    p.add_argument("--save-maps", action="store_true", help="save every anomaly map as .npy")
    p.add_argument("--save-overlays", action="store_true", help="save every test image with its overlay")
    p.add_argument("--record", action="store_true", help="store the results and threshold in the model folder")
    add_run_arguments(p)
    p.add_argument("--max-per-category", type=int, default=0, help="evaluate at most N images per category")
    return p


def _shard(indices: list[int], rank: int, world: int) -> list[int]:
    return indices[rank::world]


def _gather(obj, ctx_world: int):
    if ctx_world == 1:
        return [obj]
    out = [None] * ctx_world
    dist.all_gather_object(out, obj)
    return out


def _classifier_accuracy(detector, paths: list[str], categories: list[str]) -> float | None:
    if detector.classifier is None or not paths:
        return None
    from engine.imageio import read_image

    hits = 0
    for start in range(0, len(paths), 16):
        frames = [read_image(p) for p in paths[start:start + 16]]
        preds = detector.classifier.predict(frames)
        hits += sum(name == cat for (name, _), cat in zip(preds, categories[start:start + 16]))
    return hits / len(paths)


def evaluate_detector(detector, dataset, rank: int = 0, world: int = 1, batch_size: int = 8,
                      max_per_category: int = 0, progress: bool = True, save_dir: Path | None = None,
                      save_maps: bool = False, save_overlays: bool = False) -> dict:
    """Run the detector over a test dataset; returns {"categories": {name: metrics}, "mean": ...}
    on rank 0 (None elsewhere). Categories are matched to the model's classes by name."""
    from tqdm import tqdm

    by_cat: dict[str, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        by_cat.setdefault(s.category, []).append(i)
    missing = [c for c in by_cat if c not in detector.class_names]
    if missing:
        raise ValueError(f"the model does not know the categories {missing} (it knows {detector.class_names})")
    if max_per_category:
        by_cat = {c: _spread(ix, max_per_category) for c, ix in by_cat.items()}
    mine = [i for c in by_cat for i in _shard(by_cat[c], rank, world)]
    records = []
    seconds = 0.0
    bar = tqdm(total=len(mine), desc="evaluating", unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        items = [dataset[i] for i in chunk]
        images = torch.stack([it["image"] for it in items])
        ids = torch.tensor([detector.class_id(it["category"]) for it in items])
        t0 = time.perf_counter()
        maps, recons = detector.score_latents(images, ids)
        final = maps.final.float().cpu().numpy()
        seconds += time.perf_counter() - t0
        for it, m, recon in zip(items, final, recons):
            records.append({"path": it["path"], "has_mask": bool(it["has_mask"]),
                            "category": it["category"], "defect": it["defect"], "label": int(it["label"]),
                            "mask": it["mask"][0].numpy().astype(np.uint8), "map": m.astype(np.float16),
                            "score": float(m.max())})
            if save_dir is not None and (save_maps or save_overlays):
                _save_outputs(save_dir, it, m, recon, save_maps, save_overlays)
        bar.update(len(chunk))
    bar.close()
    gathered = _gather({"records": records, "seconds": seconds, "count": len(mine)}, world)
    if rank != 0:
        return None
    all_records = [r for g in gathered for r in g["records"]]
    total_seconds = sum(g["seconds"] for g in gathered)
    total_count = sum(g["count"] for g in gathered)
    result = {"categories": {}, "ms_per_image": 1000.0 * total_seconds / max(1, total_count), "images": total_count}
    for cat in by_cat:
        recs = sorted((r for r in all_records if r["category"] == cat), key=lambda r: r["path"])
        masks = np.stack([r["mask"] for r in recs])
        maps = np.stack([r["map"].astype(np.float32) for r in recs])
        labels = np.array([r["label"] for r in recs])
        with_pixels = all(r["has_mask"] for r in recs if r["label"])
        metrics = compute_metrics(masks, maps, image_labels=labels, with_pixels=with_pixels)
        good_scores = [r["score"] for r in recs if r["label"] == 0]
        scores = np.array([r["score"] for r in recs])
        threshold = float(detector.settings.threshold)
        metrics.update({
            "n_good": len(good_scores), "n_defect": len(recs) - len(good_scores),
            "at_threshold": {"threshold": threshold,
                             "good_failed": _share(scores[labels == 0] > threshold),
                             "defective_caught": _share(scores[labels == 1] > threshold)},
            "good_scores": _good_score_summary(good_scores),
            "threshold_good_quantile": suggest_threshold_from_good(good_scores, 0.99) if good_scores else None,
            "scores": {Path(r["path"]).name + f" [{r['defect']}]": round(r["score"], 5) for r in recs},
        })
        result["categories"][cat] = metrics
    cats = list(result["categories"].values())
    result["mean"] = {name: _nanmean([c[name] for c in cats]) for name in METRIC_NAMES}
    all_labels = np.array([r["label"] for r in all_records])
    all_scores = np.array([r["score"] for r in all_records])
    from .metrics import f1_max

    f1, thr = f1_max(all_labels, all_scores)
    result["suggested_threshold"] = {
        "f1_optimal": None if thr is None or (isinstance(thr, float) and math.isnan(thr)) else float(thr),
        "f1": None if isinstance(f1, float) and math.isnan(f1) else float(f1),
        "good_quantile": suggest_threshold_from_good(
            [r["score"] for r in all_records if r["label"] == 0], 0.99) if any(
            r["label"] == 0 for r in all_records) else None,
    }
    return result


def _spread(indices: list[int], n: int) -> list[int]:
    if len(indices) <= n:
        return indices
    picks = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[k] for k in sorted(set(picks.tolist()))]


def _good_score_summary(good_scores: list[float]) -> dict | None:
    """Median, 99th percentile and maximum of good parts' scores, and how many reach the top of
    the scale (SATURATED_SCORE)."""
    if not good_scores:
        return None
    g = np.asarray(good_scores)
    return {"p50": float(np.median(g)), "p99": float(np.quantile(g, 0.99)), "max": float(g.max()),
            "at_top": int((g >= SATURATED_SCORE).sum())}


def scale_warnings(result: dict) -> list[str]:
    """One line per category whose good parts sit at the top of the score scale: any good part at
    SATURATED_SCORE (the maps' clip saturates), or the good parts' 99th percentile at or above the
    fail threshold (the line would reject good parts)."""
    out = []
    for cat, m in result["categories"].items():
        good, at = m.get("good_scores"), m.get("at_threshold") or {}
        if not good:
            continue
        if good["at_top"]:
            out.append(f"{cat}: {good['at_top']} good part(s) score {SATURATED_SCORE:g} or more, the top of the scale "
                       "(the maps saturate: train longer, or normalize the maps on held-out good images)")
        elif at.get("threshold") is not None and good["p99"] >= at["threshold"]:
            out.append(f"{cat}: the good parts' 99th-percentile score {good['p99']:.3f} is at or above the fail "
                       f"threshold {at['threshold']:.3f}: more than 1 % of good parts would fail")
    return out


def _share(flags: np.ndarray) -> float | None:
    """Fraction of True in `flags`; None for no parts."""
    return float(np.mean(flags)) if flags.size else None


def _nanmean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if vals:
        return float(np.mean(vals))
    return None if all(v is None for v in values) else float("nan")


def _save_outputs(save_dir: Path, item, amap, recon, save_maps: bool, save_overlays: bool) -> None:
    from engine.imageio import write_image
    from engine.overlay import render_overlay

    name = f"{item['category']}_{item['defect']}_{Path(item['path']).stem}"
    if save_maps:
        (save_dir / "maps").mkdir(parents=True, exist_ok=True)
        np.save(save_dir / "maps" / f"{name}.npy", amap.astype(np.float32))
    if save_overlays:
        crop = ((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        write_image(save_dir / "overlays" / f"{name}.png", render_overlay(crop, amap, threshold=None))


def _cell(value, width: int = 9) -> str:
    """A metric for the table: 4 decimals, or n/a for a metric the data cannot give (no masks)."""
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.4f}"


def format_table(result: dict) -> str:
    """A fixed-width text table: one row per category, then the mean; then, per category, the
    share of good parts that fail and of defective parts caught at the model's threshold."""
    head = f"{'category':<16}" + "".join(f"{title:>9}" for _, title in TABLE_COLUMNS) + f"{'good':>6}{'defect':>8}"
    lines = [head, "-" * len(head)]
    for cat, m in result["categories"].items():
        lines.append(f"{cat:<16}" + "".join(_cell(m[k]) for k, _ in TABLE_COLUMNS)
                     + f"{m['n_good']:>6}{m['n_defect']:>8}")
    lines.append("-" * len(head))
    lines.append(f"{'mean':<16}" + "".join(_cell(result['mean'][k]) for k, _ in TABLE_COLUMNS))
    for cat, m in result["categories"].items():
        at = m.get("at_threshold")
        if at:
            good = "n/a" if at["good_failed"] is None else f"{100 * at['good_failed']:.1f}%"
            caught = "n/a" if at["defective_caught"] is None else f"{100 * at['defective_caught']:.1f}%"
            lines.append(f"{cat}: at threshold {at['threshold']:.4g}, good parts failed {good}, "
                         f"defective parts caught {caught}")
    return "\n".join(lines)


def _write_outputs(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["category"] + [k for k, _ in TABLE_COLUMNS] + ["n_good", "n_defect"])
        for cat, m in result["categories"].items():
            w.writerow([cat] + [_csv_value(m[k]) for k, _ in TABLE_COLUMNS] + [m["n_good"], m["n_defect"]])
        w.writerow(["mean"] + [_csv_value(result["mean"][k]) for k, _ in TABLE_COLUMNS] + ["", ""])


def _csv_value(value) -> str | float:
    return "n/a" if value is None else round(value, 6)


def load_detector_for_eval(args, device) -> InspectionModel:
    """The model's detector (DeCo-Diff or DiAD, as its folder says); --detector, when given, must match."""
    kind = model_kind(args.model)
    if args.detector is not None and args.detector != kind:
        raise ValueError(f"--detector {args.detector}: {args.model} is a {kind} model")
    overrides = {}
    if args.reverse_steps is not None:
        overrides["reverse_steps"] = args.reverse_steps
        overrides["start_t"] = args.start_t or args.reverse_steps
    elif args.start_t is not None:
        overrides["start_t"] = args.start_t
    if args.gate_fusion is not None:
        overrides["gate_fusion"] = args.gate_fusion
    overrides.update(runtime_overrides(args))
    if args.compile:
        if kind == "diad":
            raise ValueError("--compile applies to DeCo-Diff models only")
        overrides["compile"] = True
    if args.noise_t is not None:
        if kind != "diad":
            raise ValueError("--noise-t applies to DiAD models only")
        overrides["noise_t"] = args.noise_t
    overrides["batch_size"] = args.batch_size
    return load_model(args.model, vae=args.vae, device=device, **overrides)


def main(argv: list[str] | None = None) -> int:
    return run_entry("evaluate", argv, build_arg_parser, _evaluate)


def _evaluate(args, ctx, events: EventLog) -> int:
    detector = load_detector_for_eval(args, ctx.device)
    categories = categories_to_evaluate(args.dataset, args.data_dir, args.object_category, detector.class_names)
    dataset = build_dataset(args.dataset, args.data_dir, categories, args.split, detector.preprocess,
                            augment=False, test_dir=args.test_dir)
    model_dir = Path(args.model) if Path(args.model).is_dir() else None
    out = args.out or ((model_dir / "evaluation") if model_dir else Path("evaluation"))
    events.emit("started", model=str(args.model), images=len(dataset), world_size=ctx.world_size)
    result = evaluate_detector(detector, dataset, ctx.rank, ctx.world_size, args.batch_size,
                               args.max_per_category, progress=ctx.is_main, save_dir=out,
                               save_maps=args.save_maps, save_overlays=args.save_overlays)
    if ctx.is_main:
        paths = [str(s.path) for s in dataset.samples]
        cats = [s.category for s in dataset.samples]
        result["classifier_accuracy"] = _classifier_accuracy(detector, paths, cats)
        result["model"] = detector.describe().to_dict()
        result["settings"] = dataclasses.asdict(detector.settings)
        _write_outputs(out, result)
        print(format_table(result))
        acc = result["classifier_accuracy"]
        print(f"time per image: {result['ms_per_image']:.1f} ms on {result['model']['device']} "
              f"({result['settings'].get('runtime', 'torch')} {result['settings']['precision']}) "
              f"(batch {args.batch_size}, {ctx.world_size} process(es)); "
              f"classifier accuracy: {'n/a' if acc is None else f'{100 * acc:.1f}%'}; "
              f"suggested threshold: F1-optimal {result['suggested_threshold']['f1_optimal']}, "
              f"good {args.good_quantile:.0%} quantile {result['suggested_threshold']['good_quantile']}")
        for warning in scale_warnings(result):
            print(f"warning: {warning}")
            events.emit("warning", message=warning)
        print(f"wrote {out / 'metrics.json'} and {out / 'metrics.csv'}")
        if args.record and model_dir is not None:
            from engine.checkpoint import update_model_json

            update_model_json(model_dir, lambda meta: meta.update(evaluation={
                "mean": result["mean"], "ms_per_image": result["ms_per_image"], "classifier_accuracy": acc,
                "per_category": {c: {k: m[k] for k, _ in TABLE_COLUMNS} for c, m in result["categories"].items()},
                "suggested_threshold": result["suggested_threshold"]}))
        events.emit("evaluation", mean=result["mean"], ms_per_image=result["ms_per_image"],
                    suggested_threshold=result["suggested_threshold"], out=str(out))
    return 0


def categories_to_evaluate(dataset: str, data_dir: Path, object_category: str, class_names: list[str]):
    """--object-category as build_dataset takes it, checked against the model's classes. A folder
    dataset holds one product: by default the model's only category (a folder's own name would
    not match the names the model was trained on)."""
    from .datasets import detect_layout

    kind = detect_layout(data_dir) if dataset == "auto" else dataset
    if object_category == "all":
        if kind != "folder":
            return "all"
        if len(class_names) != 1:
            raise ValueError(f"{data_dir}: a folder dataset holds one product and this model knows "
                             f"{len(class_names)} ({', '.join(class_names)}): pass --object-category NAME")
        return class_names[0]
    chosen = object_category.split(",")
    unknown = [c for c in chosen if c not in class_names]
    if unknown:
        raise ValueError(f"--object-category {object_category}: the model does not know {', '.join(unknown)} "
                         f"(it knows {', '.join(class_names)})")
    return chosen[0] if kind == "folder" and len(chosen) == 1 else chosen


if __name__ == "__main__":
    sys.exit(main())
