"""The inspection session: frames in, verdicts logged, records out. Shared by the window's engine
worker and `main.py inspect` (and the line station), so every part is judged, logged and archived
the same way whoever drives it.

For each batch of frames the session cuts the region of interest, runs the model on the whole
batch (one frame the engine refuses is retried alone, so it does not sink the others), decides the
verdict (`verdict_for`, the one rule), writes the overlay file when asked, commits the results-log
row, hands the images to the archive thread, and only then gives the frozen `Inspection` to its
listeners. A failure on one part becomes that part's error row; the session never stops for it.
Qt-free: it runs on whatever thread calls it.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from engine.imageio import write_image
from engine.overlay import operator_overlay
from engine.runtime import StagedModel

from .records import Frame, Inspection, InspectionListener, InspectionRecipe, SessionSummary
from .regions import apply_roi, fit_within, make_thumbnail, place_map, view_map
from .results_log import ArchiveJob, ArchiveQueue, ResultsLog, ResultsLogError, now_text
from .verdicts import ERROR, VERDICTS, verdict_for

__all__ = ["InspectionSession", "StagedInspection", "overlay_file_name", "OVERLAY_STEM_BYTES", "peak_position"]

log = logging.getLogger(__name__)

OVERLAY_STEM_BYTES = 160   # of the input's name in an overlay's name (file names are at most 255 bytes)


def overlay_file_name(frame: Frame, verdict: str) -> str:
    """<index>_<input name>[_f<frame>]_<verdict>.png; long input names are cut so that the name fits
    the file system (the frame's index keeps names apart)."""
    stem = Path(frame.file or frame.frame_id).stem.encode("utf-8")[:OVERLAY_STEM_BYTES].decode("utf-8", "ignore")
    number = f"_f{frame.frame_number:06d}" if frame.frame_number is not None else ""
    return f"{frame.index:06d}_{stem}{number}_{verdict}.png"


def peak_position(amap: np.ndarray) -> tuple[float | None, float | None]:
    """(x, y) of the anomaly map's [H,W] maximum, each 0-1 across the map (the pixel's centre);
    (None, None) for an empty or non-finite map."""
    amap = np.asarray(amap, np.float32)
    if amap.ndim != 2 or amap.size == 0 or not np.isfinite(amap).any():
        return None, None
    y, x = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(amap), amap, -np.inf))), amap.shape)
    return (x + 0.5) / amap.shape[1], (y + 0.5) / amap.shape[0]


