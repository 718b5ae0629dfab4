"""Line ▸ Outputs in the window: the recipe's outputs (MQTT, webhook, PostgreSQL, Modbus TCP,
OPC UA), edited in a dialog, fed by the window's inspection session through the outbox, and
their status in the status bar (connected, queued, last error).

Line ▸ Take triggers from the line: the PLC (Modbus TRIGGER coil, OPC UA StartSingleJob) or the
plant (MQTT trigger command) steps the run by one frame, named by the trigger's part id; the
outputs show busy until that part is inspected, then ready.

The window only shows and edits; delivery is `lineio.LineOutputs` (threads, outbox) listening
to the engine worker's session. The outputs are stored in the recipe (`extra["outputs"]`, the
same list `main.py station --recipe` uses).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

import threading

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (QDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget, QMenu,
                               QPushButton, QVBoxLayout, QWidget)

from lineio import LineOutputs, OutboxError, SinkStatus
from lineio.outputs import make_sink
from .dialogs import ok_cancel_buttons

__all__ = ["OutputsDialog", "LinePanel", "status_summary", "check_urls"]

STATUS_REFRESH_MS = 1000
EXAMPLES = ("mqtt://broker:1883/plant/line1/st2", "https://mes.example.com/api/inspections",
            "postgresql://station@db/plant?table=inspection_results", "modbus://0.0.0.0:1502?unit=1",
            "opcua://0.0.0.0:4840")


def check_urls(urls: list[str]) -> str:
    """'' when every URL names a usable output, else the first problem (one line)."""
    for url in urls:
        try:
            make_sink(url)
        except ValueError as e:
            return str(e)
    return ""


def status_summary(statuses: list[SinkStatus]) -> tuple[str, str, str]:
    """(status bar text, tooltip, level) for the outputs' status."""
    if not statuses:
        return "", "", "info"
    connected = sum(s.connected for s in statuses)
    queued = sum(s.queued for s in statuses)
    text = f"outputs {connected}/{len(statuses)} connected" + (f", {queued} queued" if queued else "")
    level = "ok" if connected == len(statuses) and not queued else ("error" if connected == 0 else "warning")
    return text, "\n".join(s.line() for s in statuses), level


class OutputsDialog(QDialog):
    """Edit a list of output URLs; Add checks a URL before it joins the list."""

    def __init__(self, urls: list[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Line outputs")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Every inspected part goes to these outputs (saved with the recipe).\n"
                                "Results wait in the outbox while an output is unreachable."))
        self.list = QListWidget()
        self.list.addItems(urls)
        layout.addWidget(self.list)
        row = QHBoxLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText(EXAMPLES[0])
        self.url_edit.setToolTip("Examples:\n" + "\n".join(EXAMPLES))
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        layout.addLayout(row)
        self.problem = QLabel("")
        self.problem.setObjectName("ProblemText")
        self.problem.setWordWrap(True)
        layout.addWidget(self.problem)
        buttons = ok_cancel_buttons(self)
        layout.addWidget(buttons)
        self.add_button.clicked.connect(self.add_url)
        self.url_edit.returnPressed.connect(self.add_url)
        self.remove_button.clicked.connect(self.remove_selected)

    def urls(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def add_url(self) -> bool:
        url = self.url_edit.text().strip()
        if not url:
            return False
        problem = check_urls([url]) or ("this output is already in the list" if url in self.urls() else "")
        self.problem.setText(problem)
        if problem:
            return False
        self.list.addItem(url)
        self.url_edit.clear()
        return True

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))


