"""The engine worker: a QObject living in its own QThread that owns the Detector.

Frames arrive through a FrameQueue (latest-frame-wins for live sources, every frame for
folders and videos, taken in detector-sized batches). For each frame the worker runs the
model, decides the verdict, commits the results-log row and archives images, and only then
emits `inspected`, so a verdict is never shown before it is logged. Any exception is
reported through `problem` and the worker carries on with the next frames; out of memory,
the engine falls back to smaller batches, then to the CPU, and says so through `problem`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PySide6.QtCore import QObject, Qt, Signal, Slot

from .frame_queue import FrameQueue
from .imageio import ImageReadError, read_image
from .inspection import (ERROR, Inspection, InspectionContext, apply_roi, calibrate_thresholds, fit_within,
                         make_thumbnail, place_map, verdict_for)
from .results_log import Archiver, ArchiveJob, ArchiveQueue, ResultsLog, ResultsLogError, now_text
from .sources import Frame

__all__ = ["EngineWorker", "default_loader", "model_disk_bytes", "engine_threads", "engine_lanes"]

log = logging.getLogger(__name__)


def default_loader(path: str, **overrides):
    """Load a model folder or reference checkpoint (imports the engine on first use)."""
    from engine.loading import load_model

    return load_model(path, **overrides)


def engine_threads() -> int:
    """CPU threads for model code: all cores but one, which stays free for the display and the
    camera; $DECO_INSPECTOR_THREADS overrides. Oversubscribed cores make PyTorch many times slower."""
    override = os.environ.get("DECO_INSPECTOR_THREADS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, (os.cpu_count() or 2) - 1)


def engine_lanes() -> int:
    """CPU lanes for a model whose settings leave them automatic: one single-threaded lane per
    core (see engine.acceleration.CpuLanes; a lane does not spin-wait for the other cores, so the
    display thread can share them); $DECO_INSPECTOR_LANES overrides."""
    override = os.environ.get("DECO_INSPECTOR_LANES", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    return max(1, os.cpu_count() or 1)


def _use_engine_lanes(detector) -> None:
    """Give a detector whose `lanes` setting is automatic (0) and that prefers lanes (a small UNet on
    a CPU) `engine_lanes()` lanes: the worker thread itself runs one intra-op thread."""
    settings = getattr(detector, "settings", None)
    if getattr(settings, "lanes", None) == 0 and getattr(detector, "prefers_lanes", False):
        detector.with_settings(lanes=engine_lanes())


def model_disk_bytes(path: str) -> int:
    """Size on disk of a model folder or checkpoint file (0 when unknown)."""
    p = Path(path)
    try:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return 0
    return 0


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
        self.detector = None
        self.model_path = ""
        self.context = InspectionContext()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._last_problem = ""
        self._threads_set = False
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        frames.on_put = self.wake

    # ----------------------------------------------------------------- commands (queued slots)
    @Slot(str, object)
    def load_model(self, path: str, overrides: dict | None = None) -> None:
        name = Path(path).name or str(path)
        self._limit_threads()
        self.model_loading.emit(str(path))
        self.busy_changed.emit(True, f"Loading model {name}…")
        previous = self.detector, self.model_path
        try:
            self.detector = self.loader(str(path), **(overrides or {}))
            self.detector.on_notice = self._engine_notice
            _use_engine_lanes(self.detector)
            self.model_path = str(path)
            info = self.model_info()
        except Exception as e:  # noqa: BLE001 - any loading failure is reported, the old model stays
            log.warning("model load failed: %s", traceback.format_exc())
            self.detector, self.model_path = previous
            self.model_failed.emit(f"Cannot load model {path}: {e}")
        else:
            self.model_loaded.emit(info)
        finally:
            self.busy_changed.emit(False, "")

    def _limit_threads(self) -> None:
        """Set the intra-op thread count of this (the worker's) thread once; other threads keep theirs."""
        if self._threads_set:
            return
        self._threads_set = True
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(engine_threads())

    def model_info(self) -> dict:
        det = self.detector
        info = det.describe().to_dict()
        s = det.settings
        info.update({name: getattr(s, name, default) for name, default in (
            ("threshold", 0.3), ("reverse_steps", None), ("start_t", None), ("gate_fusion", False),
            ("batch_size", 1))})
        lanes = getattr(det, "lane_count", None)
        info.update(path=self.model_path, disk_bytes=model_disk_bytes(self.model_path),
                    lanes=lanes(max(1, int(info["batch_size"]))) if lanes else 1)
        return info

    @Slot(object)
    def apply_settings(self, changes: dict) -> None:
        """Change detector run-time settings (reverse_steps, gate_fusion, ...); bad values are reported
        and the previous settings kept."""
        det = self.detector
        if det is None:
            return
        old = det.settings
        changes = dict(changes)
        if "reverse_steps" in changes and "start_t" not in changes:
            steps = int(changes["reverse_steps"])
            changes["start_t"] = steps if old.start_t == old.reverse_steps else min(old.start_t, steps)
        try:
            det.with_settings(**changes)
        except (ValueError, TypeError) as e:
            det.with_settings(**{k: getattr(old, k) for k in changes if hasattr(old, k)})
            self.problem.emit(f"Cannot change model settings: {e}")
        self.settings_applied.emit(self.model_info())

    @Slot(object)
    def configure(self, context: InspectionContext) -> None:
        self.context = context

    @Slot(object, float, float)
    def calibrate(self, paths: list, percentile: float, margin: float) -> None:
        """Score known-good images and suggest thresholds (percentile of scores + margin)."""
        if self.detector is None:
            self.calibration_failed.emit("Calibration needs a model: open a model first")
            return
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
        try:
            if self.detector is None:
                dropped = self.frames.take(max_items=10_000)
                if dropped:
                    self._report("No model loaded: frames are not inspected (open a model first)")
                return
            n = self.detector.settings.batch_size if self.frames.policy == "every" else self.frames.keep
            batch = self.frames.take(max_items=n)
            if batch:
                self._inspect(batch)
        except Exception as e:  # noqa: BLE001 - the loop must survive anything
            log.error("engine worker error: %s", traceback.format_exc())
            self._report(f"Engine error: {type(e).__name__}: {e}")
        finally:
            if len(self.frames):
                self.wake()

    def _engine_notice(self, text: str) -> None:
        """The engine changed how it runs (e.g. out of memory: a smaller batch, or the CPU)."""
        self._report(f"Engine: {text}")

    def _report(self, text: str) -> None:
        if text != self._last_problem:
            self._last_problem = text
            self.problem.emit(text)

    def _predict(self, crops: list[np.ndarray], category) -> list:
        """Results for each crop, or an error text where the engine refused it."""
        try:
            return list(self.detector.predict(crops, category=category))
        except Exception as e:  # noqa: BLE001 - retried one by one so one bad frame does not sink the batch
            if len(crops) == 1:
                return [f"inspection failed: {e}"]
        out = []
        for crop in crops:
            try:
                out.append(self.detector.predict([crop], category=category)[0])
            except Exception as e:  # noqa: BLE001
                out.append(f"inspection failed: {e}")
        return out

    def _inspect(self, frames: list[Frame]) -> None:
        ctx = self.context
        good = [f for f in frames if f.rgb is not None]
        rois = [apply_roi(f.rgb, ctx.roi) for f in good]
        outcomes = dict(zip((id(f) for f in good), zip(rois, self._predict([c for c, _ in rois], ctx.category))))
        for frame in frames:
            roi, result = outcomes.get(id(frame), (None, None))
            try:
                inspection, full_map = self._build(frame, ctx, roi, result)
            except Exception as e:  # noqa: BLE001 - one bad result becomes an error row, the run goes on
                log.error("cannot build the result of %s: %s", frame.frame_id, traceback.format_exc())
                self._report(f"Engine error on {frame.frame_id}: {type(e).__name__}: {e}")
                inspection, full_map = self._base(frame, ctx), None
                inspection.error = f"internal error: {type(e).__name__}: {e}"
            self._record(inspection, frame, full_map, ctx)
            inspection.inspected = time.monotonic()
            self.inspected.emit(inspection)

    def _base(self, frame: Frame, ctx: InspectionContext) -> Inspection:
        """An 'error' Inspection for the frame; `_build` fills in the verdict when there is a result."""
        return Inspection(source=frame.source, frame_id=frame.frame_id, index=frame.index, verdict=ERROR,
                          fail_threshold=ctx.fail_threshold, review_threshold=ctx.review_threshold,
                          model_id=str(getattr(self.detector, "model_id", "")), recipe=ctx.recipe,
                          captured=frame.captured, live=frame.live, error=frame.error)

    def _build(self, frame: Frame, ctx: InspectionContext, roi, result) -> tuple[Inspection, np.ndarray | None]:
        """The Inspection for one frame and its anomaly map over the whole frame (None without a result)."""
        insp = self._base(frame, ctx)
        if frame.rgb is None:
            return insp, None
        view = fit_within(frame.rgb, ctx.view_max_side)
        insp.view_frame = np.ascontiguousarray(view)
        insp.thumbnail = make_thumbnail(view)
        if isinstance(result, str) or result is None:
            insp.error = result or "no result from the engine"
            return insp, None
        insp.score = float(result.score)
        insp.verdict = verdict_for(insp.score, ctx.fail_threshold, ctx.review_threshold)
        if insp.verdict == ERROR:
            insp.error = f"the engine returned an invalid score ({result.score})"
        insp.category = result.category
        insp.category_source = result.category_source
        insp.category_confidence = result.category_confidence
        insp.latency_ms = float(result.latency_ms)
        insp.timings = dict(result.timings)
        insp.reconstruction = result.reconstruction
        _, rect = roi
        scale_x = view.shape[1] / frame.rgb.shape[1]
        scale_y = view.shape[0] / frame.rgb.shape[0]
        vx, vy = int(round(rect[0] * scale_x)), int(round(rect[1] * scale_y))
        vw = max(1, min(int(round(rect[2] * scale_x)), view.shape[1] - vx))
        vh = max(1, min(int(round(rect[3] * scale_y)), view.shape[0] - vy))
        view_map = np.zeros(view.shape[:2], np.float32)
        view_map[vy:vy + vh, vx:vx + vw] = cv2.resize(np.asarray(result.anomaly_map, np.float32), (vw, vh),
                                                      interpolation=cv2.INTER_LINEAR)
        insp.view_map = view_map
        if rect != (0, 0, frame.rgb.shape[1], frame.rgb.shape[0]):
            insp.view_roi = (vx, vy, vw, vh)
        return insp, place_map(np.asarray(result.anomaly_map, np.float32), frame.rgb.shape[:2], rect)

    def _record(self, insp: Inspection, frame: Frame, full_map: np.ndarray | None, ctx: InspectionContext) -> None:
        """Commit the row, then hand the images to the archive thread (which notes where they went)."""
        insp.time = now_text()
        thumbnail = self.archive.archiver.save_thumbnail(insp.frame_id, insp.thumbnail) \
            if ctx.thumbnails and insp.thumbnail is not None else None
        if thumbnail is not None and thumbnail.error:
            self._report(f"Thumbnails cannot be saved: {thumbnail.error.rsplit(': ', 1)[-1]}")
        try:
            insp.part_id = self.results_log.add(
                time=insp.time, source=insp.source, frame_id=insp.frame_id, category=insp.category,
                score=insp.score, threshold=insp.fail_threshold, review_threshold=insp.review_threshold,
                verdict=insp.verdict, model_id=insp.model_id, recipe=insp.recipe,
                latency_ms=round(insp.latency_ms, 3) if insp.score is not None else None, error=insp.error,
                thumbnail_path=thumbnail.thumbnail_path if thumbnail else "",
                archive_error=thumbnail.error if thumbnail else "")
        except ResultsLogError as e:
            insp.log_error = str(e)
            self._report(f"Result NOT logged: {e}")
            return
        if frame.rgb is not None and full_map is not None and insp.verdict in ctx.archive_verdicts:
            self.archive.submit(ArchiveJob(insp.part_id, insp.frame_id, insp.verdict, image=frame.rgb,
                                           anomaly_map=full_map, fail_threshold=insp.fail_threshold,
                                           review_threshold=insp.review_threshold, full_heatmap=ctx.full_heatmap))
