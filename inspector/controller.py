"""The InspectorController wires the window to the sources, the engine worker and the results log.

Its concerns live in their own modules: controller_model (model and judgement settings),
controller_run (sources and run control), controller_results (parts, replay, the results tab),
controller_recipes, controller_display (display pump and live statistics).

Data flows one way: SourceReader -> FrameQueue -> EngineWorker (model, verdict, log row,
archive) -> `inspected` -> banner, counters, trend, filmstrip, live view. The controller runs
in the GUI thread and never touches the model; everything slow happens in the worker or in
background threads. Every problem becomes one message in the status bar and the log panel.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, QObject, QSettings, QThread, QTimer, Signal
from PySide6.QtWidgets import QMessageBox

from inspection import Inspection, InspectionRecipe, Roi
from inspection.results_log import ResultsLog, ResultsLogError, ResultsReader

from .controller_access import AccessControl
from .controller_display import DisplayPump
from .controller_model import ModelControl
from .controller_recipes import RecipeControl
from .controller_results import ResultsControl
from .controller_run import RunControl
from .controller_stats import StatisticsControl
from .dialogs import BackgroundTask, about_text
from .display import DisplayOptions
from .frame_queue import FrameQueue
from .genicam_dialog import attach_genicam_action
from .line_panel import LinePanel
from .loaded_model import LoadedModel
from .main_window import RESULTS_TAB, STATISTICS_TAB, MainWindow
from .paths import DEMO_DATA_DIR, DEMO_MODEL_DIR, user_data_dir
from .reader import STOPPED, SourceReader
from .recipes import Recipe, RecipeStore
from .session_state import SessionState, state_property
from .setting_values import as_bool, finite_float, saved_setting
from .sources import SourceError, SourceSpec, demo_spec, spec_for_path
from .worker import EngineWorker

__all__ = ["InspectorController"]

log = logging.getLogger("inspector")

STALL_SECONDS = 2.5


class InspectorController(QObject, ModelControl, RunControl, ResultsControl, RecipeControl, DisplayPump, AccessControl,
                          StatisticsControl):
    """Application logic behind the MainWindow: this module wires the window, the engine worker and
    the timers and keeps settings; each concern lives in its own part (ModelControl, RunControl,
    ResultsControl, RecipeControl, DisplayPump)."""

    recipe_name = state_property("recipe_name", "The recipe in force ('' = none).")
    recipe_modified = state_property("recipe_modified", "A setting changed since the recipe was applied or saved.")
    replaying = state_property("replaying", "The live view shows a part from the results.")

    request_load = Signal(str, object)
    request_configure = Signal(object)
    request_settings = Signal(object)
    request_calibration = Signal(object, float, float)
    model_ready = Signal(object)   # a LoadedModel
    run_finished = Signal(str)

    def __init__(self, window: MainWindow, settings: QSettings, loader=None, capture_factory=None,
                 data_dir: Path | None = None):
        super().__init__(window)
        self.window = window
        self.state = SessionState(self)
        window.bind_state(self.state)
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
        self.model_info: LoadedModel | None = None   # the model the worker holds, as it last described it
        self.model_path = ""
        self.model_loading = False
        self.source_spec: SourceSpec | None = None
        self.reader: SourceReader | None = None
        self._old_readers: list[SourceReader] = []
        self._pending_recipe: Recipe | None = None
        self._start_after_load = False
        self.counts = self._zero_counts()
        self.run_counts = self._zero_counts()
        self.run_reported = False
        self.parts: OrderedDict[int, Inspection] = OrderedDict()
        self.current_key: int | None = None
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
        self._init_statistics()
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
        self.line = LinePanel(self.window, self.worker.session, self.log_path, self.message, self._mark_recipe_modified,
                              on_trigger=lambda part_id: self.step(part_id), recipe_names=self.recipes.names,
                              apply_recipe=self.apply_recipe)
        attach_genicam_action(self.window, lambda spec: self.open_source(spec, autostart=False))

        self.display_timer = QTimer(self)
        self.display_timer.timeout.connect(self._on_display_tick)
        self.display_timer.start(1000 // self.display.repaint_hz)
        self.stats_timer = QTimer(self)
        self.stats_timer.timeout.connect(self._on_stats_tick)
        self.stats_timer.start(1000)
        self._init_access()
        self._wire_window()
        self._show_recipes()
        self.refresh_models()
        self.window.show_thresholds(self.context.fail_threshold, self.context.review_threshold)

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
        """Each of the window's intent signals to what it asks for."""
        w, g = self.window, self.guarded   # g(action, handler): only for a role that may (controller_access)
        for intent, handler in (
                (w.source_requested, g("source", self.choose_source)), (w.run_toggle_requested, g("run", self.toggle_run)),
                (w.step_requested, g("run", self.step)), (w.stop_requested, g("run", self.stop)),
                (w.model_folder_requested, g("model", self.choose_model_folder)),
                (w.checkpoint_requested, g("model", self.choose_checkpoint)),
                (w.demo_model_requested, g("model", lambda: self.open_model(str(DEMO_MODEL_DIR)))),
                (w.model_requested, g("model", self.open_model)),
                (w.reverse_steps_requested, lambda n: self.set_model_settings(reverse_steps=n)),
                (w.runtime_requested, self.set_runtime),
                (w.calibration_requested, g("calibration", self.choose_calibration)),
                (w.gate_fusion_requested, self.set_gate_fusion),
                (w.category_requested, self.set_category), (w.thresholds_requested, self.set_thresholds),
                (w.roi_draw_requested, g("roi", self.start_roi_drawing)), (w.roi_clear_requested, lambda: self.set_roi(None)),
                (w.roi_drawn, lambda x0, y0, x1, y1: self.set_roi(Roi(x0, y0, x1, y1))),
                (w.roi_drawing_ended, self._show_roi), (w.folder_options_requested, self.set_folder_options),
                (w.display_requested, self.set_display),
                (w.display_option_requested, lambda field, on: self.set_display(replace(self.display, **{field: on}))),
                (w.recipe_requested, g("choose_recipe", self.apply_recipe)),
                (w.recipe_save_requested, g("recipe_edit", self.choose_recipe_name)),
                (w.recipe_delete_requested, self.delete_recipe), (w.reset_counters_requested, self.reset_counters),
                (w.part_requested, self.replay), (w.logged_part_requested, self.replay_logged),
                (w.back_to_live_requested, self.back_to_live), (w.results_refresh_requested, self.refresh_results),
                (w.tab_shown, lambda tab: self.refresh_results() if tab == RESULTS_TAB else
                 self.refresh_statistics() if tab == STATISTICS_TAB else None),
                (w.statistics_requested, self.refresh_statistics), (w.report_requested, self.choose_report),
                (w.false_call_requested, self.mark_false_call), (w.export_requested, self.choose_csv_export),
                (w.about_requested, self.show_about),
                (w.training_wizard_requested, g("training", self._on_training_wizard)),
                (w.files_dropped, g("source", self.open_dropped)), (w.hint_dismissed, self.dismiss_hint),
                (w.closing, self.shutdown)):
            intent.connect(handler)
        w.show_run_state(STOPPED, False)

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
            overlay=as_bool(s.value("display/overlay", True)),
            opacity=saved_setting(s, "display/opacity", 0.5, finite_float),
            colormap=str(s.value("display/colormap", "jet")), contour=as_bool(s.value("display/contour", True)),
            reconstruction=as_bool(s.value("display/reconstruction", False)),
            repaint_hz=saved_setting(s, "display/repaint_hz", 30, lambda v: int(finite_float(v))),
            full_heatmap=as_bool(s.value("display/full_heatmap", False))))
        self.set_folder_options(as_bool(s.value("source/recursive", True)), as_bool(s.value("source/watch", False)))
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
        if not as_bool(s.value("app/first_run_done", False)):
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
        self.window.hide_hint()
        self.settings.setValue("app/first_run_done", True)

    # ----------------------------------------------------------------- misc
    def show_about(self) -> None:
        device = self.model_info.info.device if self.model_info is not None else ""
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
        self.idle_timer.stop()
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
