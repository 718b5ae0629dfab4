"""The main window: layout, menus, shortcuts, status bar and log panel. It owns no logic:
menu actions and widget signals are wired up by the InspectorController."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QTextCursor
from PySide6.QtWidgets import (QDockWidget, QFrame, QHBoxLayout, QLabel, QMainWindow, QPlainTextEdit, QProgressBar,
                               QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from .appearance import STYLES, menu_icon
from .controls import ControlPanel
from .paths import APP_NAME
from .results_view import ResultsView
from .views import CountersPanel, Filmstrip, ImageView, TrendPlot, VerdictBanner

__all__ = ["MainWindow", "LOG_COLORS", "LIVE_TAB", "RESULTS_TAB"]

LIVE_TAB, RESULTS_TAB = "live", "results"
TABS = (LIVE_TAB, RESULTS_TAB)   # in the order of the main tabs
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
        self._build_actions()
        self._build_menus()
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

    def _action(self, text: str, shortcut=None, checkable: bool = False, checked: bool = False,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if checkable:
            action.setCheckable(True)
            action.setChecked(checked)
        if tip:
            action.setStatusTip(tip)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_open_folder = a("Open &folder…", "Ctrl+O", tip="Inspect every image in a folder")
        self.act_open_image = a("Open &image…", "Ctrl+I")
        self.act_open_video = a("Open &video…", "Ctrl+Shift+V")
        self.act_export_csv = a("&Export results as CSV…", "Ctrl+E")
        self.act_quit = a("&Quit", "Ctrl+Q")
        self.act_camera = a("&Camera…", "Ctrl+K")
        self.act_stream = a("Network &stream URL…", "Ctrl+U")
        self.act_watch = a("&Watch folder for new files", checkable=True)
        self.act_recursive = a("Include &subfolders", checkable=True, checked=True)
        self.act_run = a("&Start / pause", "Space")
        self.act_step = a("S&tep", "S")
        self.act_stop = a("St&op", "Esc")
        self.act_open_model = a("Open model &folder…", "Ctrl+M")
        self.act_open_checkpoint = a("Open reference &checkpoint (.pt)…")
        self.act_demo_model = a("&Demo model")
        self.act_calibrate = a("&Calibrate thresholds from good images…")
        self.act_gate_fusion = a("&Gate fusion", checkable=True)
        self.act_heatmap = a("&Heatmap", "H", checkable=True, checked=True)
        self.act_contour = a("Defect &outline", "C", checkable=True, checked=True)
        self.act_reconstruction = a("&Reconstruction side by side", "R", checkable=True)
        self.act_full_heatmap = a("&Full heatmap", "F", checkable=True,
                                  tip="Colour the whole anomaly map, not only where it exceeds the review level")
        self.act_live_tab = a("&Live", "Ctrl+1")
        self.act_results_tab = a("&Results", "Ctrl+2")
        self.act_reset_counters = a("Reset &counters")
        self.act_roi = a("Draw region of &interest", "Ctrl+R")
        self.act_clear_roi = a("Clear region of interest")
        self.act_training_wizard = a("Training &wizard…")
        self.act_shortcuts = a("&Keyboard shortcuts", "F1")
        self.act_about = a("&About DeCo Inspector")
        self.act_welcome = a("&Getting started…", tip="The welcome screen: the demo, your own model, training")
        self.act_training_wizard.triggered.connect(self.training_wizard_requested)
        self.style_group = QActionGroup(self)
        self.style_group.setExclusive(True)
        self.act_styles: dict[str, QAction] = {}
        for name, label in STYLES.items():
            action = a(f"&{label}", checkable=True, tip=f"Use the {label.lower()} style")
            action.setData(name)
            self.style_group.addAction(action)
            self.act_styles[name] = action
        self.style_group.triggered.connect(lambda action: self.style_requested.emit(str(action.data())))
        for action, icon in ((self.act_open_folder, "folder"), (self.act_open_image, "image"),
                             (self.act_open_video, "video"), (self.act_export_csv, "export"),
                             (self.act_camera, "camera"), (self.act_stream, "stream"), (self.act_run, "play"),
                             (self.act_step, "step"), (self.act_stop, "stop"), (self.act_open_model, "model"),
                             (self.act_calibrate, "calibrate"), (self.act_training_wizard, "train"),
                             (self.act_shortcuts, "help"), (self.act_welcome, "help"), (self.act_about, "about")):
            action.setIcon(menu_icon(icon))

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for act in (self.act_open_folder, self.act_open_image, self.act_open_video):
            file_menu.addAction(act)
        file_menu.addSeparator()
        file_menu.addAction(self.act_export_csv)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        source_menu = bar.addMenu("&Source")
        for act in (self.act_camera, self.act_stream):
            source_menu.addAction(act)
        source_menu.addSeparator()
        source_menu.addAction(self.act_recursive)
        source_menu.addAction(self.act_watch)
        source_menu.addSeparator()
        for act in (self.act_run, self.act_step, self.act_stop):
            source_menu.addAction(act)
        model_menu = bar.addMenu("&Model")
        for act in (self.act_open_model, self.act_open_checkpoint, self.act_demo_model):
            model_menu.addAction(act)
        model_menu.addSeparator()
        model_menu.addAction(self.act_gate_fusion)
        model_menu.addAction(self.act_calibrate)
        model_menu.addSeparator()
        model_menu.addAction(self.act_roi)
        model_menu.addAction(self.act_clear_roi)
        view_menu = bar.addMenu("&View")
        for act in (self.act_heatmap, self.act_full_heatmap, self.act_contour, self.act_reconstruction):
            view_menu.addAction(act)
        view_menu.addSeparator()
        view_menu.addAction(self.act_live_tab)
        view_menu.addAction(self.act_results_tab)
        view_menu.addSeparator()
        view_menu.addAction(self.controls_dock.toggleViewAction())
        view_menu.addAction(self.log_dock.toggleViewAction())
        view_menu.addAction(self.act_reset_counters)
        view_menu.addSeparator()
        style_menu = view_menu.addMenu(menu_icon("theme"), "St&yle")
        for action in self.act_styles.values():
            style_menu.addAction(action)
        training_menu = bar.addMenu("&Training")
        training_menu.addAction(self.act_training_wizard)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_welcome)
        help_menu.addAction(self.act_shortcuts)
        help_menu.addAction(self.act_about)

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

    def bind_state(self, state) -> None:
        """Follow the session state (inspector.session_state.SessionState): folder options."""
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