class LinePanel(QObject):
    """The window's outputs: a Line menu, a status-bar field, and the LineOutputs feeding them.
    `on_trigger(part_id)` inspects one frame named `part_id` (the controller's step)."""

    triggered = Signal(str)         # from an output's thread to the window's
    recipe_selected = Signal(str)   # likewise: a PLC or the plant selects a recipe

    def __init__(self, window, session, outbox_path: Path, message: Callable[[str, str], None],
                 on_changed: Callable[[], None] | None = None, on_trigger: Callable[[str], None] | None = None,
                 recipe_names: Callable[[], list[str]] | None = None,
                 apply_recipe: Callable[[str], None] | None = None):
        super().__init__(window)
        self.on_trigger = on_trigger
        self.recipe_names = recipe_names
        self.apply_recipe = apply_recipe
        self.recipe_selected.connect(lambda name: self.apply_recipe(name))
        self._busy = False
        self._busy_lock = threading.Lock()
        self.triggered.connect(self._take_trigger)
        self.window = window
        self.session = session
        self.outbox_path = Path(outbox_path)
        self.message = message
        self.on_changed = on_changed
        self.urls: list[str] = []
        self.outputs: LineOutputs | None = None
        self.menu = QMenu("&Line", window)
        self.act_outputs = self.menu.addAction("&Outputs…")
        self.act_outputs.triggered.connect(self.edit)
        self.act_triggers = self.menu.addAction("Take &triggers from the line")
        self.act_triggers.setCheckable(True)
        self.act_triggers.setToolTip("The PLC (Modbus, OPC UA) or an MQTT command inspects one frame per trigger")
        self.act_triggers.toggled.connect(lambda on: self._connect_triggers())
        bar = window.menuBar()
        training = next((a for a in bar.actions() if a.text().replace("&", "") == "Training"), None)
        bar.insertMenu(training, self.menu) if training is not None else bar.addMenu(self.menu)
        self.status = QLabel("")
        self.status.setObjectName("StatusField")
        self.status.hide()
        window.statusBar().addPermanentWidget(self.status)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh_status)
        self.timer.start(STATUS_REFRESH_MS)

    def edit(self) -> None:
        dialog = OutputsDialog(self.urls, self.window)
        if dialog.exec() != QDialog.DialogCode.Accepted or dialog.urls() == self.urls:
            return
        self.set_urls(dialog.urls())
        if self.on_changed is not None:
            self.on_changed()

    def set_urls(self, urls: list[str]) -> None:
        """Start the outputs for `urls` (stopping the previous ones; what they had queued stays in the outbox)."""
        urls = list(urls)
        if urls == self.urls and (self.outputs is not None or not urls):
            return
        self._stop()
        self.urls = urls
        if not urls:
            self.refresh_status()
            return
        try:
            self.outputs = LineOutputs(urls, self.outbox_path, station=socket.gethostname(),
                                       on_event=lambda level, text: self.message(text, level))
            self.outputs.start()
        except (ValueError, OutboxError) as e:
            self.outputs = None
            self.message(f"Line outputs not started: {e}", "error")
            return
        self.session.subscribe(self.outputs)
        self.session.subscribe(self)
        if self.recipe_names is not None and self.apply_recipe is not None:
            self.outputs.set_recipe_handler(self._select_recipe)
        self._connect_triggers()
        self.outputs.set_state("ready")
        self.message(f"Line outputs: {', '.join(self.outputs.names)}", "info")
        self.refresh_status()

    def refresh_status(self) -> None:
        text, tooltip, level = status_summary(self.outputs.status() if self.outputs is not None else [])
        self.status.setText(text)
        self.status.setToolTip(tooltip)
        self.status.setProperty("level", level)
        self.status.setVisible(bool(text))

    def _connect_triggers(self) -> None:
        if self.outputs is not None:
            self.outputs.set_trigger_handler(self._accept_trigger if self.act_triggers.isChecked() else None)

    def _accept_trigger(self, part_id: str, origin: str) -> bool:
        """An output's thread: one trigger at a time; the window steps in its own thread."""
        with self._busy_lock:
            if self._busy or self.on_trigger is None:
                return False
            self._busy = True
        if self.outputs is not None:
            self.outputs.set_state("busy")
        self.triggered.emit(part_id)
        return True

    def _select_recipe(self, name: str) -> str:
        """An output's thread: '' when the recipe exists (the window switches to it), else why not."""
        if name not in self.recipe_names():
            return f"no recipe named {name!r}"
        self.recipe_selected.emit(name)
        return ""

    def _take_trigger(self, part_id: str) -> None:
        self.on_trigger(part_id)

    def on_inspection(self, inspection) -> None:
        """The session's thread, after the outputs have queued the part: ready for the next trigger."""
        with self._busy_lock:
            was_busy, self._busy = self._busy, False
        if was_busy and self.outputs is not None:
            self.outputs.set_state("ready" if inspection.verdict != "error" else "error", inspection.error)

    def on_session_end(self, summary) -> None:
        pass

    def _stop(self) -> None:
        if self.outputs is not None:
            self.session.unsubscribe(self)
            self.session.unsubscribe(self.outputs)
            self.outputs.close()
            self.outputs = None

    def close(self) -> None:
        self.timer.stop()
        self._stop()
