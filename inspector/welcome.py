"""The first-run screen: what the demo shows and how to load or train one's own model. Shown once per
user data folder (settings key app/welcome_shown), again from Help ▸ Getting started; the environment
variable DECO_INSPECTOR_NO_WELCOME=1 suppresses it (kiosk stations, scripted starts)."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPushButton, QTextBrowser,
                               QVBoxLayout, QWidget)

from engine.version import __version__

from .appearance import app_icon, menu_icon

__all__ = ["WelcomeDialog", "welcome_html", "should_show_welcome", "mark_welcome_shown", "SUPPRESS_ENV"]

SUPPRESS_ENV = "DECO_INSPECTOR_NO_WELCOME"
SETTINGS_KEY = "app/welcome_shown"


def welcome_html(data_dir: Path | None = None) -> str:
    """The text of the first-run screen (HTML)."""
    where = (f"<p>Results, logs, recipes and settings are kept in <code>{data_dir}</code>.</p>"
             if data_dir is not None else "")
    return f"""
<h3>The demo</h3>
<p>The inspector opens on a <b>demo</b>: a small bundled model and test images of a few made-up products,
good ones and ones with scratches, cracks, stains, holes and dirt.
Press <b>Space</b> to start. Each part gets a verdict in the banner, <b style="color:#2ea043">PASS</b>,
<b style="color:#d4a017">REVIEW</b> or <b style="color:#e5534b">FAIL</b>; the heatmap shows where it looks
wrong, the trend plots the scores and the <b>Results</b> tab lists every part. The demo model is small and
was trained in under two hours on a laptop-class CPU, so expect some wrong verdicts; the README lists how well it
does per product.</p>
<h3>Your own parts</h3>
<ul>
<li><b>Images:</b> File ▸ Open folder (<b>Ctrl+O</b>), or drop files on the window; a camera with
Source ▸ Camera (<b>Ctrl+K</b>).</li>
<li><b>Your model:</b> Model ▸ Open model folder (<b>Ctrl+M</b>): a folder with <code>model.json</code> and its
weights, as written by training. A checkpoint of the public DeCo-Diff code opens with Model ▸ Open reference
checkpoint (it needs its Stable-Diffusion VAE on disk; nothing is downloaded).</li>
<li><b>Thresholds:</b> Model ▸ Calibrate thresholds from a folder of known-good images.</li>
</ul>
<h3>Train a model</h3>
<p>Models learn from <b>good</b> images only: a few hundred photos of good parts per product, in a folder per
product. Use Training ▸ Training wizard, or the command line: <code>deco-inspector train-vae</code>, then
<code>train-classifier</code> (more than one product) and <code>train</code> (the DeCo-Diff UNet); every
command has <code>--help</code> and the README's <i>Train your own model</i> walks through them. The result
is a model folder to open with Ctrl+M.</p>
{where}
<p>F1 lists the keyboard shortcuts; Help ▸ Getting started shows this screen again.</p>
"""


class WelcomeDialog(QDialog):
    """The first-run screen. `choice` says which button closed it: "demo", "model", "train" or "close"."""

    choice = Signal(str)

    def __init__(self, data_dir: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("WelcomeDialog")
        self.setWindowTitle("Welcome to DeCo Inspector")
        self.setMinimumSize(720, 660)
        self.chosen = "close"
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(64, 64))
        title = QLabel(f"Welcome to DeCo Inspector {__version__}")
        title.setObjectName("WelcomeTitle")
        subtitle = QLabel("Visual quality inspection with diffusion anomaly detectors, trained from good parts only.")
        subtitle.setObjectName("Hint")
        subtitle.setWordWrap(True)
        heading = QVBoxLayout()
        heading.addWidget(title)
        heading.addWidget(subtitle)
        top = QHBoxLayout()
        top.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        top.addLayout(heading, 1)
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(False)
        self.text.setHtml(welcome_html(data_dir))
        buttons = QDialogButtonBox()
        self.demo_button = self._button(buttons, "Start the demo", "play", "demo",
                                        QDialogButtonBox.ButtonRole.AcceptRole)
        self.model_button = self._button(buttons, "Open my model…", "model", "model",
                                         QDialogButtonBox.ButtonRole.ActionRole)
        self.train_button = self._button(buttons, "Train a model…", "train", "train",
                                         QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self._button(buttons, "Close", None, "close", QDialogButtonBox.ButtonRole.RejectRole)
        self.demo_button.setDefault(True)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)

    def _button(self, box: QDialogButtonBox, text: str, icon: str | None, choice: str,
                role: QDialogButtonBox.ButtonRole) -> QPushButton:
        button = QPushButton(menu_icon(icon), text) if icon else QPushButton(text)
        box.addButton(button, role)
        button.clicked.connect(lambda: self._close_with(choice))
        return button

    def _close_with(self, choice: str) -> None:
        self.chosen = choice
        self.done(QDialog.DialogCode.Accepted if choice != "close" else QDialog.DialogCode.Rejected)
        self.choice.emit(choice)

    def reject(self) -> None:  # Esc or the window's close button
        self._close_with("close")


def should_show_welcome(settings: QSettings) -> bool:
    """True on the first start of a user data folder, unless DECO_INSPECTOR_NO_WELCOME is set."""
    if os.environ.get(SUPPRESS_ENV, "").strip() not in ("", "0"):
        return False
    value = settings.value(SETTINGS_KEY, False)
    return str(value).lower() not in ("true", "1")


def mark_welcome_shown(settings: QSettings) -> None:
    settings.setValue(SETTINGS_KEY, True)
    settings.sync()
