"""Dialogs (camera picker, calibration, about) and a helper that runs slow work off the GUI thread."""

from __future__ import annotations

import platform
import sys
import threading
import traceback
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QPushButton, QSpinBox,
                               QVBoxLayout)

from .sources import CameraInfo, SourceSpec, probe_cameras

__all__ = ["BackgroundTask", "CameraPickerDialog", "CalibrationDialog", "about_text", "SHORTCUTS_TEXT"]

SHORTCUTS_TEXT = """<table cellspacing=6>
<tr><td><b>Space</b></td><td>Start / pause</td></tr>
<tr><td><b>S</b></td><td>Step one frame (paused)</td></tr>
<tr><td><b>Esc</b></td><td>Stop</td></tr>
<tr><td><b>Ctrl+O</b></td><td>Open a folder of images</td></tr>
<tr><td><b>Ctrl+I</b> / <b>Ctrl+Shift+V</b></td><td>Open an image / a video</td></tr>
<tr><td><b>Ctrl+K</b> / <b>Ctrl+U</b></td><td>Open a camera / a stream URL</td></tr>
<tr><td><b>Ctrl+M</b></td><td>Open a model folder</td></tr>
<tr><td><b>H</b> / <b>C</b> / <b>R</b></td><td>Heatmap / outline / reconstruction on or off</td></tr>
<tr><td><b>F</b></td><td>Full heatmap, or only where the map exceeds the review level</td></tr>
<tr><td><b>Ctrl+1</b> / <b>Ctrl+2</b></td><td>Live / Results tab</td></tr>
<tr><td><b>Ctrl+E</b></td><td>Export results as CSV</td></tr>
<tr><td><b>F1</b></td><td>This list</td></tr>
</table>"""



def form_layout(*rows) -> QFormLayout:
    """A form of `rows`: (label, widget or layout) pairs, or a widget alone for a full-width row."""
    form = QFormLayout()
    for row in rows:
        if isinstance(row, tuple):
            form.addRow(*row)
        else:
            form.addRow(row)
    return form


