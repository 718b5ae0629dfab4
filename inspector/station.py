"""`main.py station`: a headless inspection station on the line — source + trigger + engine + outputs,
no window. Status lines on stdout; SIGTERM or SIGINT stops it cleanly (the part in hand is finished,
logged and queued for the outputs; what the outputs did not take yet stays in the outbox).

    python main.py station --recipe coins --trigger plc --sink modbus://0.0.0.0:1502?unit=1

The recipe (saved in the window: model, category, thresholds, region of interest, source, outputs)
says what to inspect; --model, --source, --threshold and --sink add to it or replace it. Each
acquisition names its part: the PLC's part id, the scanned barcode, or a counter; that id is the
frame id in the results log and the `part_id` of every output's message.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from inspection import ERROR, Frame, Inspection, InspectionRecipe, InspectionSession, SessionSummary
from inspection.results_log import ResultsLog, ResultsLogError
from lineio.cli import STATION_SINK_WAIT_S, add_sink_arguments, close_outputs, open_outputs, print_status
from lineio.triggers import TRIGGER_MODES, PartCounter, StdinTrigger, Trigger, TriggerQueue

from .paths import DEMO_DATA_DIR, DEMO_MODEL_DIR, user_data_dir
from .recipes import Recipe, RecipeError, RecipeStore
from .sources import FrameSource, SourceError, SourceSpec, open_source, spec_for_path

__all__ = ["add_station_arguments", "run_station", "Station", "FrameGrabber", "RECIPE_OUTPUTS"]

RECIPE_OUTPUTS = "outputs"        # Recipe.extra key: the recipe's output URLs (Line > Outputs in the window)
RECIPE_TRIGGER = "trigger"        # Recipe.extra key: the recipe's trigger mode
RESULTS_LOG_FILE = "results.sqlite"   # the window's results log, in the user data folder
FRAME_TIMEOUT_S = 5.0             # a live camera that gives no frame for this long fails the part (error row)
POLL_S = 0.2                      # how often the waiting loop looks at the stop flag
RECIPE_SWITCH_TIMEOUT_S = 120.0   # a PLC's recipe change waits this long for the station to take it
PLC_SCHEMES = ("modbus", "opcua")
WARM_UP_SIDE = 256                # pixels of the blank warm-up frame


def add_station_arguments(p: argparse.ArgumentParser) -> None:
    from training.calibrate_runtime import add_runtime_arguments

    p.add_argument("--recipe", default=None, metavar="NAME", help="the saved recipe to run (Recipes in the window)")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the recipe's, else the demo's)")
    p.add_argument("--source", default=None, metavar="SOURCE",
                   help="camera index, stream URL, video, folder or image (default: the recipe's, else the demo images)")
    p.add_argument("--category", default=None,
                   help="product category (default: the recipe's, else chosen by the classifier)")
    p.add_argument("--threshold", type=float, default=None,
                   help="fail threshold (default: the recipe's, else the model's); the review level follows it")
    p.add_argument("--trigger", choices=TRIGGER_MODES, default=None,
                   help="free: inspect frame after frame; software: one part per line on standard input (a barcode "
                        "scanner: the line is the part id); plc: the Modbus TRIGGER coil or the OPC UA StartSingleJob "
                        "method (default: the recipe's, else plc with a modbus:// or opcua:// output, else free)")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help=f"results log (default: the window's, {RESULTS_LOG_FILE} in the user data folder)")
    p.add_argument("--save-overlays", type=Path, default=None, metavar="DIR",
                   help="save each part's heatmap overlay here (its path goes into every output's message)")
    p.add_argument("--max-parts", type=int, default=None, metavar="N", help="stop after N parts")
    p.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS",
                   help="print the outputs' status this often (default 10; 0: only at the end)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    add_runtime_arguments(p)
    add_sink_arguments(p, STATION_SINK_WAIT_S)


class FrameGrabber:
    """One frame per acquisition. A live source (camera, stream) is read continuously in its own
    thread and an acquisition takes the first frame captured after the trigger (never a stale one
    from the driver's buffer); files and folders are read one frame per acquisition."""

    def __init__(self, source: FrameSource, live: bool):
        self.source = source
        self.live = live
        self.ended = False
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read_live, name="grabber", daemon=True) if live else None

    def start(self) -> "FrameGrabber":
        self.source.open()
        if self._thread is not None:
            self._thread.start()
        return self

    def _read_live(self) -> None:
        while not self._stop:
            frame = self.source.read()
            with self._cond:
                if frame is None:
                    self.ended = True
                else:
                    self._latest = frame
                self._cond.notify_all()
            if frame is None:
                return

    def grab(self, after: float) -> Frame | None:
        """A frame captured at or after `after` (time.monotonic()); None when the source has ended."""
        if not self.live:
            frame = self.source.read()
            self.ended = frame is None
            return frame
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        with self._cond:
            while not self.ended and (self._latest is None or self._latest.captured < after):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Frame(None, self.source.name, "", 0, time.monotonic(), True,
                                 error=f"no frame from {self.source.name} within {FRAME_TIMEOUT_S:.0f} s")
                self._cond.wait(remaining)
            return None if self.ended and self._latest is None else self._latest

    def close(self) -> None:
        """Stop the reading thread, then release the source."""
        self._stop = True
        self.source.request_stop()
        if self._thread is not None:
            self._thread.join(FRAME_TIMEOUT_S)
        self.source.close()


