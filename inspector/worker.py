"""The engine worker: a QObject living in its own QThread that owns the Detector and drives an
InspectionSession (inspection.session) with it.

Frames arrive through a FrameQueue (latest-frame-wins for live sources, every frame for
folders and videos, taken in detector-sized batches) and go to the session, which runs the
model, decides the verdict, commits the results-log row and archives images; the worker listens
to the session and only then emits `inspected`, so a verdict is never shown before it is logged.
A live source on a model that runs CPU lanes is inspected staggered (`inspector.live_lanes`): each
lane takes the newest frame when it is free and runs the model on it alone, the worker thread
records the results in the order the frames were started. A live source on a model that runs in one
lane and has stages (`engine.runtime.StagedModel`: the OpenVINO default) goes through a two-thread
pipeline (`inspector.live_pipeline`): a network thread runs the networks, the worker thread
prepares the next frame meanwhile and finishes and records the previous one.
Any exception is reported through `problem` and the worker carries on with the next frames; out of
memory, the engine falls back to smaller batches, then to the CPU, and says so through `problem`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from engine.runtime import StagedModel

from inspection import Inspection, InspectionRecipe, InspectionSession, SessionSummary, apply_roi, calibrate_thresholds
from inspection.results_log import Archiver, ArchiveQueue, ResultsLog

from .frame_queue import FrameQueue
from .live_lanes import LiveLanes
from .live_pipeline import LivePipeline
from .imageio import ImageReadError, read_image
from .loaded_model import LoadedModel

__all__ = ["EngineWorker", "default_loader", "engine_threads", "engine_lanes", "keep_python_thread_state",
           "single_threaded_opencv"]

log = logging.getLogger(__name__)


def default_loader(path: str, **overrides):
    """Load a model folder or reference checkpoint (imports the engine on first use); without a
    runtime / precision override it runs on the machine's default (engine.runtime_choice)."""
    from engine.runtime_choice import load_on_runtime

    return load_on_runtime(path, **overrides)[0]


def keep_python_thread_state() -> None:
    """Give the calling thread (the worker's QThread) one Python thread state for its whole life.

    A thread Qt started gets a fresh Python thread state for each queued slot call, deleted when the
    call returns. Extension code that keeps the state of the thread it runs on between calls
    (pybind11 in torch and OpenVINO) then uses a deleted one: the window aborted with "double free
    or corruption" after the first-start runtime check (OpenVINO conversion, NNCF int8) and crashed
    with one CPU lane on OpenVINO. One extra PyGILState_Ensure, never released, keeps the state
    alive from the first model call to the end of the thread (it is freed with the process)."""
    ctypes.pythonapi.PyGILState_Ensure.restype = ctypes.c_int
    ctypes.pythonapi.PyGILState_Ensure()