class InspectionSession:
    """Inspects frames with `model` under `recipe` (replaceable between batches with `set_recipe`).

    model: an engine.runtime.InspectionModel (predict(images, category=...) -> results with score,
    anomaly_map over the image, category ...; `model_id`; `settings.batch_size`).
    results_log: rows are committed here before anyone sees the part (None: no log).
    archive: the window's archive thread (thumbnail before the row, frame + overlay after it, for
    recipe.archive_verdicts).
    overlay_dir: every inspected part's overlay is written here before its row (`main.py inspect
    --save-overlays`); a write failure is kept in the row's archive_error.
    on_problem: called with a one-line message for anything the operator should know and its
    severity, "warning" (the part is kept as judged) or "error" (a part lost its row or its verdict)."""

    def __init__(self, model, recipe: InspectionRecipe = InspectionRecipe(), *, results_log: ResultsLog | None = None,
                 archive: ArchiveQueue | None = None, overlay_dir: Path | None = None,
                 on_problem: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.recipe = recipe
        self.results_log = results_log
        self.archive = archive
        self.overlay_dir = Path(overlay_dir) if overlay_dir is not None else None
        self.on_problem = on_problem
        self.clock = clock
        self._listeners: list[InspectionListener] = []
        self._counts = {v: 0 for v in VERDICTS}
        self._not_logged = 0
        self._latencies: list[float] = []
        self._started = clock()
        self._closed = False

    # ----------------------------------------------------------------- listeners and settings
    def subscribe(self, listener: InspectionListener) -> None:
        """Give every following part (and the end of the session) to `listener`."""
        if not isinstance(listener, InspectionListener):
            raise TypeError(f"{listener!r} is not an inspection listener (on_inspection, on_session_end)")
        self._listeners.append(listener)

    def unsubscribe(self, listener: InspectionListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def set_recipe(self, recipe: InspectionRecipe) -> None:
        """Judge the following batches by `recipe`."""
        self.recipe = recipe

    @property
    def model_id(self) -> str:
        """The model's name for the records ('' before a model is set)."""
        return "" if self.model is None else str(self.model.model_id)

    def summary(self) -> SessionSummary:
        return SessionSummary(dict(self._counts), self._not_logged, SessionSummary.median(self._latencies),
                              self.clock() - self._started)

    # ----------------------------------------------------------------- inspecting
    def run(self, frames: Iterable[Frame], batch_size: int | None = None) -> SessionSummary:
        """Inspect every frame (lazily, in batches of `batch_size`, default the model's), then the summary
        so far. The session stays open: `close()` ends it."""
        for batch in _batched(frames, batch_size or self.model.settings.batch_size):
            self.inspect(batch)
        return self.summary()

    def inspect(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Judge, log and publish one batch; one Inspection per frame, in order."""
        recipe = self.recipe
        return self.record(frames, self.predict(frames, recipe), recipe)

    def predict(self, frames: Sequence[Frame], recipe: InspectionRecipe) -> dict:
        """The engine step of `inspect`: cut `recipe`'s region of interest and run the model on the
        readable frames. It touches only the model and its arguments, so another thread may run it
        (one frame per CPU lane, see inspector.live_lanes) while this one records earlier frames;
        the caller keeps the model unchanged meanwhile. Returns what `record` takes."""
        keys, rects, crops = _cut(frames, recipe)
        return _outcomes(keys, rects, self._predict(crops, recipe.category, self.model))

    def begin(self, frames: Sequence[Frame], recipe: InspectionRecipe) -> "StagedInspection":
        """`predict` in stages, for a pipeline of threads: this call cuts the region of interest and
        prepares the readable frames (preprocess, classify) when the model is a
        `engine.runtime.StagedModel`; the returned StagedInspection's `run_networks()` (any
        thread) runs the networks, and its `finish()` gives what `record` takes. A model without
        stages runs whole in `run_networks()`. The model must stay unchanged until `finish()`."""
        return StagedInspection(self, frames, recipe)

    def record(self, frames: Sequence[Frame], outcomes: dict, recipe: InspectionRecipe) -> list[Inspection]:
        """Judge, log and publish frames whose engine step (`predict` with the same `recipe`) gave
        `outcomes`; one Inspection per frame, in order. Runs in the session's own thread."""
        records = []
        for frame in frames:
            rect, result = outcomes.get(id(frame), (None, None))
            try:
                fields, full_map = self._judge(frame, recipe, rect, result)
            except Exception as e:  # noqa: BLE001 - one bad result becomes an error row, the run goes on
                log.error("cannot build the result of %s: %s", frame.frame_id, traceback.format_exc())
                self._problem(f"Engine error on {frame.frame_id}: {type(e).__name__}: {e}", "error")
                fields, full_map = self._base(frame, recipe), None
                fields["error"] = f"internal error: {type(e).__name__}: {e}"
            self._write_overlay(frame, fields, full_map, recipe)
            self._log(fields, frame, full_map, recipe)
            fields["inspected"] = self.clock()
            record = Inspection(**fields)
            self._count(record)
            self._publish("on_inspection", record)
            records.append(record)
        return records

    def close(self) -> SessionSummary:
        """End the session: listeners get the summary (once)."""
        summary = self.summary()
        if not self._closed:
            self._closed = True
            self._publish("on_session_end", summary)
        return summary

    # ----------------------------------------------------------------- steps
    def _predict(self, crops: list[np.ndarray], category, model) -> list:
        """Results of `model` for each crop, or an error text where the engine refused it."""
        if not crops:
            return []
        try:
            return list(model.predict(crops, category=category))
        except Exception as e:  # noqa: BLE001 - retried one by one so one bad frame does not sink the batch
            if len(crops) == 1:
                return [f"inspection failed: {e}"]
        out = []
        for crop in crops:
            try:
                out.append(model.predict([crop], category=category)[0])
            except Exception as e:  # noqa: BLE001
                out.append(f"inspection failed: {e}")
        return out

    def _staged_step(self, step: Callable, what: str):
        """`step()`, or an error text for the frames (the staged counterpart of `_predict`'s)."""
        try:
            return step()
        except Exception as e:  # noqa: BLE001 - one bad frame becomes an error row, the run goes on
            log.error("%s failed: %s", what, traceback.format_exc())
            return f"inspection failed: {e}"

    def _base(self, frame: Frame, recipe: InspectionRecipe) -> dict:
        """The fields of an 'error' Inspection for the frame; `_judge` adds the verdict when there is a result."""
        return dict(source=frame.source, frame_id=frame.frame_id, index=frame.index, verdict=ERROR,
                    fail_threshold=recipe.fail_threshold, review_threshold=recipe.review_threshold,
                    model_id=self.model_id, recipe=recipe.recipe, recipe_version=recipe.recipe_version,
                    captured=frame.captured, live=frame.live,
                    error=frame.error, file=frame.file, frame_number=frame.frame_number)

    def _judge(self, frame: Frame, recipe: InspectionRecipe, rect, result) -> tuple[dict, np.ndarray | None]:
        """The fields of one frame's Inspection and its anomaly map over the whole frame (None without a result)."""
        fields = self._base(frame, recipe)
        if frame.rgb is None:
            return fields, None
        view = None
        if recipe.view_max_side > 0:
            view = np.ascontiguousarray(fit_within(frame.rgb, recipe.view_max_side))
            fields.update(view_frame=view, thumbnail=make_thumbnail(view))
        if isinstance(result, str) or result is None:
            fields["error"] = result or "no result from the engine"
            return fields, None
        score = float(result.score)
        fields.update(score=score, verdict=verdict_for(score, recipe.fail_threshold, recipe.review_threshold),
                      category=result.category, category_source=result.category_source,
                      category_confidence=result.category_confidence, latency_ms=float(result.latency_ms),
                      timings=dict(result.timings), reconstruction=result.reconstruction)
        if fields["verdict"] == ERROR:
            fields["error"] = f"the engine returned an invalid score ({result.score})"
        amap = np.asarray(result.anomaly_map, np.float32)
        fields["defect_x"], fields["defect_y"] = peak_position(amap)
        frame_shape = frame.rgb.shape[:2]
        if view is not None:
            fields["view_map"], view_rect = view_map(amap, frame_shape, rect, view.shape[:2])
            if rect != (0, 0, frame_shape[1], frame_shape[0]):
                fields["view_roi"] = view_rect
        return fields, place_map(amap, frame_shape, rect)

    def _write_overlay(self, frame: Frame, fields: dict, full_map, recipe: InspectionRecipe) -> None:
        """The overlay file of an inspected part in overlay_dir (before its row, which names it)."""
        if self.overlay_dir is None or full_map is None or fields["verdict"] == ERROR:
            return
        path = self.overlay_dir / overlay_file_name(frame, fields["verdict"])
        try:
            write_image(path, operator_overlay(frame.rgb, full_map, recipe.fail_threshold, recipe.review_threshold,
                                               full_map=recipe.full_heatmap))
            fields["overlay_path"] = str(path)
        except OSError as e:
            fields["archive_error"] = f"cannot save overlay {path}: {e.strerror or e}"
            self._problem(f"{fields['archive_error']} (the result is kept)", "warning")

    def _log(self, fields: dict, frame: Frame, full_map, recipe: InspectionRecipe) -> None:
        """Commit the row, then hand the images to the archive thread (which notes where they went)."""
        fields["time"] = now_text()
        if self.results_log is None:
            return
        thumbnail = None
        if self.archive is not None and recipe.thumbnails and fields.get("thumbnail") is not None:
            thumbnail = self.archive.archiver.save_thumbnail(fields["frame_id"], fields["thumbnail"])
            if thumbnail.error:
                self._problem(f"Thumbnails cannot be saved: {thumbnail.error.rsplit(': ', 1)[-1]}", "warning")
        archive_error = "; ".join(e for e in (fields.get("archive_error", ""), thumbnail.error if thumbnail else "")
                                  if e)
        score = fields.get("score")
        try:
            fields["part_id"] = self.results_log.add(
                time=fields["time"], source=fields["source"], frame_id=fields["frame_id"],
                category=fields.get("category", ""), score=score, threshold=fields["fail_threshold"],
                review_threshold=fields["review_threshold"], verdict=fields["verdict"], model_id=fields["model_id"],
                recipe=fields["recipe"], latency_ms=round(fields["latency_ms"], 3) if score is not None else None,
                error=fields["error"], thumbnail_path=thumbnail.thumbnail_path if thumbnail else "",
                overlay_path=fields.get("overlay_path", ""), archive_error=archive_error,
                recipe_version=fields["recipe_version"], defect_x=fields.get("defect_x"),
                defect_y=fields.get("defect_y"))
        except ResultsLogError as e:
            fields["log_error"] = str(e)
            self._not_logged += 1
            self._problem(f"Result NOT logged: {e}", "error")
            return
        if (self.archive is not None and frame.rgb is not None and full_map is not None
                and fields["verdict"] in recipe.archive_verdicts):
            self.archive.submit(ArchiveJob(fields["part_id"], fields["frame_id"], fields["verdict"], image=frame.rgb,
                                           anomaly_map=full_map, fail_threshold=recipe.fail_threshold,
                                           review_threshold=recipe.review_threshold,
                                           full_heatmap=recipe.full_heatmap))

    def _count(self, record: Inspection) -> None:
        self._counts[record.verdict] = self._counts.get(record.verdict, 0) + 1
        if record.score is not None and record.verdict != ERROR:
            self._latencies.append(record.latency_ms)

    def _publish(self, method: str, payload) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, method)(payload)
            except Exception as e:  # noqa: BLE001 - a broken output never stops inspection
                log.error("listener %r failed: %s", listener, traceback.format_exc())
                self._problem(f"Output {type(listener).__name__} failed: {type(e).__name__}: {e}", "error")

    def _problem(self, text: str, severity: str) -> None:
        if self.on_problem is not None:
            self.on_problem(text, severity)


def _batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _cut(frames: Sequence[Frame], recipe: InspectionRecipe) -> tuple[list[int], list, list[np.ndarray]]:
    """The readable frames' keys (what `record` looks outcomes up by), region-of-interest
    rectangles and crops."""
    readable = [f for f in frames if f.rgb is not None]
    rois = [apply_roi(f.rgb, recipe.roi) for f in readable]
    return [id(f) for f in readable], [rect for _, rect in rois], [crop for crop, _ in rois]


def _outcomes(keys: list[int], rects: list, results: list) -> dict:
    """What `InspectionSession.record` takes: frame key -> (rectangle, result or error text)."""
    return dict(zip(keys, zip(rects, results)))


class StagedInspection:
    """Frames on their way through a staged prediction (`InspectionSession.begin`): prepared on
    creation, `run_networks()` next (on any thread), `finish()` last; `frames` and `recipe` are
    what `InspectionSession.record` takes with `finish()`'s outcomes. A stage that fails makes an
    error text the frames' outcome (their rows say it); the stages after it do nothing."""

    def __init__(self, session: InspectionSession, frames: Sequence[Frame], recipe: InspectionRecipe):
        self.session = session
        self.frames = list(frames)
        self.recipe = recipe
        self.model = session.model
        self._keys, self._rects, self._crops = _cut(self.frames, recipe)
        self._staged = isinstance(self.model, StagedModel)
        self._state = None   # the model's PreparedFrames, results (a model without stages) or an error text
        if self._crops and self._staged:
            self._state = session._staged_step(
                lambda: self.model.prepare(self._crops, category=recipe.category), "preparing frames")

    def run_networks(self) -> None:
        """The heavy stage: the networks (or, for a model without stages, its whole `predict`)."""
        if not self._crops or isinstance(self._state, str):
            return
        if self._staged:
            prepared = self._state
            self._state = self.session._staged_step(lambda: self.model.run_networks(prepared), "the networks")
        else:
            self._state = self.session._predict(self._crops, self.recipe.category, self.model)

    def finish(self) -> dict:
        """Maps and results: what `InspectionSession.record` takes for `frames`."""
        state = self._state
        if self._staged and self._crops and not isinstance(state, str):
            state = self.session._staged_step(lambda: self.model.finish(state), "finishing results")
        if isinstance(state, str):
            results = [state] * len(self._crops)
        elif state is None:
            results = ["no result from the engine"] * len(self._crops)
        else:
            results = list(state)
        return _outcomes(self._keys, self._rects, results)