class _StatusPrinter:
    """One stdout line per part: part id, trigger, verdict, score, time."""

    def __init__(self, out):
        self.out = out
        self.origin = ""

    def on_inspection(self, part: Inspection) -> None:
        if part.verdict == ERROR:
            text = f"error: {part.error or part.log_error}"
        else:
            text = f"{part.verdict} score {part.score:.3f} (fail > {part.fail_threshold:.3f}) {part.category} " \
                   f"{part.latency_ms:.0f} ms"
        print(f"part {part.frame_id} [{self.origin}] {text}", file=self.out, flush=True)

    def on_session_end(self, summary: SessionSummary) -> None:
        pass


class Station:
    """The running station: waits for a trigger, grabs a frame, inspects it through the session
    (which logs it and hands it to the outputs), and mirrors ready/busy to the PLC-facing outputs."""

    def __init__(self, session: InspectionSession, grabber: FrameGrabber, outputs, mode: str, out, err,
                 recipes: RecipeStore | None = None):
        self.session = session
        self.grabber = grabber
        self.outputs = outputs
        self.mode = mode
        self.out, self.err = out, err
        self.recipes = recipes
        self.stop = threading.Event()
        self.counter = PartCounter()
        self.printer = _StatusPrinter(out)
        self.session.subscribe(self.printer)
        self.triggers = TriggerQueue(on_accept=lambda trigger: self._state("busy"))
        self._recipe_request: tuple[Recipe, threading.Event, list[str]] | None = None
        self._lock = threading.Lock()
        if outputs is not None:
            outputs.set_trigger_handler(self.triggers.accept if mode != "free" else None)
            outputs.set_recipe_handler(self.select_recipe if recipes is not None else None)

    def _state(self, state: str, detail: str = "") -> None:
        if self.outputs is not None:
            self.outputs.set_state(state, detail)

    def select_recipe(self, name: str) -> str:
        """A PLC selects a recipe: applied between two parts; '' when done, else the reason it was not."""
        try:
            recipe = self.recipes.load(name)
        except RecipeError as e:
            return str(e)
        done, problems = threading.Event(), []
        with self._lock:
            self._recipe_request = (recipe, done, problems)
        if not done.wait(RECIPE_SWITCH_TIMEOUT_S):
            return f"the station did not take recipe {name!r} within {RECIPE_SWITCH_TIMEOUT_S:.0f} s"
        return problems[0] if problems else ""

    def _apply_recipe_request(self) -> None:
        with self._lock:
            request, self._recipe_request = self._recipe_request, None
        if request is None:
            return
        recipe, done, problems = request
        model_path = str(self.session.model.source)
        if recipe.model and Path(recipe.model).resolve() != Path(model_path).resolve():
            problems.append(f"recipe {recipe.name!r} uses another model ({recipe.model}); "
                            "restart the station with it")
        else:
            self.session.set_recipe(inspection_recipe(recipe, None))
            print(f"recipe {recipe.name!r} selected", file=self.out, flush=True)
        done.set()

    def run(self, max_parts: int | None = None, status_every: float = 10.0) -> int:
        """Inspect until stopped, the source ends or `max_parts`; returns the number of parts."""
        parts = 0
        next_status = time.monotonic() + status_every if status_every > 0 else float("inf")
        self._state("ready")
        while not self.stop.is_set() and (max_parts is None or parts < max_parts):
            self._apply_recipe_request()
            if time.monotonic() >= next_status and self.outputs is not None:
                print_status(self.outputs, self.out)
                next_status = time.monotonic() + status_every
            if self.mode == "free":
                trigger = Trigger("", "free", time.monotonic())
            else:
                trigger = self.triggers.next(POLL_S)
                if trigger is None:
                    continue
            self._state("busy")
            frame = self.grabber.grab(trigger.time)
            if frame is None:
                print(f"the source {self.grabber.source.name} has ended", file=self.out, flush=True)
                break
            part_id = trigger.part_id or self.counter.next()
            self.printer.origin = trigger.origin
            self.session.inspect([replace(frame, frame_id=part_id, index=parts, file=frame.file or frame.frame_id)])
            parts += 1
            if frame.rgb is None:   # no picture (camera lost, unreadable file): the PLC sees FAULT until the next one
                self._state("error", frame.error)
            else:
                self._state("ready")
        return parts


