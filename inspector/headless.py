"""`main.py inspect`: inspect images, folders (recursively) and videos without a window.

Every input gets one row (CSV written and flushed as it goes, JSON at the end), unreadable
files included with verdict `error`. With `--log`, each row is also committed to the SQLite
results log (the one the window shows) before it is written anywhere else or printed, and
`--resume` skips inputs that a killed or interrupted run already logged. Exit code 0 when all
pass, 1 when any part fails, 2 when anything could not be inspected (or the model could not
be loaded).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.overlay import operator_overlay

from .imageio import ImageReadError, is_video, list_images, natural_path_key, printable, read_image, write_image
from .paths import DEMO_DATA_DIR, DEMO_MODEL_DIR
from .results_log import ResultsLog, ResultsLogError
from .sources import SourceError, VideoFileSource

__all__ = ["InspectItem", "iter_inputs", "run_inspect", "add_inspect_arguments", "ROW_FIELDS", "LOG_SOURCE"]

ROW_FIELDS = ("index", "file", "frame", "verdict", "score", "threshold", "category", "category_source",
              "category_confidence", "latency_ms", "model_id", "overlay", "error")
LOG_SOURCE = "inspect"   # the `source` of results-log rows written by this command
OVERLAY_STEM_BYTES = 160   # of the input's name in an overlay's name (file names are at most 255 bytes)


@dataclass
class InspectItem:
    """One thing to inspect: a decoded RGB frame, or the reason it could not be decoded."""

    file: str
    frame: int | None
    rgb: np.ndarray | None
    error: str = ""

    def __post_init__(self) -> None:
        self.file, self.error = printable(self.file), printable(self.error)  # odd bytes in names as \xNN

    @property
    def frame_id(self) -> str:
        """The results-log frame id: the file path, with '#frame' for video frames (as in the window)."""
        return self.file if self.frame is None else f"{self.file}#{self.frame}"


def _video_frames(path: Path) -> Iterator[InspectItem]:
    """Every frame of a video; a video that cannot be opened, or stops decoding before its
    announced frame count, also gets an error item saying so (as in the window)."""
    source = VideoFileSource(path)
    try:
        source.open()
    except SourceError as e:
        yield InspectItem(str(path), None, None, _without_path(str(e), path))
        return
    try:
        while (frame := source.read()) is not None:
            yield InspectItem(str(path), frame.index, frame.rgb)
    finally:
        source.close()
    if source.end_level != "info":
        yield InspectItem(str(path), None, None, _without_path(source.end_message, path))


def _without_path(message: str, path: Path) -> str:
    """A source message without its leading 'path: ' (the row names the file already)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def expand_inputs(paths: list[str]) -> list[tuple[Path, str]]:
    """Input arguments -> (path, kind) with kind 'image', 'video' or 'missing'."""
    out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend((f, "image") for f in list_images(p, recursive=True))
            out.extend((f, "video") for f in sorted(p.rglob("*"), key=lambda f: natural_path_key(f.relative_to(p)))
                       if f.is_file() and is_video(f))
        elif p.is_file():
            out.append((p, "video" if is_video(p) else "image"))
        else:
            out.append((p, "missing"))
    return out


def iter_inputs(entries: list[tuple[Path, str]]) -> Iterator[InspectItem]:
    """Decode inputs lazily, one item per image or video frame; failures become error items."""
    for path, kind in entries:
        if kind == "missing":
            yield InspectItem(str(path), None, None, "no such file or folder")
        elif kind == "video":
            yield from _video_frames(path)
        else:
            try:
                yield InspectItem(str(path), None, read_image(path))
            except ImageReadError as e:
                yield InspectItem(str(path), None, None, e.problem)


