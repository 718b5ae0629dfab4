"""The app's look: the light and dark Qt styles (resources/styles/*.qss), the app icon and menu icons
(resources/icons, drawn by scripts/make_icons.py), and the style choice kept in the settings."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from .paths import RESOURCES_DIR

__all__ = ["STYLES", "DEFAULT_STYLE", "STYLES_DIR", "ICONS_DIR", "APP_ICON_FILE", "style_file", "load_stylesheet",
           "apply_style", "saved_style", "save_style", "app_icon", "menu_icon"]

STYLES_DIR = RESOURCES_DIR / "styles"
ICONS_DIR = RESOURCES_DIR / "icons"
APP_ICON_FILE = ICONS_DIR / "deco-inspector.svg"
STYLES = {"dark": "Dark", "light": "Light"}  # name -> menu label; the file is styles/<name>.qss
DEFAULT_STYLE = "dark"
SETTINGS_KEY = "display/style"

log = logging.getLogger("inspector")


def style_file(name: str) -> Path:
    if name not in STYLES:
        raise ValueError(f"unknown style {name!r}; choose one of {', '.join(STYLES)}")
    return STYLES_DIR / f"{name}.qss"


def load_stylesheet(name: str) -> str:
    """The style sheet text with @ICONS@ replaced by the icon folder. Raises OSError naming the file."""
    path = style_file(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise OSError(f"cannot read the {name} style {path}: {e.strerror or e}") from e
    return text.replace("@ICONS@", ICONS_DIR.resolve().as_posix())


def apply_style(app: QApplication, name: str = DEFAULT_STYLE) -> str:
    """Fusion plus the named style sheet and the app icon; returns the style in use (the plain Fusion
    look, logged, when the sheet cannot be read)."""
    app.setStyle("Fusion")
    try:
        app.setStyleSheet(load_stylesheet(name))
    except OSError as e:
        log.warning("%s; using the plain style", e)
        app.setStyleSheet("")
    app.setWindowIcon(app_icon())
    app.setProperty("decoStyle", name)
    return name


def saved_style(settings: QSettings) -> str:
    """The style chosen last (View ▸ Style), or the default for an unknown or missing value."""
    name = str(settings.value(SETTINGS_KEY, DEFAULT_STYLE) or DEFAULT_STYLE)
    return name if name in STYLES else DEFAULT_STYLE


def save_style(settings: QSettings, name: str) -> None:
    style_file(name)  # validates the name
    settings.setValue(SETTINGS_KEY, name)
    settings.sync()


def app_icon() -> QIcon:
    """The app icon in every drawn size (PNGs for small sizes, the SVG for the rest)."""
    icon = QIcon()
    for png in sorted(ICONS_DIR.glob("deco-inspector-*.png")):
        icon.addFile(str(png))
    if APP_ICON_FILE.is_file():
        icon.addFile(str(APP_ICON_FILE))
    return icon


def menu_icon(name: str) -> QIcon:
    """A menu icon from resources/icons/<name>.svg (an empty icon when the file is missing)."""
    path = ICONS_DIR / f"{name}.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()