def inspection_recipe(recipe: Recipe | None, threshold: float | None, model_threshold: float | None = None) \
        -> InspectionRecipe:
    """How the station judges parts: the recipe's category, thresholds and ROI; `threshold` (the
    command line) replaces both thresholds; without a recipe the model's threshold."""
    base = InspectionRecipe(thumbnails=False, view_max_side=0)
    if recipe is not None:
        base = replace(base, category=recipe.category, fail_threshold=recipe.fail_threshold,
                       review_threshold=recipe.review_threshold, roi=recipe.roi_value, recipe=recipe.name,
                       recipe_version=f"r{recipe.revision}")
    elif model_threshold is not None:
        base = replace(base, fail_threshold=model_threshold, review_threshold=model_threshold)
    if threshold is not None:   # the command line changed the recipe's judgement: 'r3*' as in the window
        base = replace(base, fail_threshold=threshold, review_threshold=min(threshold, base.review_threshold),
                       recipe_version=base.recipe_version + "*" if base.recipe_version else "")
    return base


def _source_spec(args, recipe: Recipe | None) -> SourceSpec:
    if args.source is not None:
        return spec_for_path(args.source)
    if recipe is not None and recipe.source_spec is not None:
        return recipe.source_spec
    return spec_for_path(str(DEMO_DATA_DIR))


def _warm_up(model, category: str | None, err) -> None:
    """One inspection of a blank frame before the station says ready, so that the first real part
    does not pay for the first run's set-up (measured: 2.5 s instead of 0.35 s on the demo model)."""
    try:
        model.predict([np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), np.uint8)], category=category)
    except Exception as e:  # noqa: BLE001 - the real parts will say what is wrong
        print(f"warning: the warm-up inspection failed: {e}", file=err)


