"""Starting the inspector window: `run_app` for main.py, `create_inspector` for tests and embedding."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from engine.version import __version__

from .appearance import DEFAULT_STYLE, apply_style, save_style, saved_style
from .controller import InspectorController
from .main_window import MainWindow
from .paths import APP_NAME, user_data_dir
from .welcome import WelcomeDialog, mark_welcome_shown, should_show_welcome
from .worker import single_threaded_opencv

__all__ = ["run_app", "create_inspector", "app_settings", "apply_style", "open_welcome", "show_welcome_once"]


def app_settings(folder: Path | None = None) -> QSettings:
    """QSettings in an INI file next to the results log (so $DECO_INSPECTOR_HOME isolates it too)."""
    folder = Path(folder) if folder is not None else user_data_dir()
    return QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)


def _ensure_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName("DeCo")
    return app


def create_inspector(loader=None, capture_factory=None, data_dir: Path | None = None,
                     settings: QSettings | None = None) -> tuple[MainWindow, InspectorController]:
    """The window and its controller, not yet shown and with nothing opened. `loader(path, **overrides)`
    replaces engine.loading.load_model (tests use tiny or slow fake detectors)."""
    _ensure_app()
    single_threaded_opencv()
    data_dir = Path(data_dir) if data_dir is not None else user_data_dir()
    settings = settings or app_settings(data_dir)
    window = MainWindow()
    controller = InspectorController(window, settings, loader=loader,
                                     capture_factory=capture_factory, data_dir=data_dir)
    window.show_style_checked(saved_style(settings))

    def use_style(name: str) -> None:
        apply_style(QApplication.instance(), name)
        save_style(settings, name)
        window.show_style_checked(name)

    window.style_requested.connect(use_style)
    window.act_welcome.triggered.connect(lambda: open_welcome(window, controller))
    return window, controller


def open_welcome(window: MainWindow, controller: InspectorController) -> WelcomeDialog:
    """Open the first-run screen over the window (window-modal, not blocking) and act on its buttons."""
    dialog = WelcomeDialog(controller.data_dir, parent=window)
    actions = {"demo": controller.start, "model": window.act_open_model.trigger,
               "train": window.act_training_wizard.trigger}

    def chosen(choice: str) -> None:
        controller.dismiss_hint()  # the welcome screen said it all
        if choice in actions:
            QTimer.singleShot(0, actions[choice])  # after the dialog has closed

    dialog.choice.connect(chosen)
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog


def show_welcome_once(window: MainWindow, controller: InspectorController) -> WelcomeDialog | None:
    """The first-run screen on the first start of this user data folder (see inspector/welcome.py)."""
    if not should_show_welcome(controller.settings):
        return None
    mark_welcome_shown(controller.settings)
    return open_welcome(window, controller)


def _setup_logging(data_dir: Path) -> None:
    logs = data_dir / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / "inspector.log", encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_app(model: str | None = None, source: str | None = None) -> int:
    """Open the inspector window (no arguments: the demo model and demo images); returns the exit code."""
    app = _ensure_app()
    data_dir = user_data_dir()
    settings = app_settings(data_dir)
    apply_style(app, saved_style(settings) or DEFAULT_STYLE)
    _setup_logging(data_dir)
    window, controller = create_inspector(data_dir=data_dir, settings=settings)

    def report_unexpected(kind, value, tb) -> None:
        details = "".join(traceback.format_exception(kind, value, tb))
        logging.getLogger("inspector").error("unexpected error:\n%s", details)
        controller.message(f"Unexpected error: {kind.__name__}: {value} (details in {data_dir / 'logs'})", "error")

    previous_hook = sys.excepthook
    sys.excepthook = report_unexpected
    controller.restore(model=model, source=source)
    window.show()
    show_welcome_once(window, controller)
    try:
        return app.exec()
    finally:
        controller.shutdown()
        sys.excepthook = previous_hook
