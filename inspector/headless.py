"""`main.py inspect`: inspect images, folders (recursively) and videos without a window.

A thin driver of the inspection session (inspection.session), the same one the window's engine
worker drives: every input gets one row (CSV written and flushed as it goes, JSON at the end),
unreadable files included with verdict `error`. With `--log`, each row is also committed to the
SQLite results log (the one the window shows) before it is written anywhere else or printed, and
`--resume` skips inputs that a killed or interrupted run already logged. Exit code 0 when all
pass, 1 when any part fails, 2 when anything could not be inspected (or the model could not
be loaded).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from inspection import FAIL, ERROR, Frame, Inspection, InspectionRecipe, InspectionSession, SessionSummary
from inspection.outputs import ROW_FIELDS, CsvWriter, JsonWriter
from inspection.results_log import ResultsLog, ResultsLogError
from lineio.cli import OUTBOX_FILE, add_sink_arguments, close_outputs, open_outputs

from .imageio import ImageReadError, is_video, list_images, natural_path_key, printable, read_image
from .paths import DEMO_DATA_DIR, DEMO_MODEL_DIR, user_data_dir
from .sources import SourceError, VideoFileSource

__all__ = ["iter_inputs", "expand_inputs", "run_inspect", "add_inspect_arguments", "ROW_FIELDS", "LOG_SOURCE"]

LOG_SOURCE = "inspect"   # the `source` of results-log rows written by this command


def _input(file, frame_number: int | None = None, rgb=None, error: str = "") -> Frame:
    """A frame of `main.py inspect`: logged under LOG_SOURCE as the file path, with '#frame' for video
    frames (as in the window); odd bytes in names as \\xNN. Its index is set when it is queued."""
    file = printable(str(file))
    frame_id = file if frame_number is None else f"{file}#{frame_number}"
    return Frame(rgb, LOG_SOURCE, frame_id, -1, error=printable(error), file=file, frame_number=frame_number)


def _video_frames(path: Path) -> Iterator[Frame]:
    """Every frame of a video; a video that cannot be opened, or stops decoding before its
    announced frame count, also gets an error item saying so (as in the window)."""
    source = VideoFileSource(path)
    try:
        source.open()
    except SourceError as e:
        yield _input(path, error=_without_path(str(e), path))
        return
    try:
        while (frame := source.read()) is not None:
            yield _input(path, frame.index, frame.rgb)
    finally:
        source.close()
    if source.end_level != "info":
        yield _input(path, error=_without_path(source.end_message, path))


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


def iter_inputs(entries: list[tuple[Path, str]]) -> Iterator[Frame]:
    """Decode inputs lazily, one item per image or video frame; failures become error items."""
    for path, kind in entries:
        if kind == "missing":
            yield _input(path, error="no such file or folder")
        elif kind == "video":
            yield from _video_frames(path)
        else:
            try:
                yield _input(path, rgb=read_image(path))
            except ImageReadError as e:
                yield _input(path, error=e.problem)


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
    from training.calibrate_runtime import add_runtime_arguments

    add_runtime_arguments(p)
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
    add_sink_arguments(p)


def _load_detector(args, err) -> object | None:
    from engine.checkpoint import CheckpointError
    from engine.loading import model_kind

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
        from engine.runtime_choice import load_on_runtime
        from training.calibrate_runtime import runtime_overrides

        detector, choice = load_on_runtime(model, vae=args.vae, device=args.device, **overrides,
                                           **runtime_overrides(args))
        if choice is not None:
            if not args.quiet:
                print(f"runtime: {choice.name} ({choice.reason})", file=err)
        return detector
    except (CheckpointError, FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        hint = "" if args.model else " (the bundled demo model; rebuild it with `python scripts/make_demo_model.py`)"
        print(f"error: cannot load model {model}{hint}: {e}", file=err)
        return None


class _ConsolePrinter:
    """The command's screen output: one line per failing part (stdout) or error (stderr), a progress
    bar on a terminal."""

    def __init__(self, bar, out, err):
        self.bar, self.out, self.err = bar, out, err

    def on_inspection(self, part: Inspection) -> None:
        where = part.file + (f" [frame {part.frame_number}]" if part.frame_number is not None else "")
        if part.verdict == FAIL:
            self.bar.write(f"FAIL  {where}  score {part.score:.3f} > {part.fail_threshold:.3f}  ({part.category})",
                           file=self.out)
        elif part.verdict == ERROR:
            self.bar.write(f"ERROR {where}: {part.error}", file=self.err)
        self.bar.update(1)

    def on_session_end(self, summary: SessionSummary) -> None:
        self.bar.close()


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
    outputs = None
    if args.sink:
        outputs = open_outputs(args.sink, args.outbox or args.log or user_data_dir() / OUTBOX_FILE, args.station, err)
        if outputs is None:
            if results_log is not None:
                results_log.close()
            return 2
    skipped = len(entries)
    entries = [(path, kind) for path, kind in entries if kind == "video" or printable(path) not in done]
    skipped -= len(entries)

    def queued(frames: Iterator[Frame]) -> Iterator[Frame]:
        """The frames not logged yet, numbered as their rows will be."""
        nonlocal skipped
        index = 0
        for frame in frames:
            if frame.frame_number is not None and frame.frame_id in done:
                skipped += 1
                continue
            yield replace(frame, index=index)
            index += 1

    if args.save_overlays:
        args.save_overlays.mkdir(parents=True, exist_ok=True)
    threshold = detector.settings.threshold
    total = sum(1 for _, kind in entries if kind != "video") or None
    bar = tqdm(total=total, unit="part", disable=args.quiet or not err.isatty(), file=err)
    detector.on_notice = lambda text: bar.write(f"warning: {text}", file=err)
    session = InspectionSession(
        detector, InspectionRecipe(category=args.category, fail_threshold=threshold, review_threshold=threshold,
                                   thumbnails=False, view_max_side=0, full_heatmap=args.full_heatmap),
        results_log=results_log, overlay_dir=args.save_overlays,
        on_problem=lambda text, severity: bar.write(f"{severity}: {text}", file=err))
    json_writer = JsonWriter(args.json) if args.json else None
    for listener in (CsvWriter(args.csv) if args.csv else None, json_writer, _ConsolePrinter(bar, out, err), outputs):
        if listener is not None:
            session.subscribe(listener)
    interrupted = 0
    try:
        session.run(queued(iter_inputs(entries)))
    except KeyboardInterrupt:
        bar.write("interrupted: rows written so far are kept", file=err)
        interrupted = 1
    finally:
        summary = session.summary()
        errors = summary.counts[ERROR] + interrupted
        described = {"error": errors, "skipped": skipped, "model_id": detector.model_id, "model": detector.source,
                     "threshold": threshold, "device": detector.describe().device,
                     "runtime": getattr(detector.settings, "runtime", "torch"), "precision": detector.settings.precision}
        if json_writer is not None:
            json_writer.extra_summary = described
        session.close()
        if results_log is not None:
            results_log.close()
        if outputs is not None:
            close_outputs(outputs, args.sink_wait, out, err)
    counts = summary.counts
    yield_text = f"{summary.yield_percent:.1f}%" if summary.inspected else "n/a"
    print(f"{summary.inspected} inspected: {counts['pass']} pass, {counts['fail']} fail, {errors} errors; "
          f"yield {yield_text}; median {summary.median_latency_ms} ms/part on {described['device']} "
          f"({described['runtime']} {described['precision']}) "
          f"({summary.seconds:.1f} s)" + (f"; {skipped} skipped (already in {args.log})" if skipped else ""), file=out)
    if summary.not_logged:
        print(f"error: {summary.not_logged} results could not be written to {args.log}", file=err)
    if errors or summary.not_logged:
        return 2
    return 1 if counts["fail"] else 0
