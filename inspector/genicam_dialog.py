"""Source ▸ GenICam camera…: pick a GenTL producer and a camera, set its features (exposure, gain,
pixel format, region, trigger), and open it as the source. The dialog only builds the camera's
source URL (inspector.genicam); the URL is what recipes store."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from .genicam import FEATURES, SIMULATOR, GenICamError, genicam_url, list_cameras, read_features
from .source_spec import SourceSpec, spec_for_path
from .dialogs import ok_cancel_buttons

__all__ = ["GenICamDialog", "attach_genicam_action"]

SIMULATED_TEXT = "Simulated camera (the genicam wheel's viky.cti)"


class GenICamDialog(QDialog):
    """Producer, camera, features -> a genicam:// source URL (`url()`)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("GenICam camera")
        self.setMinimumWidth(620)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        producer_row = QHBoxLayout()
        self.producer = QLineEdit()
        self.producer.setPlaceholderText("GenTL producer (.cti) of the camera maker's SDK")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        producer_row.addWidget(self.producer, 1)
        producer_row.addWidget(browse)
        form.addRow("Producer", producer_row)
        self.simulated = QCheckBox(SIMULATED_TEXT)
        self.simulated.toggled.connect(self.producer.setDisabled)
        form.addRow("", self.simulated)
        camera_row = QHBoxLayout()
        self.camera = QComboBox()
        self.camera.setEditable(True)
        self.camera.setToolTip("index, id, serial number or user-defined name")
        find = QPushButton("Find cameras")
        find.clicked.connect(self.find_cameras)
        read = QPushButton("Read settings")
        read.clicked.connect(self.read_settings)
        camera_row.addWidget(self.camera, 1)
        camera_row.addWidget(find)
        camera_row.addWidget(read)
        form.addRow("Camera", camera_row)
        self.features: dict[str, QComboBox] = {}
        for name in FEATURES:
            box = QComboBox()
            box.setEditable(True)
            box.lineEdit().setPlaceholderText("(the camera's own)")
            box.currentTextChanged.connect(self._show_url)
            self.features[name] = box
            form.addRow(name, box)
        self.software_trigger = QCheckBox("Fire TriggerSoftware before each picture")
        form.addRow("", self.software_trigger)
        layout.addLayout(form)
        self.url_view = QLineEdit()
        self.url_view.setReadOnly(True)
        layout.addWidget(self.url_view)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        layout.addWidget(self.problem)
        buttons = ok_cancel_buttons(self, "Open camera")
        layout.addWidget(buttons)
        for signal in (self.producer.textChanged, self.camera.currentTextChanged):
            signal.connect(self._show_url)
        self.simulated.toggled.connect(self._show_url)
        self.software_trigger.toggled.connect(self._show_url)
        self._show_url()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GenTL producer", "", "GenTL producers (*.cti)")
        if path:
            self.producer.setText(path)

    def producers(self) -> list[str]:
        if self.simulated.isChecked():
            return [SIMULATOR]
        return [self.producer.text().strip()] if self.producer.text().strip() else []

    def device(self) -> str:
        """The chosen camera's id (a found one) or what was typed (index, id, serial, name)."""
        index = self.camera.currentIndex()
        text = self.camera.currentText().strip()
        if index >= 0 and text == self.camera.itemText(index) and self.camera.itemData(index):
            return str(self.camera.itemData(index))
        return text or "0"

    def url(self) -> str:
        features = {name: box.currentText().strip() for name, box in self.features.items()}
        return genicam_url(self.device(), self.producers(), features, self.software_trigger.isChecked())

    def _show_url(self, *_) -> None:
        self.url_view.setText(self.url())

    def _run(self, what: Callable[[], object]):
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            result = what()
            self.problem.setText("")
            return result
        except GenICamError as e:
            self.problem.setText(str(e))
        except Exception as e:  # noqa: BLE001 - a producer's own errors: shown, never a crash
            self.problem.setText(f"{type(e).__name__}: {e}")
        finally:
            QApplication.restoreOverrideCursor()
        return None

    def find_cameras(self) -> None:
        if not self.producers():
            self.problem.setText("Choose the producer (.cti) first, or the simulated camera")
            return
        cameras = self._run(lambda: list_cameras(self.producers()))
        if cameras is None:
            return
        self.camera.clear()
        for camera in cameras:
            self.camera.addItem(camera["name"] or camera["id"], camera["id"])
        if not cameras:
            self.problem.setText("The producer found no camera")
        self._show_url()

    def read_settings(self) -> None:
        values = self._run(lambda: read_features(genicam_url(self.device(), self.producers(), {})))
        if values is None:
            return
        for name, box in self.features.items():
            value, choices = values.get(name, ("", []))
            box.blockSignals(True)
            box.clear()
            box.addItems(choices)
            box.setEditText(value)
            box.setEnabled(name in values)
            box.blockSignals(False)
        self._show_url()

    def spec(self) -> SourceSpec:
        return spec_for_path(self.url())


def attach_genicam_action(window, open_source: Callable[[SourceSpec], None]) -> QAction:
    """Source ▸ GenICam camera… (after the stream entry); opens the chosen camera as the source."""
    action = QAction("&GenICam camera…", window)

    def choose() -> None:
        dialog = GenICamDialog(window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            open_source(dialog.spec())

    action.triggered.connect(choose)
    menu = next((a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "Source"), None)
    if menu is not None:
        after = window.act_stream
        actions = menu.actions()
        following = actions[actions.index(after) + 1] if after in actions and actions.index(after) + 1 < len(actions) \
            else None
        menu.insertAction(following, action)
    return action
