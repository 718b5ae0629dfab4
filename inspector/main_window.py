"""The main window: layout, menus, shortcuts, status bar and log panel. It owns no logic:
menu actions and widget signals are wired up by the InspectorController."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QDockWidget, QFrame, QHBoxLayout, QLabel, QMainWindow, QPlainTextEdit, QProgressBar,
                               QMessageBox, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from .controls import ControlPanel
from .menus import build_actions, build_menus
from .dialogs import SHORTCUTS_TEXT
from .paths import APP_NAME
from .results_view import ResultsView
from .session_state import SessionState
from .statistics_view import StatisticsView
from .views import CountersPanel, Filmstrip, ImageView, TrendPlot, VerdictBanner

__all__ = ["MainWindow", "LOG_COLORS", "LIVE_TAB", "RESULTS_TAB", "STATISTICS_TAB"]

LIVE_TAB, RESULTS_TAB, STATISTICS_TAB = "live", "results", "statistics"
TABS = (LIVE_TAB, RESULTS_TAB, STATISTICS_TAB)   # in the order of the main tabs
LOG_COLORS = {"info": "#c9d1d9", "warning": "#f2a900", "error": "#ff6b60", "ok": "#3fb950"}


class MainWindow(QMainWindow):
    """Live tab (views, banner, trend, filmstrip), Results tab, control panel dock, log dock."""

    files_dropped = Signal(list)
    training_wizard_requested = Signal()
    style_requested = Signal(str)  # a name from appearance.STYLES, chosen in View ▸ Style
    closing = Signal()
    tab_shown = Signal(str)  # LIVE_TAB or RESULTS_TAB, when the operator switches tabs
    # What the operator asks for, from a menu action or the control panel alike (see _connect_intents)
    source_requested = Signal(str)        # 'folder', 'image', 'video', 'camera' or 'stream'
    run_toggle_requested = Signal()
    step_requested = Signal()
    stop_requested = Signal()
    model_folder_requested = Signal()
    checkpoint_requested = Signal()
    calibration_requested = Signal()
    gate_fusion_requested = Signal(bool)
    roi_draw_requested = Signal(bool)
    roi_clear_requested = Signal()
    reset_counters_requested = Signal()
    demo_model_requested = Signal()
    model_requested = Signal(str)                    # a model folder or checkpoint picked in the control panel
    reverse_steps_requested = Signal(int)
    runtime_requested = Signal(str)
    category_requested = Signal(object)              # a category name, or None: chosen for each part
    thresholds_requested = Signal(float, float)      # (fail, review)
    folder_options_requested = Signal(bool, bool)    # (include subfolders, watch for new files)
    display_requested = Signal(object)               # DisplayOptions from the control panel
    display_option_requested = Signal(str, bool)     # one DisplayOptions switch from the View menu, by field name
    recipe_requested = Signal(str)
    recipe_save_requested = Signal()
    recipe_delete_requested = Signal(str)
    roi_drawn = Signal(float, float, float, float)   # fractions of the image: x0, y0, x1, y1
    roi_drawing_ended = Signal()
    part_requested = Signal(int)                     # a filmstrip part, by its key
    logged_part_requested = Signal(int)              # a Results-tab row, by its part id
    back_to_live_requested = Signal()
    results_refresh_requested = Signal()             # the Results tab's filter changed, or Refresh
    false_call_requested = Signal(list, bool, str)   # (part ids, flag, note)
    export_requested = Signal(object)                # a ResultFilter (File ▸ Export: the Results tab's)
    about_requested = Signal()
    hint_dismissed = Signal()
    statistics_requested = Signal(object, str)       # (inspection.statistics.Period, recipe '' = all)
    report_requested = Signal(object, str)           # the same, as a PDF / HTML report

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.resize(1500, 940)
        self.setDockNestingEnabled(True)
        self.training_wizard_connected = False  # whoever opens the wizard on training_wizard_requested sets this
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self._build_central()
        self._build_docks()
        self._build_status_bar()
        self._state = SessionState(self)   # until bind_state gives the controller's
        build_actions(self)
        build_menus(self)
        self._connect_intents()

    # ----------------------------------------------------------------- layout
    def _build_central(self) -> None:
        self.banner = VerdictBanner()
        self.counters = CountersPanel()
        self.reset_counters_button = QPushButton("Reset")
        self.reset_counters_button.setToolTip("Start counting a new lot")
        top = QHBoxLayout()
        top.setSpacing(10)
        top.addWidget(self.banner, 3)
        counters_box = QVBoxLayout()
        counters_box.addWidget(self.counters, 1)
        counters_box.addWidget(self.reset_counters_button, 0, Qt.AlignmentFlag.AlignRight)
        top.addLayout(counters_box, 2)

        self.hint = QFrame()
        self.hint.setObjectName("FirstRunHint")
        self.hint_label = QLabel()
        self.hint_label.setWordWrap(True)
        self.hint_close = QPushButton("Got it")
        hint_row = QHBoxLayout(self.hint)
        hint_row.addWidget(self.hint_label, 1)
        hint_row.addWidget(self.hint_close)
        self.hint.hide()

        self.live_view = ImageView("Inspected", "Open a folder, image, video or camera (Source menu), "
                                                "or drop files here. Press Space to start.")
        self.recon_view = ImageView("Reconstruction", "The model's reconstruction of the inspected crop")
        self.recon_view.hide()
        self.back_to_live = QPushButton("Back to live")
        self.back_to_live.setObjectName("BackToLive")
        self.back_to_live.hide()
        views = QSplitter(Qt.Orientation.Horizontal)
        views.setObjectName("ViewsSplitter")
        views.addWidget(self.live_view)
        views.addWidget(self.recon_view)
        views.setStretchFactor(0, 3)
        views.setStretchFactor(1, 2)
        self.trend = TrendPlot()
        self.trend.setMinimumHeight(150)
        self.filmstrip = Filmstrip()
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.setSpacing(6)
        bottom_layout.addWidget(self.trend, 1)
        bottom_layout.addWidget(self.filmstrip, 0)
        self.live_splitter = QSplitter(Qt.Orientation.Vertical)
        self.live_splitter.setObjectName("LiveSplitter")
        self.live_splitter.addWidget(views)
        self.live_splitter.addWidget(bottom)
        self.live_splitter.setStretchFactor(0, 3)
        self.live_splitter.setStretchFactor(1, 1)
        self.live_splitter.setSizes([560, 300])

        live = QWidget()
        live.setObjectName("LiveTab")
        layout = QVBoxLayout(live)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(8)
        layout.addWidget(self.hint)
        layout.addLayout(top)
        replay_row = QHBoxLayout()
        replay_row.addStretch(1)
        replay_row.addWidget(self.back_to_live)
        layout.addLayout(replay_row)
        layout.addWidget(self.live_splitter, 1)

        self.results_view = ResultsView()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("MainTabs")
        self.tabs.addTab(live, "Live")
        self.tabs.addTab(self.results_view, "Results")
        self.statistics_view = StatisticsView()
        self.tabs.addTab(self.statistics_view, "Statistics")
        self.tabs.currentChanged.connect(lambda i: self.tab_shown.emit(TABS[i]))
        self.setCentralWidget(self.tabs)

    def _build_docks(self) -> None:
        self.controls = ControlPanel()
        self.controls_dock = QDockWidget("Controls", self)
        self.controls_dock.setObjectName("ControlsDock")
        self.controls_dock.setWidget(self.controls)
        self.controls_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                       | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.controls_dock)
        self.log_panel = QPlainTextEdit()
        self.log_panel.setObjectName("LogPanel")
        self.log_panel.setReadOnly(True)
        self.log_panel.setMaximumBlockCount(5000)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("LogDock")
        self.log_dock.setWidget(self.log_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.resizeDocks([self.controls_dock], [360], Qt.Orientation.Horizontal)
        self.resizeDocks([self.log_dock], [110], Qt.Orientation.Vertical)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        bar.setObjectName("StatusBar")
        self.busy_label = QLabel("")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setFixedWidth(90)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.setTextVisible(False)
        self.busy_label.hide()
        self.busy_bar.hide()
        self.source_status = QLabel("No source")
        self.engine_status = QLabel("engine –")
        self.display_status = QLabel("display –")
        self.device_status = QLabel("device –")
        for w in (self.source_status, self.engine_status, self.display_status, self.device_status):
            w.setObjectName("StatusField")
        bar.addPermanentWidget(self.busy_label)
        bar.addPermanentWidget(self.busy_bar)
        bar.addPermanentWidget(self.source_status)
        bar.addPermanentWidget(self.engine_status)
        bar.addPermanentWidget(self.display_status)
        bar.addPermanentWidget(self.device_status)

    # ----------------------------------------------------------------- display helpers
    def append_log(self, text: str, level: str = "info") -> None:
        colour = LOG_COLORS.get(level, LOG_COLORS["info"])
        stamp = time.strftime("%H:%M:%S")
        safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        self.log_panel.appendHtml(f'<span style="color:#6e7681">{stamp}</span> '
                                  f'<span style="color:{colour}">{safe}</span>')
        self.log_panel.moveCursor(QTextCursor.MoveOperation.End)

    def log_lines(self) -> list[str]:
        return self.log_panel.toPlainText().splitlines()

    def show_status(self, text: str, level: str = "info", timeout_ms: int = 8000) -> None:
        self.statusBar().showMessage(text, timeout_ms)
        colour = LOG_COLORS.get(level, LOG_COLORS["info"])
        self.statusBar().setStyleSheet(f"QStatusBar {{ color: {colour}; }}")

    def show_busy(self, busy: bool, text: str = "") -> None:
        self.busy_label.setText(text)
        self.busy_label.setVisible(busy)
        self.busy_bar.setVisible(busy)

    def show_source_status(self, text: str, level: str = "info") -> None:
        self.source_status.setText(text)
        self.source_status.setStyleSheet(f"color: {LOG_COLORS.get(level, LOG_COLORS['info'])};")

    def show_style_checked(self, name: str) -> None:
        """Tick the style in View ▸ Style (without emitting style_requested)."""
        if name in self.act_styles:
            self.act_styles[name].setChecked(True)

    def show_hint(self, html: str) -> None:
        self.hint_label.setText(html)
        self.hint.show()

    def hide_hint(self) -> None:
        self.hint.hide()

    def _connect_intents(self) -> None:
        """One signal per request, whether it comes from the menus or the control panel."""
        c = self.controls
        for kind, action in (("folder", self.act_open_folder), ("image", self.act_open_image),
                             ("video", self.act_open_video), ("camera", self.act_camera), ("stream", self.act_stream)):
            action.triggered.connect(lambda _=False, k=kind: self.source_requested.emit(k))
        c.source_requested.connect(self.source_requested)
        for sources, intent in (
                ((self.act_run.triggered, c.run_toggled), self.run_toggle_requested),
                ((self.act_step.triggered, c.step_requested), self.step_requested),
                ((self.act_stop.triggered, c.stop_requested), self.stop_requested),
                ((self.act_open_model.triggered, c.open_model_folder_requested), self.model_folder_requested),
                ((self.act_open_checkpoint.triggered, c.open_checkpoint_requested), self.checkpoint_requested),
                ((self.act_calibrate.triggered, c.calibrate_requested), self.calibration_requested),
                ((self.act_clear_roi.triggered, c.roi_clear_requested), self.roi_clear_requested),
                ((self.act_reset_counters.triggered, self.reset_counters_button.clicked),
                 self.reset_counters_requested)):
            for source in sources:
                source.connect(lambda *_, i=intent: i.emit())
        self.act_gate_fusion.toggled.connect(self.gate_fusion_requested)
        c.gate_fusion_toggled.connect(self.gate_fusion_requested)
        self.act_roi.triggered.connect(lambda: self.roi_draw_requested.emit(True))
        c.roi_draw_requested.connect(self.roi_draw_requested)
        self.act_demo_model.triggered.connect(self.demo_model_requested)
        self.act_about.triggered.connect(self.about_requested)
        self.act_quit.triggered.connect(self.close)
        self.act_live_tab.triggered.connect(lambda: self.show_tab(LIVE_TAB))
        self.act_results_tab.triggered.connect(lambda: self.show_tab(RESULTS_TAB))
        self.act_shortcuts.triggered.connect(
            lambda: QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS_TEXT))
        self.act_export_csv.triggered.connect(lambda: self.export_requested.emit(self.results_view.current_filter()))
        self.act_recursive.toggled.connect(lambda on: self.folder_options_requested.emit(on, self._state.folder_watch))
        self.act_watch.toggled.connect(lambda on: self.folder_options_requested.emit(self._state.folder_recursive, on))
        for field, action in self._display_actions().items():
            action.toggled.connect(lambda on, f=field: self.display_option_requested.emit(f, on))
        rv, view = self.results_view, self.live_view
        for source, intent in (   # the same arguments
                (c.model_chosen, self.model_requested), (c.reverse_steps_changed, self.reverse_steps_requested),
                (c.runtime_changed, self.runtime_requested),
                (c.category_chosen, self.category_requested), (c.thresholds_edited, self.thresholds_requested),
                (c.folder_options_changed, self.folder_options_requested), (c.display_changed, self.display_requested),
                (c.recipe_chosen, self.recipe_requested), (c.recipe_delete_requested, self.recipe_delete_requested),
                (view.roi_selected, self.roi_drawn), (self.filmstrip.part_selected, self.part_requested),
                (rv.false_call_requested, self.false_call_requested), (rv.export_requested, self.export_requested),
                (rv.row_activated, self.logged_part_requested),
                (self.statistics_view.statistics_requested, self.statistics_requested),
                (self.statistics_view.report_requested, self.report_requested)):
            source.connect(intent)
        for source, intent in (   # no arguments
                (c.recipe_save_requested, self.recipe_save_requested),
                (view.roi_selection_finished, self.roi_drawing_ended),
                (self.back_to_live.clicked, self.back_to_live_requested),
                (self.hint_close.clicked, self.hint_dismissed), (rv.filter_changed, self.results_refresh_requested),
                (rv.refresh_requested, self.results_refresh_requested)):
            source.connect(lambda *_, i=intent: i.emit())

    def _display_actions(self) -> dict:
        """DisplayOptions field -> its View menu switch."""
        return {"overlay": self.act_heatmap, "contour": self.act_contour, "reconstruction": self.act_reconstruction,
                "full_heatmap": self.act_full_heatmap}

    # ----------------------------------------------------------------- intents (the controller asks, the window shows)
    def show_tab(self, name: str) -> None:
        """Bring tab `name` (LIVE_TAB or RESULTS_TAB) to the front."""
        self.tabs.setCurrentIndex(TABS.index(name))

    def current_tab(self) -> str:
        return TABS[self.tabs.currentIndex()]

    def show_engine_status(self, text: str) -> None:
        self.engine_status.setText(text)

    def show_display_rate(self, text: str) -> None:
        self.display_status.setText(text)

    def show_device(self, device: str) -> None:
        self.device_status.setText(f"device {device}")

    def show_gate_fusion(self, on: bool, available: bool) -> None:
        """Tick View ▸ Gate fusion without emitting its toggle."""
        self.act_gate_fusion.blockSignals(True)
        self.act_gate_fusion.setChecked(on)
        self.act_gate_fusion.setEnabled(available)
        self.act_gate_fusion.blockSignals(False)

    def show_watch_available(self, available: bool) -> None:
        self.act_watch.setEnabled(available)

    def show_replay(self, badge: str) -> None:
        """Mark the live view as a replay of a logged part ('' = back to the live frames)."""
        self.live_view.set_badge(badge)
        self.back_to_live.setVisible(bool(badge))

    def show_live_image(self, image) -> None:
        self.live_view.set_image(image)

    def show_live_inset(self, image) -> None:
        """The newest camera frame in the corner while a part is shown (None: no inset)."""
        self.live_view.set_inset(image)

    def has_live_inset(self) -> bool:
        return self.live_view.has_inset()

    def show_reconstruction(self, image) -> None:
        self.recon_view.set_image(image)

    def show_reconstruction_panel(self, visible: bool) -> None:
        self.recon_view.setVisible(visible)

    def show_display_options(self, options) -> None:
        """DisplayOptions in the control panel and the View menu (without emitting), and the reconstruction panel."""
        self.controls.show_display_options(options)
        for field, action in self._display_actions().items():
            action.blockSignals(True)
            action.setChecked(getattr(options, field))
            action.blockSignals(False)
        self.show_reconstruction_panel(options.reconstruction)

    def show_models(self, entries: list[tuple[str, str]], current: str) -> None:
        """The model picker: (label, path) entries and the path in use."""
        self.controls.show_models(entries, current)

    def show_model_info(self, text: str, reverse_steps: int | None = None, gate_fusion: bool | None = None,
                        gating: bool = True) -> None:
        self.controls.show_model_info(text, reverse_steps, gate_fusion, gating)

    def show_runtimes(self, options: list[tuple[str, str]], current: str) -> None:
        """The runtime picker: (label, name) entries and the name in use ('openvino int8')."""
        self.controls.show_runtimes(options, current)

    def show_categories(self, names: list[str], current: str | None, auto_available: bool, auto_label: str) -> None:
        self.controls.show_categories(names, current, auto_available, auto_label)

    def show_thresholds(self, fail: float, review: float) -> None:
        """The thresholds in the control panel and as lines on the score trend."""
        self.controls.show_thresholds(fail, review)
        self.trend.set_thresholds(fail, review)

    def show_roi(self, text: str) -> None:
        self.controls.show_roi(text)

    def draw_roi(self, on: bool) -> bool:
        """Start (on the Live tab) or cancel drawing the region of interest; False when there is no image to draw on."""
        if not on:
            self.live_view.cancel_roi_selection()
            return True
        if not self.live_view.has_image():
            return False
        self.show_tab(LIVE_TAB)
        self.live_view.start_roi_selection()
        return True

    def is_drawing_roi(self) -> bool:
        return self.live_view.is_selecting()

    def show_recipes(self, names: list[str], current: str, modified: bool = False) -> None:
        self.controls.show_recipes(names, current, modified)

    def show_source(self, text: str, tooltip: str = "") -> None:
        self.controls.show_source(text, tooltip)

    def show_run_state(self, state: str, has_source: bool) -> None:
        self.controls.show_run_state(state, has_source)

    def show_progress(self, text: str) -> None:
        self.controls.show_progress(text)

    def show_counts(self, counts: dict[str, int]) -> None:
        self.counters.show_counts(counts)

    def show_verdict(self, verdict: str, score: float | None, detail: str = "") -> None:
        self.banner.show_verdict(verdict, score, detail)

    def show_idle(self, detail: str) -> None:
        self.banner.show_idle(detail)

    def add_trend_point(self, score: float, verdict: str) -> None:
        """A part's score on the trend (drawn at the next refresh_trend)."""
        self.trend.add(score, verdict)

    def refresh_trend(self) -> None:
        self.trend.refresh()

    def clear_trend(self) -> None:
        self.trend.clear()

    def add_filmstrip_parts(self, parts: list[tuple]) -> None:
        """(key, thumbnail, verdict, caption, tooltip) per part, oldest first; only as many as the strip holds."""
        for part in parts[-self.filmstrip.capacity:]:
            self.filmstrip.add_part(*part)

    def results_filter(self):
        """The Results tab's filter (a ResultFilter)."""
        return self.results_view.current_filter()

    def show_results(self, rows: list[dict], total: int, summary: str, categories: list[str] | None = None) -> None:
        """Rows of the Results tab, their total, a summary line and (when given) the categories to filter by."""
        if categories is not None:
            self.results_view.show_categories(categories)
        self.results_view.show_rows(rows, total, summary)

    def statistics_selection(self):
        """(Period, recipe) selected in the Statistics tab."""
        return self.statistics_view.selection()

    def show_statistics(self, stats, seconds: float | None, recipes: list[str]) -> None:
        self.statistics_view.show_recipes(recipes)
        self.statistics_view.show_statistics(stats, seconds)

    def show_station(self, shifts: tuple, reports_allowed: bool) -> None:
        """The station's shifts (for the Statistics tab's periods) and whether reports may be exported."""
        self.statistics_view.set_shifts(shifts)
        self.statistics_view.show_report_allowed(reports_allowed)

    def bind_state(self, state: SessionState) -> None:
        """Follow the session state (inspector.session_state.SessionState): folder options."""
        self._state = state

        def follow(name: str) -> None:
            if name in ("folder_recursive", "folder_watch"):
                self._show_folder_options(state.folder_recursive, state.folder_watch)

        state.changed.connect(follow)
        self._show_folder_options(state.folder_recursive, state.folder_watch)

    def _show_folder_options(self, recursive: bool, watch: bool) -> None:
        self.controls.show_folder_options(recursive, watch)
        for action, value in ((self.act_recursive, recursive), (self.act_watch, watch)):
            action.blockSignals(True)
            action.setChecked(value)
            action.blockSignals(False)

    def sizeHint(self) -> QSize:
        return QSize(1500, 940)

    # ----------------------------------------------------------------- drag and drop, closing
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:
        paths = [str(Path(u.toLocalFile())) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)

    def closeEvent(self, event) -> None:
        self.closing.emit()
        super().closeEvent(event)