def engine_threads() -> int:
    """CPU threads for model code: all cores but one, which stays free for the display and the
    camera; $DECO_INSPECTOR_THREADS overrides. Oversubscribed cores make PyTorch many times slower."""
    override = os.environ.get("DECO_INSPECTOR_THREADS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, (os.cpu_count() or 2) - 1)


def _set_torch_threads(count: int) -> None:
    """The calling thread's PyTorch intra-op thread count (nothing without PyTorch)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(count)


def single_threaded_opencv() -> None:
    """Process-wide (call it before other threads use OpenCV): OpenCV calls run in the thread that
    makes them, without OpenCV's own worker pool. Its workers spin-wait after every call and take
    cores from the engine's threads, and the app's OpenCV work is small (display resizes, map
    resizes, PNG encoding): on the live line of benchmarks/bench_live.py they kept 0.07 cores busy,
    about 5 ms of CPU per inspected frame."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def engine_lanes(runtime: str = "torch") -> int:
    """CPU lanes for a model whose settings leave them automatic: one single-threaded lane per
    core for torch (see engine.acceleration.CpuLanes; a lane does not spin-wait for the other
    cores, so the display thread can share them); one lane for OpenVINO, whose networks then run
    on `engine_threads()` threads and whose live frames go through the two-thread pipeline
    (`inspector.live_pipeline`; benchmarks/bench_live.py, demo model, int8, 2 cores: 17.4 frames/s
    at a median frame age of 104 ms, against 15.1 at 154 ms in two lanes); $DECO_INSPECTOR_LANES
    overrides."""
    override = os.environ.get("DECO_INSPECTOR_LANES", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    if runtime == "openvino":
        return 1
    return max(1, os.cpu_count() or 1)


def _use_engine_lanes(detector) -> None:
    """Give a detector that prefers lanes (its lanes setting automatic, a small UNet on a CPU)
    `engine_lanes(its runtime)` lanes: the worker thread itself runs one intra-op thread."""
    if detector.prefers_lanes:
        detector.with_settings(lanes=engine_lanes(getattr(detector.settings, "runtime", "torch")))


class EngineWorker(QObject):
    """Owns the detector; all model work happens in the thread this object is moved to."""

    model_loading = Signal(str)
    model_loaded = Signal(object)
    model_failed = Signal(str)
    settings_applied = Signal(object)
    inspected = Signal(object)
    problem = Signal(str)
    calibrated = Signal(object)
    calibration_failed = Signal(str)
    busy_changed = Signal(bool, str)
    _wake = Signal()

    def __init__(self, frames: FrameQueue, log_path, archive_root,
                 loader: Callable[..., object] | None = None, parent=None):
        super().__init__(parent)
        self.frames = frames
        self.loader = loader or default_loader
        self.results_log = ResultsLog(log_path)
        self.archive = ArchiveQueue(Archiver(archive_root), log_path, on_error=self.problem.emit)
        self.session = InspectionSession(None, InspectionRecipe(), results_log=self.results_log, archive=self.archive,
                                         on_problem=lambda text, severity: self._report(text))
        self.session.subscribe(self)
        self.model_path = ""
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._last_problem = ""
        self._thread_prepared = False
        self._lanes_automatic = False   # the loaded model left its lanes to the worker (engine_lanes)
        self._live: LiveLanes | None = None
        self._pipeline: LivePipeline | None = None
        self._timed_wake = False        # a timer will wake the worker (the pipeline's next preparation)
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        frames.on_put = self.wake

    @property
    def detector(self):
        """The model the session inspects with (None before one is loaded)."""
        return self.session.model

    @detector.setter
    def detector(self, model) -> None:
        self.session.model = model

    @property
    def context(self) -> InspectionRecipe:
        """The recipe frames are judged by now."""
        return self.session.recipe

    # ----------------------------------------------------------------- session listener
    def on_inspection(self, inspection: Inspection) -> None:
        self.inspected.emit(inspection)

    def on_session_end(self, summary: SessionSummary) -> None:
        """The window's session lasts as long as the worker; nothing to do at its end."""

    # ----------------------------------------------------------------- commands (queued slots)
    @Slot(str, object)
    def load_model(self, path: str, overrides: dict | None = None) -> None:
        name = Path(path).name or str(path)
        self._prepare_thread()
        self._finish_live()
        self.model_loading.emit(str(path))
        self.busy_changed.emit(True, f"Loading model {name}…")
        previous = self.detector, self.model_path
        try:
            self.detector = self.loader(str(path), **(overrides or {}))
            self.detector.on_notice = self._engine_notice
            self._lanes_automatic = bool(self.detector.prefers_lanes)
            _use_engine_lanes(self.detector)
            self.model_path = str(path)
            info = LoadedModel.of(self.detector, self.model_path)
        except Exception as e:  # noqa: BLE001 - any loading failure is reported, the old model stays
            log.warning("model load failed: %s", traceback.format_exc())
            self.detector, self.model_path = previous
            self.model_failed.emit(f"Cannot load model {path}: {e}")
        else:
            self.model_loaded.emit(info)
        finally:
            self.busy_changed.emit(False, "")

    def _prepare_thread(self) -> None:
        """Once, before any model code runs on this (the worker's) thread: keep its Python thread
        state (`keep_python_thread_state`) and set its intra-op thread count (other threads keep theirs)."""
        if self._thread_prepared:
            return
        self._thread_prepared = True
        keep_python_thread_state()
        _set_torch_threads(engine_threads())

    @Slot(object)
    def apply_settings(self, changes: dict) -> None:
        """Change detector run-time settings (reverse_steps, gate_fusion, ...); bad values are reported
        and the previous settings kept (the detector checks a copy before it replaces its own)."""
        det = self.detector
        if det is None:
            return
        self._finish_live()
        old = det.settings
        changes = dict(changes)
        if "reverse_steps" in changes and "start_t" not in changes:
            steps = int(changes["reverse_steps"])
            changes["start_t"] = steps if old.start_t == old.reverse_steps else min(old.start_t, steps)
        switching = "runtime" in changes or "precision" in changes
        if "runtime" in changes and "lanes" not in changes and self._lanes_automatic:
            changes["lanes"] = engine_lanes(changes["runtime"])   # the lanes that suit the new runtime
        if switching:   # building an OpenVINO network or a quantized one can take a while the first time
            self.busy_changed.emit(True, f"Switching the model to {changes.get('runtime', old.runtime)} "
                                         f"{changes.get('precision', old.precision)}…")
        try:
            det.with_settings(**changes)
        except (ValueError, TypeError, RuntimeError) as e:
            self.problem.emit(f"Cannot change model settings: {e}")
        finally:
            if switching:
                self.busy_changed.emit(False, "")
        self.settings_applied.emit(LoadedModel.of(det, self.model_path))

    @Slot(object)
    def configure(self, recipe: InspectionRecipe) -> None:
        self.session.set_recipe(recipe)

    @Slot(object, float, float)
    def calibrate(self, paths: list, percentile: float, margin: float) -> None:
        """Score known-good images and suggest thresholds (percentile of scores + margin)."""
        if self.detector is None:
            self.calibration_failed.emit("Calibration needs a model: open a model first")
            return
        self._finish_live()
        self.busy_changed.emit(True, f"Calibrating on {len(paths)} good images…")
        ctx = self.context
        scores: list[float] = []
        errors: list[str] = []
        try:
            batch: list[np.ndarray] = []
            size = self.detector.settings.batch_size
            for k, path in enumerate(paths):
                try:
                    batch.append(apply_roi(read_image(path), ctx.roi)[0])
                except ImageReadError as e:
                    errors.append(str(e))
                if len(batch) == size or (k == len(paths) - 1 and batch):
                    scores.extend(r.score for r in self.detector.predict(batch, category=ctx.category))
                    batch = []
            self.calibrated.emit(calibrate_thresholds(scores, percentile, margin, tuple(errors)))
        except Exception as e:  # noqa: BLE001 - reported to the operator, the worker keeps going
            self.calibration_failed.emit(f"Calibration failed: {e}")
        finally:
            self.busy_changed.emit(False, "")

    @Slot()
    def close_log(self) -> None:
        """Finish archiving and close the database connections (at shutdown)."""
        self._finish_live()
        if self._live is not None:
            self._live.close()
            self._live = None
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self.session.close()
        self.archive.close()
        self.results_log.close()

    # ----------------------------------------------------------------- the frame loop
    def wake(self) -> None:
        """Ask for a drain of the frame queue (any thread; repeated calls coalesce)."""
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake.emit()

    @Slot()
    def _drain(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        lanes = 1
        try:
            if self.detector is not None and self._pipelined():
                self._run_pipeline()
                return
            if self.detector is not None:
                lanes = self._live_lane_count()
                if lanes > 1:
                    self._start_live(lanes)   # feed the free lanes first, then record what they finished
                    self._record_live()
                    return
            self._record_live()
            if self.detector is None:
                dropped = self.frames.take(max_items=10_000)
                if dropped:
                    self._report("No model loaded: frames are not inspected (open a model first)")
                return
            self._finish_live()
            n = self.detector.settings.batch_size if self.frames.policy == "every" else self.frames.keep
            batch = self.frames.take(max_items=n)
            if batch:
                self.session.inspect(batch)
        except Exception as e:  # noqa: BLE001 - the loop must survive anything
            log.error("engine worker error: %s", traceback.format_exc())
            self._report(f"Engine error: {type(e).__name__}: {e}")
        finally:
            # with live lanes a finishing lane wakes the worker; waking while every lane is busy would spin
            if self._pipeline_active():
                pass  # the pipeline wakes the worker itself (a finished frame, a timer, a new frame)
            elif len(self.frames) and (lanes <= 1 or self._live is None or self._live.free):
                self.wake()

    # ----------------------------------------------------------------- staggered live lanes
    def _live_lane_count(self) -> int:
        """Lanes for staggered inspection: the model's CPU lanes for a live source, else 1 (batches)."""
        if self.frames.policy != "latest":
            return 1
        return self.detector.lane_count(self.detector.settings.batch_size)

    def _start_live(self, lanes: int) -> None:
        """Give every free lane the newest frame (older waiting frames are dropped as stale)."""
        if self._live is None or self._live.size != lanes:
            self._finish_live()
            if self._live is not None:
                self._live.close()
            self._live = LiveLanes(lanes, on_done=self.wake)
        while self._live.free > 0:
            frames = self.frames.take_newest()
            if not frames:
                return
            self._live.start(self.session.predict, frames, self.session.recipe)

    def _record_live(self) -> None:
        """Judge, log and publish the lanes' finished frames, in the order they were started."""
        if self._live is None:
            return
        for (frames, recipe), outcome in self._live.finished():
            if isinstance(outcome, BaseException):
                log.error("engine lane error: %s", "".join(traceback.format_exception(outcome)))
                self._report(f"Engine error: {type(outcome).__name__}: {outcome}")
                continue
            self.session.record(frames, outcome, recipe)

    def _finish_live(self) -> None:
        """Wait for the frames on the lanes or in the pipeline and record them (before the model or
        its settings change)."""
        if self._live is not None and self._live.pending():
            self._live.wait()
            self._record_live()
        if self._pipeline is not None and self._pipeline.pending():
            self._pipeline.wait()
            self._record_pipeline()

    # ----------------------------------------------------------------- the live pipeline
    def _pipelined(self) -> bool:
        """A live source, a model with stages, and one lane: the two-thread pipeline."""
        return (self.frames.policy == "latest" and isinstance(self.detector, StagedModel)
                and self._live_lane_count() == 1)

    def _pipeline_active(self) -> bool:
        return self._pipeline is not None and self.detector is not None and self._pipelined()

    def _run_pipeline(self) -> None:
        """Prepare the newest frame when the network thread will want it, and record the frames it
        is done with (in the order they were started)."""
        if self._pipeline is None:
            self._finish_live()   # frames still on staggered lanes go first
            self._pipeline = LivePipeline(on_done=self.wake, setup=lambda: _set_torch_threads(engine_threads()))
        pipeline = self._pipeline
        delay = pipeline.next_prepare_in()
        if delay == 0.0:
            frames = self.frames.take_newest()
            if frames:
                started = time.perf_counter()
                staged = self.session.begin(frames, self.session.recipe)
                pipeline.note_prepare(time.perf_counter() - started)
                pipeline.submit(staged)
        self._record_pipeline()
        delay = pipeline.next_prepare_in()
        if delay and len(self.frames) and not self._timed_wake:
            self._timed_wake = True
            QTimer.singleShot(max(1, round(delay * 1000)), self._timer_wake)

    def _timer_wake(self) -> None:
        self._timed_wake = False
        self.wake()

    def _record_pipeline(self) -> None:
        """Finish, judge, log and publish the frames the network thread is done with."""
        if self._pipeline is None:
            return
        for staged in self._pipeline.finished():
            try:
                self.session.record(staged.frames, staged.finish(), staged.recipe)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                log.error("live pipeline error: %s", traceback.format_exc())
                self._report(f"Engine error: {type(e).__name__}: {e}")

    def _engine_notice(self, text: str) -> None:
        """The engine changed how it runs (e.g. out of memory: a smaller batch, or the CPU)."""
        self._report(f"Engine: {text}")

    def _report(self, text: str) -> None:
        if text != self._last_problem:
            self._last_problem = text
            self.problem.emit(text)
