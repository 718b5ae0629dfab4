"""The main window's menu actions and menus (built into the window; the window connects them to
its intent signals, see MainWindow._connect_intents)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from .appearance import STYLES, menu_icon

__all__ = ["build_actions", "build_menus"]


def _action(window, text: str, shortcut=None, checkable: bool = False, checked: bool = False,
            tip: str = "") -> QAction:
    action = QAction(text, window)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    if checkable:
        action.setCheckable(True)
        action.setChecked(checked)
    if tip:
        action.setStatusTip(tip)
    window.addAction(action)
    return action


def build_actions(window) -> None:
    """The window's menu actions, as `window.act_*` (and `act_styles`, `style_group`)."""
    def a(*args, **kwargs) -> QAction:
        return _action(window, *args, **kwargs)

    window.act_open_folder = a("Open &folder…", "Ctrl+O", tip="Inspect every image in a folder")
    window.act_open_image = a("Open &image…", "Ctrl+I")
    window.act_open_video = a("Open &video…", "Ctrl+Shift+V")
    window.act_export_csv = a("&Export results as CSV…", "Ctrl+E")
    window.act_quit = a("&Quit", "Ctrl+Q")
    window.act_camera = a("&Camera…", "Ctrl+K")
    window.act_stream = a("Network &stream URL…", "Ctrl+U")
    window.act_watch = a("&Watch folder for new files", checkable=True)
    window.act_recursive = a("Include &subfolders", checkable=True, checked=True)
    window.act_run = a("&Start / pause", "Space")
    window.act_step = a("S&tep", "S")
    window.act_stop = a("St&op", "Esc")
    window.act_open_model = a("Open model &folder…", "Ctrl+M")
    window.act_open_checkpoint = a("Open reference &checkpoint (.pt)…")
    window.act_demo_model = a("&Demo model")
    window.act_calibrate = a("&Calibrate thresholds from good images…")
    window.act_gate_fusion = a("&Gate fusion", checkable=True)
    window.act_heatmap = a("&Heatmap", "H", checkable=True, checked=True)
    window.act_contour = a("Defect &outline", "C", checkable=True, checked=True)
    window.act_reconstruction = a("&Reconstruction side by side", "R", checkable=True)
    window.act_full_heatmap = a("&Full heatmap", "F", checkable=True,
                                tip="Colour the whole anomaly map, not only where it exceeds the review level")
    window.act_live_tab = a("&Live", "Ctrl+1")
    window.act_results_tab = a("&Results", "Ctrl+2")
    window.act_reset_counters = a("Reset &counters")
    window.act_roi = a("Draw region of &interest", "Ctrl+R")
    window.act_clear_roi = a("Clear region of interest")
    window.act_training_wizard = a("Training &wizard…")
    window.act_shortcuts = a("&Keyboard shortcuts", "F1")
    window.act_about = a("&About DeCo Inspector")
    window.act_welcome = a("&Getting started…", tip="The welcome screen: the demo, your own model, training")
    window.act_training_wizard.triggered.connect(window.training_wizard_requested)
    window.style_group = QActionGroup(window)
    window.style_group.setExclusive(True)
    window.act_styles = {}   # style name -> its View ▸ Style action
    for name, label in STYLES.items():
        action = a(f"&{label}", checkable=True, tip=f"Use the {label.lower()} style")
        action.setData(name)
        window.style_group.addAction(action)
        window.act_styles[name] = action
    window.style_group.triggered.connect(lambda action: window.style_requested.emit(str(action.data())))
    for action, icon in ((window.act_open_folder, "folder"), (window.act_open_image, "image"),
                         (window.act_open_video, "video"), (window.act_export_csv, "export"),
                         (window.act_camera, "camera"), (window.act_stream, "stream"), (window.act_run, "play"),
                         (window.act_step, "step"), (window.act_stop, "stop"), (window.act_open_model, "model"),
                         (window.act_calibrate, "calibrate"), (window.act_training_wizard, "train"),
                         (window.act_shortcuts, "help"), (window.act_welcome, "help"), (window.act_about, "about")):
        action.setIcon(menu_icon(icon))


def build_menus(window) -> None:
    """The menu bar: File, Source, Model, View, Training, Help."""
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    for act in (window.act_open_folder, window.act_open_image, window.act_open_video):
        file_menu.addAction(act)
    file_menu.addSeparator()
    file_menu.addAction(window.act_export_csv)
    file_menu.addSeparator()
    file_menu.addAction(window.act_quit)
    source_menu = bar.addMenu("&Source")
    for act in (window.act_camera, window.act_stream):
        source_menu.addAction(act)
    source_menu.addSeparator()
    source_menu.addAction(window.act_recursive)
    source_menu.addAction(window.act_watch)
    source_menu.addSeparator()
    for act in (window.act_run, window.act_step, window.act_stop):
        source_menu.addAction(act)
    model_menu = bar.addMenu("&Model")
    for act in (window.act_open_model, window.act_open_checkpoint, window.act_demo_model):
        model_menu.addAction(act)
    model_menu.addSeparator()
    model_menu.addAction(window.act_gate_fusion)
    model_menu.addAction(window.act_calibrate)
    model_menu.addSeparator()
    model_menu.addAction(window.act_roi)
    model_menu.addAction(window.act_clear_roi)
    view_menu = bar.addMenu("&View")
    for act in (window.act_heatmap, window.act_full_heatmap, window.act_contour, window.act_reconstruction):
        view_menu.addAction(act)
    view_menu.addSeparator()
    view_menu.addAction(window.act_live_tab)
    view_menu.addAction(window.act_results_tab)
    view_menu.addSeparator()
    view_menu.addAction(window.controls_dock.toggleViewAction())
    view_menu.addAction(window.log_dock.toggleViewAction())
    view_menu.addAction(window.act_reset_counters)
    view_menu.addSeparator()
    style_menu = view_menu.addMenu(menu_icon("theme"), "St&yle")
    for action in window.act_styles.values():
        style_menu.addAction(action)
    training_menu = bar.addMenu("&Training")
    training_menu.addAction(window.act_training_wizard)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(window.act_welcome)
    help_menu.addAction(window.act_shortcuts)
    help_menu.addAction(window.act_about)
