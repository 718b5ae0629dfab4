"""The InspectorController wires the window to the sources, the engine worker and the results log.

Data flows one way: SourceReader -> FrameQueue -> EngineWorker (model, verdict, log row,
archive) -> `inspected` -> banner, counters, trend, filmstrip, live view. The controller runs
in the GUI thread and never touches the model; everything slow happens in the worker or in
background threads. Every problem becomes one message in the status bar and the log panel.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, QObject, QSettings, QThread, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from inspection import DEFAULT_VIEW_MAX_SIDE, ERROR, Calibration, Inspection, InspectionRecipe, Roi, fit_within
from inspection.results_log import ResultFilter, ResultsLog, ResultsLogError, ResultsReader, export_csv

from .controls import AUTO_CATEGORY, AUTO_MIN_SCORE
from .dialogs import SHORTCUTS_TEXT, BackgroundTask, CalibrationDialog, CameraPickerDialog, about_text
from .display import VERDICT_TEXT, DisplayOptions, render_part
from .frame_queue import FrameQueue
from .imageio import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageReadError, list_images, read_image
from .line_panel import LinePanel
from .main_window import MainWindow
from .paths import DEMO_DATA_DIR, DEMO_MODEL_DIR, user_data_dir
from .reader import PLAYING, STOPPED, SourceReader
from .recipes import Recipe, RecipeError, RecipeStore
from .results_view import short_frame_id
from .sources import SourceError, SourceSpec, demo_spec, open_source, spec_for_drop, spec_for_path
from .station import RECIPE_OUTPUTS
from .worker import EngineWorker

__all__ = ["InspectorController", "automatic_category", "model_summary"]

log = logging.getLogger("inspector")

STALL_SECONDS = 2.5
RATE_WINDOW_S = 5.0
TREND_REFRESH_S = 0.2  # the plot is the most expensive widget to repaint: at most 5 times a second
PART_MEMORY = 60
LIVE_INSET_SIDE = 480
RECENT_MODELS = 8


def model_summary(info: dict) -> str:
    """Rich text for the model box: id, size, parameters, disk size, classes, device."""
    params = info.get("unet_parameters") or 0
    disk = info.get("disk_bytes") or 0
    classes = info.get("classes") or []
    kind = f" ({info['detector']})" if info.get("detector") else ""
    parts = [f"<b>{info.get('model_id') or Path(info.get('path', '')).name}</b>{kind}",
             f"{info.get('size') or 'custom UNet'} · {params / 1e6:.1f} M parameters"
             + (f" · {disk / 1e6:.0f} MB on disk" if disk else ""),
             f"{len(classes)} categor{'y' if len(classes) == 1 else 'ies'}"
             + (" · classifier" if info.get("classifier") else "")
             + (" · gated" if info.get("gating") else ""),
             f"Runs on {info.get('device', '?')}"]
    return "<br>".join(parts)



def automatic_category(info: dict) -> tuple[bool, str]:
    """(whether the model can choose the category itself, the label of that choice): a category
    classifier, DiAD's lowest-score choice over its classes, or a one-class model."""
    if info.get("classifier"):
        return True, AUTO_CATEGORY
    if info.get("category_selection") == "min-score":
        return True, AUTO_MIN_SCORE
    return len(info.get("classes") or []) <= 1, AUTO_CATEGORY