def _batched(items: Iterator[InspectItem], size: int) -> Iterator[list[InspectItem]]:
    batch: list[InspectItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _overlay_name(index: int, item: InspectItem, verdict: str) -> str:
    """<index>_<input name>[_f<frame>]_<verdict>.png; long input names are cut so that the name fits
    the file system (the index keeps names apart)."""
    stem = Path(item.file).stem.encode("utf-8")[:OVERLAY_STEM_BYTES].decode("utf-8", "ignore")
    frame = f"_f{item.frame:06d}" if item.frame is not None else ""
    return f"{index:06d}_{stem}{frame}_{verdict}.png"


def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="images, folders (searched recursively) or videos; default: the bundled demo test images")
    p.add_argument("--model", default=None, metavar="DIR|CKPT",
                   help="model folder or reference .pt checkpoint (default: the bundled demo model)")
    p.add_argument("--vae", default=None, metavar="DIR|ID",
                   help="VAE for a reference checkpoint: a local folder, a cached Hugging Face id, or ema/mse")
    p.add_argument("--detector", choices=["deco-diff", "diad"], default=None,
                   help="expected detector kind; the model folder says which it is (default: accept either)")
    p.add_argument("--category", default=None,
                   help="product category (default: chosen by the classifier; "
                        "DiAD without one: the lowest-scoring class)")
    p.add_argument("--threshold", type=float, default=None, help="score above which a part fails (default: the model's)")
    p.add_argument("--gate-fusion", action="store_true", help="fuse the DoD gate map into the anomaly map")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write one row per input to this CSV")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write rows and a summary to this JSON")
    p.add_argument("--save-overlays", type=Path, default=None, metavar="DIR",
                   help="save each inspected part with its heatmap overlay (where the map exceeds the threshold) "
                        "and defect outline")
    p.add_argument("--full-heatmap", action="store_true",
                   help="with --save-overlays: colour the whole anomaly map, not only where it exceeds the threshold")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="also commit every row to this SQLite results log (e.g. the window's results.sqlite)")
    p.add_argument("--resume", action="store_true",
                   help="with --log: skip inputs this command already logged there (continue a killed run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only failures and the summary")