def run_station(args: argparse.Namespace, out=None, err=None) -> int:
    """Run the station until SIGTERM / SIGINT, the source's end or --max-parts; the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    from engine.checkpoint import CheckpointError
    from engine.runtime_choice import load_on_runtime
    from training.calibrate_runtime import checked_overrides

    store = RecipeStore()
    recipe = None
    if args.recipe:
        try:
            recipe = store.load(args.recipe)
        except RecipeError as e:
            names = store.names()
            print(f"error: {e}" + (f" (recipes: {', '.join(names)})" if names else " (no recipes saved yet)"), file=err)
            return 2
    model_path = Path(args.model or (recipe.model if recipe and recipe.model else DEMO_MODEL_DIR))
    try:
        spec = _source_spec(args, recipe)
        overrides = {k: v for k, v in (("reverse_steps", recipe and recipe.reverse_steps),
                                       ("gate_fusion", recipe and recipe.gate_fusion)) if v is not None}
        if overrides.get("reverse_steps"):
            overrides["start_t"] = overrides["reverse_steps"]
        model, choice = load_on_runtime(model_path, device=args.device, batch_size=1, **overrides,
                                        **checked_overrides(args))
    except (CheckpointError, FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        print(f"error: cannot start the station: {e}", file=err)
        return 2
    if choice is not None:
        print(f"runtime: {choice.name} ({choice.reason})", file=out)
    urls = list(dict.fromkeys([*((recipe.extra.get(RECIPE_OUTPUTS) or []) if recipe else []), *args.sink]))
    mode = args.trigger or (recipe.extra.get(RECIPE_TRIGGER) if recipe else None) or \
        ("plc" if any(u.split(":", 1)[0].lower() in PLC_SCHEMES for u in urls) else "free")
    if mode == "plc" and not any(u.split(":", 1)[0].lower() in PLC_SCHEMES for u in urls):
        print("error: --trigger plc needs a modbus:// or opcua:// output for the PLC to trigger through", file=err)
        return 2
    log_path = args.log or user_data_dir() / RESULTS_LOG_FILE
    results_log = ResultsLog(log_path)
    try:
        results_log.schema_version()
    except ResultsLogError as e:
        print(f"error: cannot open the results log: {e}", file=err)
        return 2
    outputs = None
    if urls:
        outputs = open_outputs(urls, args.outbox or log_path, args.station, err)
        if outputs is None:
            results_log.close()
            return 2
    if args.save_overlays:
        args.save_overlays.mkdir(parents=True, exist_ok=True)
    grabber = FrameGrabber(open_source(spec), spec.live)
    try:
        grabber.start()
    except SourceError as e:
        print(f"error: {e}", file=err)
        if outputs is not None:
            outputs.set_state("error", str(e))
            close_outputs(outputs, 0.0, out, err)
        results_log.close()
        return 2
    judged = inspection_recipe(recipe, args.threshold, model.settings.threshold)
    if args.category is not None:
        try:
            model.class_id(args.category)
        except ValueError as e:
            print(f"error: {e}", file=err)
            grabber.close()
            results_log.close()
            if outputs is not None:
                close_outputs(outputs, 0.0, out, err)
            return 2
        judged = replace(judged, category=args.category)
    session = InspectionSession(model, judged,
                                results_log=results_log, overlay_dir=args.save_overlays,
                                on_problem=lambda text, severity: print(f"{severity}: {text}", file=err, flush=True))
    if outputs is not None:
        session.subscribe(outputs)
    _warm_up(model, session.recipe.category, err)
    station = Station(session, grabber, outputs, mode, out, err, recipes=store)
    previous = {sig: signal.signal(sig, lambda *_: station.stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    if mode == "software":
        StdinTrigger(sys.stdin, station.triggers,
                     on_refused=lambda text: print(f"trigger {text!r} refused: one is already waiting", file=err)).start()
    name = outputs.station if outputs is not None else (args.station or "station")
    print(f"station {name}: recipe {recipe.name if recipe else '(none)'}, model {model_path} ({model.model_id}), "
          f"source {spec.label()}, trigger {mode}, log {log_path}"
          + (f", outputs {', '.join(outputs.names)}" if outputs else ""), file=out, flush=True)
    parts = 0
    try:
        parts = station.run(args.max_parts, args.status_every)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        summary = session.close()
        grabber.close()
        results_log.close()
        if outputs is not None:
            close_outputs(outputs, args.sink_wait, out, err)
    counts = summary.counts
    print(f"station stopped after {parts} parts: {counts.get('pass', 0)} pass, {counts.get('review', 0)} review, "
          f"{counts.get('fail', 0)} fail, {counts.get(ERROR, 0)} errors", file=out, flush=True)
    return 2 if summary.not_logged else 0