class InspectorController(QObject):
    """Application logic behind the MainWindow."""

    request_load = Signal(str, object)
    request_configure = Signal(object)
    request_settings = Signal(object)
    request_calibration = Signal(object, float, float)
    model_ready = Signal(dict)
    run_finished = Signal(str)

    def __init__(self, window: MainWindow, settings: QSettings, loader=None, capture_factory=None,
                 data_dir: Path | None = None):
        super().__init__(window)
        self.window = window
        self.settings = settings
        self.capture_factory = capture_factory
        self.live_source_options: dict = {}
        self.stall_seconds = STALL_SECONDS
        self.data_dir = Path(data_dir) if data_dir is not None else user_data_dir()
        self.log_path = self.data_dir / "results.sqlite"
        self.archive_root = self.data_dir / "archive"
        self.recipes = RecipeStore(self.data_dir / "recipes")
        self.results_writer = ResultsLog(self.log_path)
        self.results_reader = ResultsReader(self.log_path)
        self.frames = FrameQueue("latest")
        self.context = InspectionRecipe()
        self.display = DisplayOptions()
        self.model_info: dict | None = None
        self.model_path = ""
        self.model_loading = False
        self.source_spec: SourceSpec | None = None
        self.reader: SourceReader | None = None
        self._old_readers: list[SourceReader] = []
        self.recipe_name = ""
        self.recipe_modified = False
        self._pending_recipe: Recipe | None = None
        self._start_after_load = False
        self.counts = self._zero_counts()
        self.run_counts = self._zero_counts()
        self.run_reported = False
        self.parts: OrderedDict[int, Inspection] = OrderedDict()
        self.current_key: int | None = None
        self.replaying = False
        self.last_inspection: Inspection | None = None
        self.display_frames = 0
        self.stats = {"engine_fps": 0.0, "display_fps": 0.0, "latency_ms": 0.0, "age_ms": 0.0, "source_fps": 0.0}
        self._seq = 0
        self._live_frame = None
        self._live_dirty = False
        self._part_dirty = False
        self._results_dirty = False
        self._strip_pending: list[tuple[int, Inspection]] = []
        self._new_rows = False
        self._inspected_times: deque = deque(maxlen=600)
        self._latencies: deque = deque(maxlen=30)
        self._ages: deque = deque(maxlen=30)
        self._last_tick = time.monotonic()
        self._rate_since = self._last_tick
        self._last_trend_refresh = 0.0
        self._last_display_frames = 0
        self._last_frames_read = 0
        self._source_note_until = 0.0
        self._tasks: set[BackgroundTask] = set()
        self._shut_down = False
        self.training = None  # the TrainingCenter (job queue + wizard), made when the wizard first opens
        self.window.training_wizard_connected = True

        self._open_results_log()
        self.worker = EngineWorker(self.frames, self.log_path, self.archive_root, loader)
        self.worker_thread = QThread()
        self.worker_thread.setObjectName("engine-worker")
        self.worker.moveToThread(self.worker_thread)
        self.request_load.connect(self.worker.load_model)
        self.request_configure.connect(self.worker.configure)
        self.request_settings.connect(self.worker.apply_settings)
        self.request_calibration.connect(self.worker.calibrate)
        self.worker.model_loading.connect(self._on_model_loading)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.settings_applied.connect(self._on_settings_applied)
        self.worker.inspected.connect(self._on_inspected)
        self.worker.problem.connect(self._on_worker_problem)
        self.worker.calibrated.connect(self._on_calibrated)
        self.worker.calibration_failed.connect(self._on_worker_problem)
        self.worker.busy_changed.connect(self.window.show_busy)
        self.worker_thread.start()
        self.line = LinePanel(self.window, self.worker.session, self.log_path, self.message, self._mark_recipe_modified)

        self.display_timer = QTimer(self)
        self.display_timer.timeout.connect(self._on_display_tick)
        self.display_timer.start(1000 // self.display.repaint_hz)
        self.stats_timer = QTimer(self)
        self.stats_timer.timeout.connect(self._on_stats_tick)
        self.stats_timer.start(1000)
        self._wire_window()
        self._show_recipes()
        self.refresh_models()
        self.window.trend.set_thresholds(self.context.fail_threshold, self.context.review_threshold)
        self.window.controls.show_thresholds(self.context.fail_threshold, self.context.review_threshold)

    @staticmethod
    def _zero_counts() -> dict[str, int]:
        return {"inspected": 0, "pass": 0, "review": 0, "fail": 0, "error": 0}

    def _open_results_log(self) -> None:
        try:
            self.results_writer.conn
        except ResultsLogError as e:
            self.message(f"Results log unavailable: {e}", "error")

    # ----------------------------------------------------------------- messages
    def message(self, text: str, level: str = "info") -> None:
        """One message for the operator: status bar + log panel (+ the Python log)."""
        self.window.append_log(text, level)
        self.window.show_status(text, level)
        getattr(log, {"error": "error", "warning": "warning"}.get(level, "info"))(text)

    def _on_worker_problem(self, text: str) -> None:
        """A bound method, so that it runs in the GUI thread (a lambda would run in the worker's)."""
        self.message(text, "error")

    # ----------------------------------------------------------------- wiring
    def _wire_window(self) -> None:
        w, c = self.window, self.window.controls
        w.act_open_folder.triggered.connect(lambda: self.choose_source("folder"))
        w.act_open_image.triggered.connect(lambda: self.choose_source("image"))
        w.act_open_video.triggered.connect(lambda: self.choose_source("video"))
        w.act_camera.triggered.connect(lambda: self.choose_source("camera"))
        w.act_stream.triggered.connect(lambda: self.choose_source("stream"))
        w.act_export_csv.triggered.connect(lambda: self.choose_csv_export(w.results_view.current_filter()))
        w.act_quit.triggered.connect(w.close)
        w.act_run.triggered.connect(self.toggle_run)
        w.act_step.triggered.connect(self.step)
        w.act_stop.triggered.connect(self.stop)
        w.act_watch.toggled.connect(lambda on: self.set_folder_options(c.recursive_check.isChecked(), on))
        w.act_recursive.toggled.connect(lambda on: self.set_folder_options(on, c.watch_check.isChecked()))
        w.act_open_model.triggered.connect(self.choose_model_folder)
        w.act_open_checkpoint.triggered.connect(self.choose_checkpoint)
        w.act_demo_model.triggered.connect(lambda: self.open_model(str(DEMO_MODEL_DIR)))
        w.act_calibrate.triggered.connect(self.choose_calibration)
        w.act_gate_fusion.toggled.connect(self.set_gate_fusion)
        w.act_heatmap.toggled.connect(lambda on: self.set_display(replace(self.display, overlay=on)))
        w.act_contour.toggled.connect(lambda on: self.set_display(replace(self.display, contour=on)))
        w.act_reconstruction.toggled.connect(lambda on: self.set_display(replace(self.display, reconstruction=on)))
        w.act_full_heatmap.toggled.connect(lambda on: self.set_display(replace(self.display, full_heatmap=on)))
        w.act_live_tab.triggered.connect(lambda: w.tabs.setCurrentIndex(0))
        w.act_results_tab.triggered.connect(lambda: w.tabs.setCurrentIndex(1))
        w.act_reset_counters.triggered.connect(self.reset_counters)
        w.act_roi.triggered.connect(lambda: self.start_roi_drawing(True))
        w.act_clear_roi.triggered.connect(lambda: self.set_roi(None))
        w.act_shortcuts.triggered.connect(lambda: QMessageBox.information(w, "Keyboard shortcuts", SHORTCUTS_TEXT))
        w.act_about.triggered.connect(self.show_about)
        w.training_wizard_requested.connect(self._on_training_wizard)
        w.files_dropped.connect(self.open_dropped)
        w.closing.connect(self.shutdown)
        w.reset_counters_button.clicked.connect(self.reset_counters)
        w.back_to_live.clicked.connect(self.back_to_live)
        w.hint_close.clicked.connect(self.dismiss_hint)
        w.filmstrip.part_selected.connect(self.replay)
        w.live_view.roi_selected.connect(lambda x0, y0, x1, y1: self.set_roi(Roi(x0, y0, x1, y1)))
        w.live_view.roi_selection_finished.connect(self._show_roi)
        w.tabs.currentChanged.connect(lambda i: self.refresh_results() if i == 1 else None)
        rv = w.results_view
        rv.filter_changed.connect(lambda _: self.refresh_results())
        rv.refresh_requested.connect(self.refresh_results)
        rv.false_call_requested.connect(self.mark_false_call)
        rv.export_requested.connect(self.choose_csv_export)
        rv.row_activated.connect(self.replay_logged)
        c.model_chosen.connect(self.open_model)
        c.open_model_folder_requested.connect(self.choose_model_folder)
        c.open_checkpoint_requested.connect(self.choose_checkpoint)
        c.reverse_steps_changed.connect(lambda n: self.set_model_settings(reverse_steps=n))
        c.gate_fusion_toggled.connect(self.set_gate_fusion)
        c.source_requested.connect(self.choose_source)
        c.folder_options_changed.connect(self.set_folder_options)
        c.run_toggled.connect(self.toggle_run)
        c.step_requested.connect(self.step)
        c.stop_requested.connect(self.stop)
        c.category_chosen.connect(self.set_category)
        c.thresholds_edited.connect(self.set_thresholds)
        c.calibrate_requested.connect(self.choose_calibration)
        c.roi_draw_requested.connect(self.start_roi_drawing)
        c.roi_clear_requested.connect(lambda: self.set_roi(None))
        c.display_changed.connect(self.set_display)
        c.recipe_chosen.connect(self.apply_recipe)
        c.recipe_save_requested.connect(self.choose_recipe_name)
        c.recipe_delete_requested.connect(self.delete_recipe)
        c.show_run_state(STOPPED, False)

    # ----------------------------------------------------------------- startup and settings
    def restore(self, model: str | None = None, source: str | None = None) -> None:
        """Apply saved settings, then open the model and source (arguments win over saved ones;
        with neither, the demo model and demo images)."""
        s = self.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, (QByteArray, bytes)):  # anything else: a settings file edited or damaged
            self.window.restoreGeometry(geometry)
        state = s.value("window/state")
        if isinstance(state, (QByteArray, bytes)):
            self.window.restoreState(state)
        self.set_display(DisplayOptions(
            overlay=_as_bool(s.value("display/overlay", True)),
            opacity=_setting(s, "display/opacity", 0.5, _finite_float),
            colormap=str(s.value("display/colormap", "jet")), contour=_as_bool(s.value("display/contour", True)),
            reconstruction=_as_bool(s.value("display/reconstruction", False)),
            repaint_hz=_setting(s, "display/repaint_hz", 30, lambda v: int(_finite_float(v))),
            full_heatmap=_as_bool(s.value("display/full_heatmap", False))))
        self.set_folder_options(_as_bool(s.value("source/recursive", True)), _as_bool(s.value("source/watch", False)))
        recipe = str(s.value("recipe/current", "") or "")
        if model is None and source is None and recipe and recipe in self.recipes.names():
            self.apply_recipe(recipe)
        else:
            model_path = model or str(s.value("model/path", "") or "") or str(DEMO_MODEL_DIR)
            if Path(model_path).exists():
                self.open_model(model_path)
            else:
                self.message(f"Model not found: {model_path}. Open one with Model ▸ Open model folder "
                             f"(or rebuild the demo with `python scripts/make_demo_model.py`)", "warning")
            spec = None
            if source is not None:
                try:
                    spec = spec_for_path(source)
                except SourceError as e:
                    self.message(str(e), "error")
            else:
                spec = self._saved_source()
            if spec is not None:
                self.open_source(spec, autostart=False)
        if not _as_bool(s.value("app/first_run_done", False)):
            demo = ("This is the demo: the bundled model and test images of good and defective parts. "
                    if model is None and source is None else "")
            self.window.show_hint(
                f"<b>Welcome to DeCo Inspector.</b> {demo}Press <b>Space</b> to start; the banner shows "
                "PASS / REVIEW / FAIL and the heatmap shows where a part looks wrong. Open your own images with "
                "<b>Ctrl+O</b>, a camera with <b>Ctrl+K</b>, or drop files on the window. <b>F1</b> lists the "
                "shortcuts.")

    def _saved_source(self) -> SourceSpec | None:
        text = self.settings.value("source/last")
        if text:
            try:
                spec = SourceSpec.from_dict(json.loads(str(text)))
                if spec.live or Path(spec.target or (spec.paths[0] if spec.paths else "")).exists():
                    return spec
            except (ValueError, TypeError):
                pass
        return demo_spec(DEMO_DATA_DIR)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.window.saveGeometry())
        s.setValue("window/state", self.window.saveState())
        d = self.display
        for key, value in (("overlay", d.overlay), ("opacity", d.opacity), ("colormap", d.colormap),
                           ("contour", d.contour), ("reconstruction", d.reconstruction), ("repaint_hz", d.repaint_hz),
                           ("full_heatmap", d.full_heatmap)):
            s.setValue(f"display/{key}", value)
        if self.model_path:
            s.setValue("model/path", self.model_path)
        if self.source_spec is not None:
            s.setValue("source/last", json.dumps(self.source_spec.to_dict()))
        s.setValue("thresholds/model", self.model_path)
        s.setValue("thresholds/fail", self.context.fail_threshold)
        s.setValue("thresholds/review", self.context.review_threshold)
        s.setValue("recipe/current", self.recipe_name)
        s.sync()

    def dismiss_hint(self) -> None:
        self.window.hint.hide()
        self.settings.setValue("app/first_run_done", True)

    # ----------------------------------------------------------------- model
    def refresh_models(self) -> None:
        """Refill the model picker (recent models, the app's model folder, the demo)."""
        entries: list[tuple[str, str]] = []
        seen: set[str] = set()

        def add(label: str, path: str) -> None:
            if path and path not in seen:
                seen.add(path)
                entries.append((label, path))

        if DEMO_MODEL_DIR.is_dir():
            add("Demo model", str(DEMO_MODEL_DIR))
        registered = self.data_dir / "models"
        if registered.is_dir():
            for folder in sorted(p for p in registered.iterdir() if (p / "model.json").is_file()):
                add(folder.name, str(folder))
        for path in self._recent_models():
            if Path(path).exists():
                add(f"{Path(path).name} ({'checkpoint' if Path(path).is_file() else 'folder'})", path)
        if self.model_path:
            add(Path(self.model_path).name, self.model_path)
        self.window.controls.show_models(entries, self.model_path)

    def _recent_models(self) -> list[str]:
        value = self.settings.value("model/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def open_model(self, path: str, overrides: dict | None = None) -> None:
        """Load a model folder or reference checkpoint in the worker (the UI shows a busy sign)."""
        self.model_loading = True
        self.request_load.emit(str(path), dict(overrides or {}))

    def choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open model folder",
                                                  str(Path(self.model_path).parent) if self.model_path else "")
        if folder:
            self.open_model(folder)

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open reference checkpoint", "",
                                              "Checkpoints (*.pt *.pth *.ckpt);;All files (*)")
        if path:
            self.open_model(path)

    def _on_model_loading(self, path: str) -> None:
        self.message(f"Loading model {path}…")
        self.window.controls.show_model_info(f"Loading {Path(path).name}…")

    def _on_model_failed(self, text: str) -> None:
        self.model_loading = False
        self._pending_recipe = None
        self._start_after_load = False
        self.message(text, "error")
        if self.model_info is not None:
            self.window.controls.show_model_info(model_summary(self.model_info))
        else:
            self.window.controls.show_model_info("No model loaded: open a model folder or checkpoint")

    def _on_model_loaded(self, info: dict) -> None:
        self.model_loading = False
        previous = self.model_path
        self._adopt_model_info(info)
        self.model_path = info["path"]
        self.window.device_status.setText(f"device {info.get('device', '?')}")
        self._show_model_info(info)
        recent = [self.model_path] + [p for p in self._recent_models() if p != self.model_path]
        self.settings.setValue("model/recent", recent[:RECENT_MODELS])
        self.settings.setValue("model/path", self.model_path)
        self.refresh_models()
        classes = list(info.get("classes") or [])
        auto, auto_label = automatic_category(info)
        recipe = self._pending_recipe
        self._pending_recipe = None
        if recipe is not None:
            self._apply_recipe_settings(recipe)
        else:
            if previous != self.model_path:
                self._restore_thresholds(info)
            category = self.context.category if self.context.category in classes else None
            if category is None and not auto and classes:
                category = classes[0]
                self.message(f"This model has no category classifier: inspecting as '{category}' "
                             f"(change it under Inspection ▸ Category)", "warning")
            self.context = replace(self.context, category=category)
            self.window.controls.show_categories(classes, category, auto, auto_label)
            self._push_context()
        self.message(f"Model {info.get('model_id') or Path(self.model_path).name} ready "
                     f"({info.get('size') or 'custom UNet'}, {len(classes)} categories, {info.get('device', '?')})",
                     "ok")
        self.model_ready.emit(info)
        if self._start_after_load:
            self._start_after_load = False
            self.start()

    def _show_model_info(self, info: dict) -> None:
        self.window.controls.show_model_info(model_summary(info), info.get("reverse_steps"), info.get("gate_fusion"),
                                             bool(info.get("gating", True)))
        self.window.act_gate_fusion.blockSignals(True)
        self.window.act_gate_fusion.setChecked(bool(info.get("gate_fusion")))
        self.window.act_gate_fusion.setEnabled(bool(info.get("gating", True)))
        self.window.act_gate_fusion.blockSignals(False)

    def _restore_thresholds(self, info: dict) -> None:
        s = self.settings
        saved = _setting(s, "thresholds/fail", None, _finite_float)
        if str(s.value("thresholds/model", "") or "") == self.model_path and saved is not None:
            fail, review = saved, _setting(s, "thresholds/review", 0.0, _finite_float)
        else:
            fail = float(info.get("threshold", 0.3))
            review = round(0.8 * fail, 4)
        self.set_thresholds(fail, review, mark_modified=False)

    def _adopt_model_info(self, info: dict) -> None:
        """Keep the worker's model description; a live queue holds one newest frame per engine lane."""
        self.model_info = info
        self.frames.keep = max(1, int(info.get("lanes", 1)))

    def _on_settings_applied(self, info: dict) -> None:
        self._adopt_model_info(info)
        self._show_model_info(info)

    def set_model_settings(self, **changes) -> None:
        self.request_settings.emit(changes)
        self._mark_recipe_modified()

    def set_gate_fusion(self, on: bool) -> None:
        if self.model_info is not None and bool(self.model_info.get("gate_fusion")) == on:
            return
        self.set_model_settings(gate_fusion=bool(on))

    # ----------------------------------------------------------------- judgement settings
    def _push_context(self) -> None:
        self.request_configure.emit(self.context)
        self.window.trend.set_thresholds(self.context.fail_threshold, self.context.review_threshold)
        self._part_dirty = True

    def set_thresholds(self, fail: float, review: float | None = None, mark_modified: bool = True) -> None:
        fail = max(0.0, float(fail))
        review = fail if review is None else min(max(0.0, float(review)), fail)
        self.context = replace(self.context, fail_threshold=fail, review_threshold=review)
        self.window.controls.show_thresholds(fail, review)
        self._push_context()
        if mark_modified:
            self._mark_recipe_modified()
        s = self.settings
        s.setValue("thresholds/model", self.model_path)
        s.setValue("thresholds/fail", fail)
        s.setValue("thresholds/review", review)

    def set_category(self, category: str | None) -> None:
        self.context = replace(self.context, category=category)
        self._push_context()
        self._mark_recipe_modified()
        self.message(f"Category: {category or 'chosen by the classifier for each part'}")

    def set_roi(self, roi: Roi | None) -> None:
        self.context = replace(self.context, roi=roi)
        self._push_context()
        self._mark_recipe_modified()
        self._show_roi()
        self.message("Region of interest cleared: the whole frame is inspected" if roi is None
                     else f"Region of interest set: {roi.describe()}")

    def _show_roi(self) -> None:
        roi = self.context.roi
        self.window.controls.show_roi("Whole frame" if roi is None else roi.describe())

    def start_roi_drawing(self, on: bool) -> None:
        view = self.window.live_view
        if not on:
            view.cancel_roi_selection()
            self._show_roi()
            return
        if not view.has_image():
            self.message("Open a source first: the region of interest is drawn on the image", "warning")
            self._show_roi()
            return
        self.window.tabs.setCurrentIndex(0)
        view.start_roi_selection()
        self.window.show_status("Drag a rectangle on the inspected image to set the region of interest")

    def choose_calibration(self) -> None:
        dialog = CalibrationDialog(str(self.settings.value("calibration/folder", "") or ""), self.window)
        if dialog.exec():
            folder, percentile, margin = dialog.values()
            self.settings.setValue("calibration/folder", folder)
            self.calibrate_folder(folder, percentile, margin)

    def calibrate_folder(self, folder: str, percentile: float = 99.0, margin: float = 0.1) -> None:
        if not folder or not Path(folder).is_dir():
            self.message(f"Calibration: {folder or '(no folder)'} is not a folder", "error")
            return
        paths = [str(p) for p in list_images(folder, recursive=True)]
        if not paths:
            self.message(f"Calibration: no images in {folder}", "error")
            return
        self.calibrate(paths, percentile, margin)

    def calibrate(self, paths: list[str], percentile: float = 99.0, margin: float = 0.1) -> None:
        self.message(f"Calibrating on {len(paths)} good images…")
        self.request_calibration.emit(list(paths), float(percentile), float(margin))

    def _on_calibrated(self, cal: Calibration) -> None:
        self.set_thresholds(cal.fail_threshold, cal.review_threshold)
        skipped = f"; {len(cal.errors)} unreadable images skipped" if cal.errors else ""
        self.message(f"Calibrated on {cal.count} good images: {cal.percentile:g}th percentile score "
                     f"{cal.percentile_score:.4f} (max {cal.max_score:.4f}) -> review above "
                     f"{cal.review_threshold:.4f}, fail above {cal.fail_threshold:.4f}{skipped}", "ok")
        for error in cal.errors[:5]:
            self.message(error, "warning")

    # ----------------------------------------------------------------- sources
    def choose_source(self, kind: str) -> None:
        w = self.window
        c = w.controls
        start_dir = str(self.settings.value("source/dir", "") or "")
        spec = None
        if kind == "folder":
            folder = QFileDialog.getExistingDirectory(w, "Open a folder of images", start_dir)
            if folder:
                spec = SourceSpec("folder", folder, recursive=c.recursive_check.isChecked(),
                                  watch=c.watch_check.isChecked())
        elif kind == "image":
            path, _ = QFileDialog.getOpenFileName(w, "Open an image", start_dir,
                                                  f"Images ({' '.join('*' + e for e in IMAGE_EXTENSIONS)})")
            if path:
                spec = SourceSpec("image", path)
        elif kind == "video":
            path, _ = QFileDialog.getOpenFileName(w, "Open a video", start_dir,
                                                  f"Videos ({' '.join('*' + e for e in VIDEO_EXTENSIONS)})")
            if path:
                spec = SourceSpec("video", path)
        elif kind == "camera":
            dialog = CameraPickerDialog(capture_factory=self.capture_factory, parent=w)
            if dialog.exec():
                spec = dialog.spec()
        elif kind == "stream":
            url, ok = QInputDialog.getText(w, "Network stream", "Stream URL (rtsp://, http://, …):",
                                           text=str(self.settings.value("source/url", "") or ""))
            if ok and url.strip():
                self.settings.setValue("source/url", url.strip())
                spec = SourceSpec("stream", url.strip())
        if spec is not None:
            if spec.kind in ("folder", "image", "video"):
                self.settings.setValue("source/dir", str(Path(spec.target).parent if spec.kind != "folder"
                                                         else Path(spec.target)))
            self.open_source(spec)

    def open_dropped(self, paths: list[str]) -> None:
        try:
            spec = spec_for_drop(paths, recursive=self.window.controls.recursive_check.isChecked())
        except SourceError as e:
            self.message(f"Dropped: {e}", "error")
            return
        self.open_source(spec)

    def set_folder_options(self, recursive: bool, watch: bool) -> None:
        self.window.controls.show_folder_options(recursive, watch)
        for action, value in ((self.window.act_recursive, recursive), (self.window.act_watch, watch)):
            action.blockSignals(True)
            action.setChecked(value)
            action.blockSignals(False)
        self.settings.setValue("source/recursive", recursive)
        self.settings.setValue("source/watch", watch)
        spec = self.source_spec
        if spec is not None and spec.kind == "folder" and (spec.recursive, spec.watch) != (recursive, watch):
            self.open_source(replace(spec, recursive=recursive, watch=watch),
                             autostart=self.reader is not None and self.reader.state == PLAYING)

    def open_source(self, spec: SourceSpec, autostart: bool = True) -> None:
        """Stop the current source and open `spec` (playing if `autostart` and a model is there)."""
        self._retire_reader()
        self.source_spec = spec
        self.window.controls.show_source(_short(spec.label()), spec.label())
        self.window.show_source_status(spec.label())
        self.window.act_watch.setEnabled(spec.kind == "folder")
        if spec.kind == "folder":
            self.set_folder_options(spec.recursive, spec.watch)
        self._new_reader(spec, autostart)

    def _new_reader(self, spec: SourceSpec, autostart: bool) -> None:
        source = open_source(spec, capture_factory=self.capture_factory, **self.live_source_options)
        batch = int((self.model_info or {}).get("batch_size", 8))
        self.frames.set_policy("latest" if spec.live else "every", capacity=2 * batch)
        reader = SourceReader(source, self.frames, self)
        reader.frame_read.connect(self._on_frame_read)
        reader.status.connect(lambda text, level, r=reader: self._on_source_status(r, text, level))
        reader.opened.connect(lambda info, r=reader: self._on_source_opened(r, info))
        reader.failed.connect(lambda text, r=reader: self._on_source_failed(r, text))
        reader.finished.connect(lambda text, level, r=reader: self._on_source_finished(r, text, level))
        reader.state_changed.connect(lambda state, r=reader: self._on_run_state(r, state))
        self.reader = reader
        self.run_counts = self._zero_counts()
        self.run_reported = False
        self.window.controls.show_progress("")
        self._latencies.clear()
        self._ages.clear()
        self._rate_since = time.monotonic()
        self._last_frames_read = 0
        self._live_frame = None
        can_run = self.model_info is not None or self.model_loading
        if autostart and not can_run:
            self.message("No model loaded: open a model (Model menu), then press Space", "warning")
        if autostart and self.model_loading and self.model_info is None:
            self._start_after_load = True
            autostart = False
        reader.start(play=autostart and can_run)
        if self.last_inspection is None:
            self.window.banner.show_idle(f"{spec.label()}: press Space to start" if can_run
                                         else "Open a model to start (Model menu)")
        self.message(f"Opened {spec.label()}" + ("" if reader.state == PLAYING else " (paused: press Space to start)"))

    def _retire_reader(self) -> None:
        reader = self.reader
        if reader is None:
            return
        self.reader = None
        reader.stop()
        self.frames.clear()
        if reader.is_running():
            self._old_readers.append(reader)
            reader.thread_done.connect(lambda r=reader: self._old_readers.remove(r) if r in self._old_readers else None)

    def _reader_usable(self) -> bool:
        return self.reader is not None and not self.reader.ended and self.reader.state != STOPPED

    def start(self) -> None:
        if self.model_info is None:
            if self.model_loading:
                self._start_after_load = True
                self.message("Will start as soon as the model is loaded")
            else:
                self.message("No model loaded: open a model first (Model ▸ Open model folder)", "warning")
            return
        if self.source_spec is None:
            self.message("No source: open a folder, image, video or camera first (Source menu)", "warning")
            return
        if not self._reader_usable():
            self._retire_reader()
            self._new_reader(self.source_spec, autostart=True)
            return
        self.reader.play()

    def pause(self) -> None:
        if self._reader_usable():
            self.reader.pause()

    def toggle_run(self) -> None:
        if self._reader_usable() and self.reader.state == PLAYING:
            self.pause()
        else:
            self.start()

    def step(self) -> None:
        if self.model_info is None:
            self.message("No model loaded: open a model first", "warning")
            return
        if self.source_spec is None:
            self.message("No source to step through", "warning")
            return
        if not self._reader_usable():
            self._retire_reader()
            self._new_reader(self.source_spec, autostart=False)
        self.reader.step()

    def stop(self) -> None:
        if self.window.live_view.is_selecting():
            self.start_roi_drawing(False)
            return
        if self.reader is None:
            return
        name = self.reader.source.name
        self._retire_reader()
        self._on_run_state(None, STOPPED)
        self.message(f"Stopped {name}")

    def _on_run_state(self, reader: SourceReader | None, state: str) -> None:
        if reader is not None and reader is not self.reader:
            return
        has_source = self.source_spec is not None
        self.window.controls.show_run_state(state, has_source)

    def _on_source_opened(self, reader: SourceReader, info: dict) -> None:
        total = info.get("total")
        if total and reader is self.reader:
            self.window.controls.show_progress(f"0 / {total}")

    def _on_source_status(self, reader: SourceReader, text: str, level: str) -> None:
        if reader is not self.reader:
            return
        self.window.show_source_status(text, level)
        self._source_note_until = time.monotonic() + (4.0 if level != "info" else 2.0)
        self.message(text, level)

    def _on_source_failed(self, reader: SourceReader, text: str) -> None:
        if reader is self.reader:
            self.window.show_source_status("source failed", "error")
            self._on_run_state(None, STOPPED)
        self.message(text, "error")

    def _on_source_finished(self, reader: SourceReader, text: str, level: str) -> None:
        if reader is not self.reader:
            return
        self.message(text, level)
        self.window.show_source_status(text if level != "info" else f"{reader.source.name}: ended", level)
        self._on_run_state(None, STOPPED)
        self._check_run_complete()

    def _on_frame_read(self, frame) -> None:
        if frame.rgb is not None and frame.live:
            self._live_frame = frame.rgb
            self._live_dirty = True

    # ----------------------------------------------------------------- results
    def _on_inspected(self, insp: Inspection) -> None:
        now = time.monotonic()
        for counts in (self.counts, self.run_counts):
            counts["inspected"] += 1
            counts[insp.verdict] = counts.get(insp.verdict, 0) + 1
        self._inspected_times.append(now)
        if insp.score is not None:
            self._latencies.append(insp.latency_ms)
            self._ages.append(insp.age_ms)
        self.last_inspection = insp
        self._seq += 1
        key = insp.part_id if insp.part_id is not None else -self._seq
        self.parts[key] = insp
        while len(self.parts) > PART_MEMORY:
            self.parts.popitem(last=False)
        if insp.verdict == ERROR:
            self.message(f"{insp.where()}: {insp.error}", "error")
        if insp.score is not None:
            self.window.trend.add(insp.score, insp.verdict)
        self._strip_pending.append((key, insp))
        if not self.replaying:
            self.current_key = key
            self._part_dirty = True
        self._results_dirty = True
        self._new_rows = True
        self._check_run_complete()

    def _show_results(self) -> None:
        """Counters, banner and filmstrip for what arrived since the last repaint (at most the
        repaint rate, however fast the engine is)."""
        if not self._results_dirty:
            return
        self._results_dirty = False
        w = self.window
        w.counters.show_counts(self.counts)
        pending, self._strip_pending = self._strip_pending[-w.filmstrip.capacity:], []
        for key, insp in pending:
            caption = VERDICT_TEXT[insp.verdict] + (f" {insp.score:.3f}" if insp.score is not None else "")
            w.filmstrip.add_part(key, insp.thumbnail, insp.verdict, caption,
                                 f"{insp.where()}\n{caption}" + (f"\n{insp.error}" if insp.error else ""))
        if not self.replaying and self.last_inspection is not None:
            self._show_banner(self.last_inspection)

    def _show_banner(self, insp: Inspection, replay: bool = False) -> None:
        if insp.verdict == ERROR:
            detail = f"{insp.where()}: {insp.error}"
        else:
            cat = insp.category
            if insp.category_source == "classifier" and insp.category_confidence is not None:
                cat += f" (auto {100 * insp.category_confidence:.0f}%)"
            elif insp.category_source == "given":
                cat += " (pinned)"
            detail = (f"{cat} · review > {insp.review_threshold:.3f} · fail > {insp.fail_threshold:.3f}"
                      f"\n{short_frame_id(insp.frame_id)}")
            if insp.recipe:
                detail += f" · recipe {insp.recipe}"
        if replay:
            detail = f"Replay of part {insp.part_id if insp.part_id is not None else ''} · " + detail
        self.window.banner.show_verdict(insp.verdict, insp.score, detail)

    def _check_run_complete(self) -> None:
        reader = self.reader
        if reader is None or self.run_reported or not reader.ended:
            return
        if self.run_counts["inspected"] < reader.frames_read:
            return
        self._show_results()
        self.window.trend.refresh()
        self.run_reported = True
        c = self.run_counts
        judged = c["pass"] + c["review"] + c["fail"]
        yield_text = f"{100.0 * c['pass'] / judged:.1f}%" if judged else "n/a"
        text = (f"Run finished: {c['inspected']} parts - {c['pass']} pass, {c['review']} review, {c['fail']} fail, "
                f"{c['error']} errors (yield {yield_text})")
        self.message(text, "ok" if not c["error"] else "warning")
        self.window.controls.show_progress(f"{reader.frames_read} / {reader.frames_read} done")
        self.run_finished.emit(text)
        if self.window.tabs.currentIndex() == 1:
            self.refresh_results()

    def reset_counters(self) -> None:
        self._show_results()
        self.counts = self._zero_counts()
        self.window.counters.show_counts(self.counts)
        self.window.trend.clear()
        self.message("Counters reset")

    def replay(self, key: int) -> None:
        self._show_results()
        part = self.parts.get(key)
        if part is None:
            self.message("That part is no longer in memory; find it in the Results tab", "warning")
            return
        self.replaying = True
        self.current_key = key
        self._part_dirty = True
        self.window.live_view.set_badge(f"REPLAY · part {part.part_id if part.part_id is not None else '-'}")
        self.window.back_to_live.show()
        self._show_banner(part, replay=True)
        self.window.tabs.setCurrentIndex(0)

    def replay_logged(self, part_id: int) -> None:
        """Replay a part from the results table: from memory if recent, else its archived overlay."""
        if part_id in self.parts:
            self.replay(part_id)
            return
        try:
            row = self.results_reader.get(part_id)
        except ResultsLogError as e:
            self.message(str(e), "error")
            return
        if row is None:
            return
        image_path = row.get("overlay_path") or row.get("image_path") or row.get("thumbnail_path")
        if not image_path:
            self.message(f"Part {part_id}: no archived image (only failing and review parts are archived)", "warning")
            return
        try:
            rgb = read_image(image_path)
        except ImageReadError as e:
            self.message(f"Part {part_id}: {e}", "error")
            return
        part = Inspection(source=row["source"], frame_id=row["frame_id"], index=-1, verdict=row["verdict"],
                          score=row["score"], fail_threshold=row["threshold"] or 0.0,
                          review_threshold=row["review_threshold"] or 0.0, category=row["category"],
                          recipe=row["recipe"], part_id=part_id, error=row["error"],
                          view_frame=fit_within(rgb, DEFAULT_VIEW_MAX_SIDE))
        self.parts[part_id] = part
        self.replay(part_id)

    def back_to_live(self) -> None:
        self.replaying = False
        self.window.live_view.set_badge("")
        self.window.back_to_live.hide()
        if self.last_inspection is not None:
            self.current_key = next(reversed(self.parts), None)
            self._show_banner(self.last_inspection)
        self._part_dirty = True

    # ----------------------------------------------------------------- results tab
    def refresh_results(self) -> None:
        view = self.window.results_view
        flt = view.current_filter()
        try:
            rows = self.results_reader.query(flt)
            total = self.results_reader.count(flt)
            counts = self.results_reader.verdict_counts()
            view.show_categories(self.results_reader.categories())
        except ResultsLogError as e:
            view.show_rows([], 0, str(e))
            return
        summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("pass", "review", "fail", "error"))
        view.show_rows(rows, total, f"log: {summary}")
        self._new_rows = False

    def mark_false_call(self, ids: list[int], flag: bool = True, note: str = "") -> None:
        try:
            for part_id in ids:
                self.results_writer.mark_false_call(int(part_id), flag, note)
        except ResultsLogError as e:
            self.message(str(e), "error")
        else:
            what = "marked as false calls" if flag else "no longer marked as false calls"
            self.message(f"{len(ids)} part(s) {what}" + (f": {note}" if flag and note else ""))
        self.refresh_results()

    def choose_csv_export(self, flt: ResultFilter | None = None) -> None:
        default = str(Path.home() / f"deco-inspector-results-{time.strftime('%Y%m%d-%H%M%S')}.csv")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export results as CSV", default, "CSV (*.csv)")
        if path:
            self.export_results(path, flt or ResultFilter())

    def export_results(self, path: str, flt: ResultFilter | None = None) -> BackgroundTask:
        """Export in a background thread through its own read-only connection."""
        flt = replace(flt or ResultFilter(), limit=None)
        task = BackgroundTask(lambda: export_csv(self.log_path, path, flt), self)
        self._tasks.add(task)

        def finished(result=None, error: str = "") -> None:
            self._tasks.discard(task)
            if error:
                self.message(f"CSV export to {path} failed: {error}", "error")
            else:
                self.message(f"Exported {result} rows to {path}", "ok")

        task.done.connect(lambda n: finished(n))
        task.failed.connect(lambda e: finished(error=e))
        self.message(f"Exporting results to {path}…")
        return task.start()

    # ----------------------------------------------------------------- recipes
    def _show_recipes(self) -> None:
        recipes, problems = self.recipes.load_all()
        for problem in problems:
            self.message(problem, "warning")
        self.window.controls.show_recipes([r.name for r in recipes], self.recipe_name, self.recipe_modified)

    def _mark_recipe_modified(self) -> None:
        if self.recipe_name and not self.recipe_modified:
            self.recipe_modified = True
            self._show_recipes()

    def choose_recipe_name(self) -> None:
        name, ok = QInputDialog.getText(self.window, "Save recipe", "Product / recipe name:", text=self.recipe_name)
        if ok and name.strip():
            self.save_recipe(name.strip())

    def current_recipe(self, name: str) -> Recipe:
        info = self.model_info or {}
        ctx = self.context
        return Recipe(name=name, model=self.model_path, category=ctx.category, fail_threshold=ctx.fail_threshold,
                      review_threshold=ctx.review_threshold, roi=ctx.roi.to_list() if ctx.roi else None,
                      source=self.source_spec.to_dict() if self.source_spec else None,
                      reverse_steps=info.get("reverse_steps"), gate_fusion=info.get("gate_fusion"),
                      extra={RECIPE_OUTPUTS: list(self.line.urls)} if self.line.urls else {})

    def save_recipe(self, name: str) -> None:
        try:
            recipe = self.current_recipe(name)
            path = self.recipes.save(recipe)
        except RecipeError as e:
            self.message(str(e), "error")
            return
        self.recipe_name = recipe.name
        self.recipe_modified = False
        self.context = replace(self.context, recipe=recipe.name)
        self._push_context()
        self._show_recipes()
        self.settings.setValue("recipe/current", recipe.name)
        self.message(f"Recipe '{recipe.name}' saved ({path})", "ok")

    def delete_recipe(self, name: str) -> None:
        try:
            self.recipes.delete(name)
        except RecipeError as e:
            self.message(str(e), "error")
            return
        if name == self.recipe_name:
            self.recipe_name = ""
            self.recipe_modified = False
            self.context = replace(self.context, recipe="")
            self._push_context()
        self._show_recipes()
        self.message(f"Recipe '{name}' deleted")

    def apply_recipe(self, name: str) -> None:
        """Switch product in one click: model (loaded if different), category, thresholds, ROI, source."""
        try:
            recipe = self.recipes.load(name)
        except RecipeError as e:
            self.message(str(e), "error")
            return
        self.recipe_name = recipe.name
        self.recipe_modified = False
        self.context = replace(self.context, recipe=recipe.name)
        self.settings.setValue("recipe/current", recipe.name)
        self.line.set_urls(recipe.extra.get(RECIPE_OUTPUTS) or [])
        overrides = {k: v for k, v in (("reverse_steps", recipe.reverse_steps), ("gate_fusion", recipe.gate_fusion))
                     if v is not None}
        if recipe.model and (recipe.model != self.model_path or self.model_info is None):
            if not Path(recipe.model).exists():
                self.message(f"Recipe '{name}': model {recipe.model} not found", "error")
            else:
                if overrides.get("reverse_steps"):
                    overrides["start_t"] = overrides["reverse_steps"]
                self._pending_recipe = recipe
                self.open_model(recipe.model, overrides)
        else:
            if overrides and self.model_info is not None:
                self.request_settings.emit(overrides)
            self._apply_recipe_settings(recipe)
        spec = recipe.source_spec
        if spec is not None:
            self.open_source(spec, autostart=False)
        self._show_recipes()
        self.message(f"Recipe '{name}' selected")

    def _apply_recipe_settings(self, recipe: Recipe) -> None:
        classes = list((self.model_info or {}).get("classes") or [])
        auto, auto_label = automatic_category(self.model_info or {})
        category = recipe.category if recipe.category in classes else None
        if recipe.category and category is None and classes:
            self.message(f"Recipe '{recipe.name}': category '{recipe.category}' is not in this model", "warning")
        if category is None and not auto and classes:
            category = classes[0]
        self.context = replace(self.context, category=category, roi=recipe.roi_value, recipe=recipe.name)
        self.window.controls.show_categories(classes, category, auto, auto_label)
        self.set_thresholds(recipe.fail_threshold, recipe.review_threshold, mark_modified=False)
        self._show_roi()
        self.recipe_modified = False
        self._show_recipes()

    # ----------------------------------------------------------------- display
    def set_display(self, options: DisplayOptions) -> None:
        self.display = options
        w = self.window
        w.controls.show_display_options(options)
        for action, value in ((w.act_heatmap, options.overlay), (w.act_contour, options.contour),
                              (w.act_reconstruction, options.reconstruction),
                              (w.act_full_heatmap, options.full_heatmap)):
            action.blockSignals(True)
            action.setChecked(value)
            action.blockSignals(False)
        w.recon_view.setVisible(options.reconstruction)
        self.display_timer.setInterval(max(1, round(1000 / options.repaint_hz)))
        self._part_dirty = True
        if self.context.full_heatmap != options.full_heatmap:  # the reject archive draws overlays the same way
            self.context = replace(self.context, full_heatmap=options.full_heatmap)
            self._push_context()

    def _on_display_tick(self) -> None:
        w = self.window
        self._show_results()
        shown = False
        live = self.reader is not None and self.reader.live
        if self._live_dirty and self._live_frame is not None:
            self._live_dirty = False
            if live:
                w.live_view.set_inset(fit_within(self._live_frame, LIVE_INSET_SIDE))
                if self.current_key is None:
                    w.live_view.set_image(fit_within(self._live_frame, DEFAULT_VIEW_MAX_SIDE))
                shown = True
        elif not live and w.live_view.has_inset():
            w.live_view.set_inset(None)
        if self._part_dirty:
            self._part_dirty = False
            part = self.parts.get(self.current_key) if self.current_key is not None else None
            if part is not None:
                image = render_part(part, self.display)
                if image is not None:
                    w.live_view.set_image(image)
                    shown = True
                if self.display.reconstruction:
                    w.recon_view.set_image(part.reconstruction)
        if shown:
            self.display_frames += 1
        now = time.monotonic()
        if now - self._last_trend_refresh >= TREND_REFRESH_S:
            self._last_trend_refresh = now
            w.trend.refresh()

    def _on_stats_tick(self) -> None:
        now = time.monotonic()
        dt = max(now - self._last_tick, 1e-3)
        self._last_tick = now
        window = min(RATE_WINDOW_S, now - self._rate_since)
        recent = sum(1 for t in self._inspected_times if now - t <= window)
        engine_fps = recent / window if window > 0.5 else 0.0
        display_fps = (self.display_frames - self._last_display_frames) / dt
        self._last_display_frames = self.display_frames
        latency = sorted(self._latencies)[len(self._latencies) // 2] if self._latencies else 0.0
        age = sorted(self._ages)[len(self._ages) // 2] if self._ages else 0.0
        self.stats.update(engine_fps=engine_fps, display_fps=display_fps, latency_ms=latency, age_ms=age)
        w = self.window
        if self._inspected_times and now - self._inspected_times[-1] < 5.0:
            live = self.reader is not None and self.reader.live
            w.engine_status.setText(f"engine {latency:.0f} ms/part · {engine_fps:.1f} parts/s"
                                    + (f" · age {age:.0f} ms" if live else ""))
        else:
            w.engine_status.setText("engine idle")
        w.display_status.setText(f"display {display_fps:.0f} fps")
        reader = self.reader
        if reader is None:
            return
        read = reader.frames_read
        source_fps = (read - self._last_frames_read) / dt
        self._last_frames_read = read
        self.stats["source_fps"] = source_fps
        total = reader.source.total
        if total and not self.run_reported:
            w.controls.show_progress(f"{self.run_counts['inspected']} / {total} inspected")
        if reader.live and not reader.ended and reader.state == PLAYING:
            since = reader.seconds_since_frame
            if since > self.stall_seconds:
                w.show_source_status(f"{reader.source.name}: no frame for {since:.0f} s (stalled?)", "warning")
                self._source_note_until = now + 1.5
            elif now > self._source_note_until:
                dropped = self.frames.dropped
                w.show_source_status(f"{reader.source.name} · {source_fps:.0f} fps in"
                                     + (f" · {dropped} not inspected (engine busy)" if dropped else ""), "ok")
        if self._new_rows and w.tabs.currentIndex() == 1:
            self.refresh_results()

    # ----------------------------------------------------------------- misc
    def show_about(self) -> None:
        device = (self.model_info or {}).get("device", "")
        QMessageBox.about(self.window, "About DeCo Inspector", about_text(device))

    def _on_training_wizard(self) -> None:
        if self.training is None:
            from .training_wizard import TrainingCenter

            self.training = TrainingCenter(self)
        self.training.show_wizard()

    def shutdown(self) -> None:
        """Save settings and stop threads (the window is closing)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.display_timer.stop()
        self.stats_timer.stop()
        if self.training is not None:
            self.training.shutdown()
        try:
            self.save_settings()
        except Exception as e:  # noqa: BLE001 - closing must not fail on a settings problem
            log.warning("cannot save settings: %s", e)
        self._retire_reader()
        for reader in list(self._old_readers):
            reader.wait(2000)
        self.worker_thread.quit()
        if not self.worker_thread.wait(15000):
            log.warning("the engine worker did not stop in time")
        self.line.close()
        self.worker.close_log()
        self.results_writer.close()
        self.results_reader.close()


def _finite_float(value) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _setting(settings, key: str, default, convert):
    """A saved setting through `convert`; `default` when it is missing or cannot be read (a settings
    file written by another version, edited by hand or damaged)."""
    value = settings.value(key)
    if value is None:
        return default
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _short(text: str, keep: int = 2) -> str:
    """'folder /a/b/c/d' -> 'folder …/c/d' (the full text goes in the tooltip)."""
    head, _, path = text.partition(" ")
    parts = Path(path).parts if path.startswith("/") or "\\" in path else ()
    if len(parts) <= keep + 1:
        return text
    return f"{head} …/{'/'.join(parts[-keep:])}"