def _load_detector(args, err) -> object | None:
    from engine.checkpoint import CheckpointError
    from engine.loading import load_model, model_kind

    model = Path(args.model) if args.model else DEMO_MODEL_DIR
    overrides = {"batch_size": max(1, args.batch_size)}
    if args.threshold is not None:
        overrides["threshold"] = args.threshold
    if args.gate_fusion:
        overrides["gate_fusion"] = True
    try:
        if getattr(args, "detector", None):
            kind = model_kind(model)
            if kind != args.detector:
                raise ValueError(f"--detector {args.detector} was asked for, but this is a {kind} model")
        return load_model(model, vae=args.vae, device=args.device, **overrides)
    except (CheckpointError, FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        hint = "" if args.model else " (the bundled demo model; rebuild it with `python scripts/make_demo_model.py`)"
        print(f"error: cannot load model {model}{hint}: {e}", file=err)
        return None


def run_inspect(args: argparse.Namespace, out=None, err=None) -> int:
    """Run the inspect command; returns the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    from tqdm import tqdm

    if args.resume and not args.log:
        print("error: --resume needs --log FILE (the results log to continue)", file=err)
        return 2
    detector = _load_detector(args, err)
    if detector is None:
        return 2
    if args.category is not None:
        try:
            detector.class_id(args.category)
        except ValueError as e:
            print(f"error: {e}", file=err)
            return 2
    paths = args.paths or [str(DEMO_DATA_DIR)]
    entries = expand_inputs(paths)
    if not entries:
        print(f"error: no images or videos found in {', '.join(paths)}", file=err)
        return 2
    results_log, done = None, set()
    if args.log:
        results_log = ResultsLog(args.log)
        try:
            results_log.schema_version()  # opens (or creates) the database now, not at the first part
            if args.resume:
                done = results_log.frame_ids(LOG_SOURCE)
        except ResultsLogError as e:
            print(f"error: cannot open the results log: {e}", file=err)
            return 2
    skipped = len(entries)
    entries = [(path, kind) for path, kind in entries if kind == "video" or printable(path) not in done]
    skipped -= len(entries)

    def not_logged_yet(items: Iterator[InspectItem]) -> Iterator[InspectItem]:
        nonlocal skipped
        for it in items:
            if it.frame is not None and it.frame_id in done:
                skipped += 1
            else:
                yield it

    if args.save_overlays:
        args.save_overlays.mkdir(parents=True, exist_ok=True)
    csv_file = writer = None
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        csv_file = open(args.csv, "w", newline="", encoding="utf-8")
        writer = csv.DictWriter(csv_file, fieldnames=ROW_FIELDS)
        writer.writeheader()
    rows: list[dict] = []
    counts = {"pass": 0, "fail": 0, "error": 0, "not_logged": 0}
    latencies: list[float] = []
    started = time.perf_counter()
    total = sum(1 for _, kind in entries if kind != "video") or None
    bar = tqdm(total=total, unit="part", disable=args.quiet or not err.isatty(), file=err)
    detector.on_notice = lambda text: bar.write(f"warning: {text}", file=err)

    def emit(item: InspectItem, verdict: str, result=None, error: str = "", overlay: str = "",
             archive_error: str = "") -> None:
        if results_log is not None:
            try:
                results_log.add(
                    source=LOG_SOURCE, frame_id=item.frame_id, verdict=verdict, error=error,
                    category="" if result is None else result.category,
                    score=None if result is None else float(result.score),
                    threshold=detector.settings.threshold, model_id=detector.model_id,
                    latency_ms=None if result is None else round(result.latency_ms, 3),
                    overlay_path=overlay, archive_error=archive_error)
            except ResultsLogError as e:
                bar.write(f"error: result NOT logged: {e}", file=err)
                counts["not_logged"] += 1
        row = {
            "index": len(rows), "file": item.file, "frame": "" if item.frame is None else item.frame,
            "verdict": verdict, "score": "" if result is None else round(result.score, 6),
            "threshold": detector.settings.threshold, "category": "" if result is None else result.category,
            "category_source": "" if result is None else result.category_source,
            "category_confidence": "" if result is None or result.category_confidence is None
            else round(result.category_confidence, 4),
            "latency_ms": "" if result is None else round(result.latency_ms, 2),
            "model_id": detector.model_id, "overlay": overlay, "error": error,
        }
        rows.append(row)
        counts[verdict] += 1
        if writer:
            writer.writerow(row)
            csv_file.flush()
        where = item.file + (f" [frame {item.frame}]" if item.frame is not None else "")
        if verdict == "fail":
            bar.write(f"FAIL  {where}  score {result.score:.3f} > {result.threshold:.3f}  ({result.category})", file=out)
        elif verdict == "error":
            bar.write(f"ERROR {where}: {error}", file=err)
        bar.update(1)

    try:
        for batch in _batched(not_logged_yet(iter_inputs(entries)), detector.settings.batch_size):
            good = [it for it in batch if it.rgb is not None]
            results: dict[int, object] = {}
            failures: dict[int, str] = {}
            if good:
                try:
                    for it, res in zip(good, detector.predict([it.rgb for it in good], category=args.category)):
                        results[id(it)] = res
                except (ValueError, RuntimeError) as e:
                    for it in good:
                        try:
                            results[id(it)] = detector.predict([it.rgb], category=args.category)[0]
                        except (ValueError, RuntimeError) as e1:
                            failures[id(it)] = f"inspection failed: {e1 or e}"
            for it in batch:
                if it.rgb is None or id(it) in failures:
                    emit(it, "error", error=it.error or failures[id(it)])
                    continue
                res = results[id(it)]
                verdict = "fail" if res.is_anomalous else "pass"
                overlay = overlay_error = ""
                if args.save_overlays:
                    overlay_path = args.save_overlays / _overlay_name(len(rows), it, verdict)
                    try:
                        write_image(overlay_path, operator_overlay(it.rgb, res.anomaly_map, res.threshold,
                                                                   full_map=args.full_heatmap))
                        overlay = str(overlay_path)
                    except OSError as e:
                        overlay_error = f"cannot save overlay {overlay_path}: {e.strerror or e}"
                        bar.write(f"warning: {overlay_error} (the result is kept)", file=err)
                latencies.append(res.latency_ms)
                emit(it, verdict, res, overlay=overlay, archive_error=overlay_error)
    except KeyboardInterrupt:
        bar.write("interrupted: rows written so far are kept", file=err)
        counts["error"] += 1
    finally:
        bar.close()
        if csv_file:
            csv_file.close()
        if results_log is not None:
            results_log.close()
    elapsed = time.perf_counter() - started
    inspected = counts["pass"] + counts["fail"]
    summary = {
        "inputs": len(rows), "inspected": inspected, "pass": counts["pass"], "fail": counts["fail"],
        "error": counts["error"], "skipped": skipped, "not_logged": counts["not_logged"],
        "yield_percent": round(100.0 * counts["pass"] / inspected, 2) if inspected else None,
        "median_latency_ms": round(float(np.median(latencies)), 2) if latencies else None,
        "seconds": round(elapsed, 2), "model_id": detector.model_id, "model": detector.source,
        "threshold": detector.settings.threshold, "device": detector.describe().device,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2), encoding="utf-8")
        os.replace(tmp, args.json)
    yield_text = f"{summary['yield_percent']:.1f}%" if inspected else "n/a"
    print(f"{inspected} inspected: {counts['pass']} pass, {counts['fail']} fail, {counts['error']} errors; "
          f"yield {yield_text}; median {summary['median_latency_ms']} ms/part on {summary['device']} "
          f"({elapsed:.1f} s)" + (f"; {skipped} skipped (already in {args.log})" if skipped else ""), file=out)
    if counts["not_logged"]:
        print(f"error: {counts['not_logged']} results could not be written to {args.log}", file=err)
    if counts["error"] or counts["not_logged"]:
        return 2
    return 1 if counts["fail"] else 0