def ok_cancel_buttons(dialog: QDialog, ok_text: str | None = None) -> QDialogButtonBox:
    """OK / Cancel buttons wired to the dialog's accept / reject (OK relabelled `ok_text`)."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    if ok_text:
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    return buttons

class BackgroundTask(QObject):
    """Runs `fn()` in a plain Python thread; `done(result)` or `failed(message)` arrive in the GUI thread."""

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[], object], parent=None):
        super().__init__(parent)
        self.fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True, name="background-task")

    def start(self) -> "BackgroundTask":
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            result = self.fn()
        except Exception as e:  # noqa: BLE001 - reported to the operator
            traceback.print_exc()
            self.failed.emit(f"{type(e).__name__}: {e}" if not str(e) else str(e))
        else:
            self.done.emit(result)


class CameraPickerDialog(QDialog):
    """Lists the camera indexes that open (probed in the background) with resolution and FPS choices."""

    RESOLUTIONS = (("Camera default", 0, 0), ("640 x 480", 640, 480), ("1280 x 720", 1280, 720),
                   ("1920 x 1080", 1920, 1080), ("2592 x 1944", 2592, 1944))

    def __init__(self, max_index: int = 5, capture_factory=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Choose a camera")
        self.setMinimumWidth(420)
        self.capture_factory = capture_factory
        self.max_index = max_index
        self._stop = threading.Event()
        self.cameras = QListWidget()
        self.status = QLabel(f"Looking for cameras 0..{max_index}…")
        self.status.setObjectName("Hint")
        self.manual_index = QSpinBox()
        self.manual_index.setRange(0, 99)
        self.resolution = QComboBox()
        for label, w, h in self.RESOLUTIONS:
            self.resolution.addItem(label, (w, h))
        self.fps = QSpinBox()
        self.fps.setRange(0, 240)
        self.fps.setSpecialValueText("Camera default")
        rescan = QPushButton("Scan again")
        rescan.clicked.connect(self._scan)
        form = QFormLayout()
        form.addRow("Or index", self.manual_index)
        form.addRow("Resolution", self.resolution)
        form.addRow("Frames/s", self.fps)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(rescan)
        layout = QVBoxLayout(self)
        layout.addWidget(self.cameras)
        layout.addLayout(row)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.cameras.itemClicked.connect(lambda item: self.manual_index.setValue(item.data(Qt.ItemDataRole.UserRole)))
        self.cameras.itemDoubleClicked.connect(lambda _: self.accept())
        self._task: BackgroundTask | None = None
        self._scan()

    def _scan(self) -> None:
        if self._task is not None and self._task.is_alive():
            return
        self.cameras.clear()
        self.status.setText(f"Looking for cameras 0..{self.max_index}…")
        self._task = BackgroundTask(lambda: probe_cameras(self.max_index, self.capture_factory, self._stop), self)
        self._task.done.connect(self._show_cameras)
        self._task.failed.connect(lambda msg: self.status.setText(f"Camera scan failed: {msg}"))
        self._task.start()

    def _show_cameras(self, found: list[CameraInfo]) -> None:
        for info in found:
            item = QListWidgetItem(info.label())
            item.setData(Qt.ItemDataRole.UserRole, info.index)
            self.cameras.addItem(item)
        if found:
            self.cameras.setCurrentRow(0)
            self.manual_index.setValue(found[0].index)
            self.status.setText(f"{len(found)} camera(s) found")
        else:
            self.status.setText("No camera answered. Check the cable, or type an index.")

    def spec(self) -> SourceSpec:
        w, h = self.resolution.currentData()
        return SourceSpec("camera", str(self.manual_index.value()), width=w, height=h, fps=float(self.fps.value()))

    def done(self, result: int) -> None:
        self._stop.set()
        super().done(result)


class CalibrationDialog(QDialog):
    """Pick a folder of known-good images, the percentile and the safety margin."""

    def __init__(self, folder: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle("Calibrate thresholds")
        self.setMinimumWidth(460)
        self.folder = QLineEdit(folder)
        self.folder.setPlaceholderText("Folder of known-good images")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.percentile = QDoubleSpinBox()
        self.percentile.setRange(50.0, 100.0)
        self.percentile.setValue(99.0)
        self.percentile.setSuffix(" th percentile")
        self.margin = QDoubleSpinBox()
        self.margin.setRange(0.0, 200.0)
        self.margin.setValue(10.0)
        self.margin.setSuffix(" %")
        text = QLabel("The review threshold becomes the chosen percentile of the good scores; the fail "
                      "threshold adds the margin on top. The model and category in use are applied.")
        text.setWordWrap(True)
        text.setObjectName("Hint")
        form = form_layout(("Good images", row), ("Review at", self.percentile), ("Fail margin", self.margin))
        buttons = ok_cancel_buttons(self)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of known-good images", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def values(self) -> tuple[str, float, float]:
        return self.folder.text().strip(), self.percentile.value(), self.margin.value() / 100.0


def about_text(device: str) -> str:
    """Versions of everything the operator may be asked about."""
    import cv2
    import pyqtgraph
    import PySide6
    from PySide6.QtCore import qVersion

    from engine.version import __version__

    try:
        import torch

        torch_version = torch.__version__
        cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
    except ImportError:
        torch_version, cuda = "not installed", ""
    rows = (
        ("DeCo Inspector", __version__),
        ("Python", f"{sys.version.split()[0]} ({platform.system()} {platform.machine()})"),
        ("PyTorch", torch_version + cuda),
        ("Qt", f"{qVersion()} (PySide6 {PySide6.__version__})"),
        ("OpenCV", cv2.__version__),
        ("pyqtgraph", pyqtgraph.__version__),
        ("Device", device or "no model loaded"),
    )
    table = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
    return (f"<h3>DeCo Inspector {__version__}</h3>"
            "<p>Visual quality inspection with gated DeCo-Diff diffusion anomaly detectors.</p>"
            f"<table cellspacing=4>{table}</table>")
