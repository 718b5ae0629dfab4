"""The training wizard's run page: the job list and a monitor of one job (live loss curve, speed,
epoch, ETA, log, evaluation metrics and suggested threshold; Stop / Resume / Use this model).
Widgets only display and emit; `TrainingCenter` connects them to the queue."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QListWidget, QListWidgetItem, QPlainTextEdit, QPushButton, QSplitter, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget, QWizardPage)
import pyqtgraph as pg

from engine.defaults import DEFAULT_THRESHOLD
from training.jobs import (ACTIVE_STATES, FAILED, FINISHED, QUEUED, STOPPED, TrainingJob, format_command,
                           model_threshold, suggested_threshold)

from .training_jobs import TrainingJobQueue
from .wizard_pages import hint_label

__all__ = ["JobMonitor", "RunPage"]

STATE_COLORS = {QUEUED: "#8b949e", "running": "#58a6ff", "stopping": "#f2a900", STOPPED: "#f2a900",
                FAILED: "#ff6b60", FINISHED: "#3fb950"}
METRIC_COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_aupro", "AUPRO"),
                  ("image_ap", "I-AP"), ("pixel_f1max", "P-F1"))


class JobMonitor(QWidget):
    """One job: state, step, epoch, speed, ETA, the loss curve, the log, the command lines, the
    settings and, when evaluated, the metrics with a threshold to use. Emits what the buttons ask."""

    stop_requested = Signal(str)
    resume_requested = Signal(str)
    use_requested = Signal(str, float)
    remove_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.job: TrainingJob | None = None
        self._shown_threshold: float | None = None
        self.title = QLabel("No job")
        self.title.setObjectName("JobTitle")
        font = self.title.font()
        font.setPointSize(font.pointSize() + 3)
        font.setBold(True)
        self.title.setFont(font)
        self.state = QLabel("")
        self.stats = {}
        grid = QGridLayout()
        for i, (key, label) in enumerate((("step", "Step"), ("epoch", "Epoch"), ("speed", "Images/s"),
                                          ("eta", "Time left"), ("loss", "Loss"), ("checkpoint", "Checkpoint"))):
            grid.addWidget(hint_label(label), 0, i)
            value = QLabel("–")
            value.setObjectName("JobStat")
            grid.addWidget(value, 1, i)
            self.stats[key] = value
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("LossPlot")
        self.plot.setBackground("#161b22")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("left", "loss")
        self.plot.setLabel("bottom", "epoch")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(180)
        self.plot.setDownsampling(auto=True, mode="mean")
        self.plot.setClipToView(True)
        self.plot.addLegend(offset=(-10, 10))
        self.loss_line = self.plot.plot([], [], pen=pg.mkPen("#58a6ff", width=1.5), name="loss (steps)")
        self.epoch_dots = self.plot.plot([], [], pen=None, symbol="o", symbolSize=6, symbolBrush="#f2a900",
                                         symbolPen=None, name="epoch mean")
        self.validation_line = self.plot.plot([], [], pen=pg.mkPen("#3fb950", width=1.5), symbol="s", symbolSize=5,
                                              symbolBrush="#3fb950", symbolPen=None, name="held-out good images")
        self.best_marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#3fb950", style=Qt.PenStyle.DashLine))
        self.best_marker.hide()
        self.plot.addItem(self.best_marker)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop gracefully: the trainer writes a checkpoint first")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue from the last checkpoint")
        self.use_button = QPushButton("Use this model")
        self.use_button.setObjectName("UseModel")
        self.remove_button = QPushButton("Remove from list")
        self.threshold = QDoubleSpinBox()
        self.threshold.setDecimals(4)
        self.threshold.setRange(0.0, 100.0)
        self.threshold.setSingleStep(0.01)
        self.threshold.setValue(DEFAULT_THRESHOLD)
        buttons = QHBoxLayout()
        for b in (self.stop_button, self.resume_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(QLabel("Threshold"))
        buttons.addWidget(self.threshold)
        buttons.addWidget(self.use_button)
        self.log = QPlainTextEdit()
        self.log.setObjectName("JobLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.commands = QPlainTextEdit()
        self.commands.setReadOnly(True)
        self.settings = QTableWidget(0, 2)
        self.settings.setHorizontalHeaderLabels(["setting", "value"])
        self.settings.verticalHeader().hide()
        self.settings.horizontalHeader().setStretchLastSection(True)
        self.settings.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics = QTableWidget(0, len(METRIC_COLUMNS) + 3)
        self.metrics.setHorizontalHeaderLabels(["category", *[t for _, t in METRIC_COLUMNS], "good", "defect"])
        self.metrics.verticalHeader().hide()
        self.metrics.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.metrics_note = hint_label("Metrics appear here when the evaluation on the test images has run.")
        metrics_box = QWidget()
        mlay = QVBoxLayout(metrics_box)
        mlay.addWidget(self.metrics, 1)
        mlay.addWidget(self.metrics_note)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.log, "Log")
        self.tabs.addTab(metrics_box, "Evaluation")
        self.tabs.addTab(self.settings, "Settings")
        self.tabs.addTab(self.commands, "Command lines")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.tabs)
        split.setSizes([260, 240])
        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.state)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addLayout(grid)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        layout.addWidget(split, 1)
        self.stop_button.clicked.connect(lambda: self.job and self.stop_requested.emit(self.job.id))
        self.resume_button.clicked.connect(lambda: self.job and self.resume_requested.emit(self.job.id))
        self.remove_button.clicked.connect(lambda: self.job and self.remove_requested.emit(self.job.id))
        self.use_button.clicked.connect(lambda: self.job and self.use_requested.emit(self.job.id,
                                                                                     self.threshold.value()))
        self.show_job(None)

    def show_job(self, job: TrainingJob | None) -> None:
        changed = job is not self.job
        self.job = job
        if changed:
            self.log.setPlainText("\n".join(job.log_tail) if job else "")
            self.log.moveCursor(self.log.textCursor().MoveOperation.End)
            self._fill_static()
            self._shown_threshold = None
            if job is not None:
                stored = job.threshold if job.threshold is not None else model_threshold(job.plan.model_dir)
                self.threshold.setValue(stored)
        self.refresh()

    def _fill_static(self) -> None:
        job = self.job
        self.commands.setPlainText("\n\n".join(f"# {i}. {s.title}\n{format_command(s.argv)}"
                                               for i, s in enumerate(job.steps, 1)) if job else "")
        rows = list(job.plan.to_dict().items()) if job else []
        self.settings.setRowCount(len(rows))
        for r, (k, v) in enumerate(rows):
            self.settings.setItem(r, 0, QTableWidgetItem(k))
            self.settings.setItem(r, 1, QTableWidgetItem(str(v)))

    def append_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def refresh(self) -> None:
        job = self.job
        for b in (self.stop_button, self.resume_button, self.remove_button, self.use_button, self.threshold):
            b.setEnabled(False)
        if job is None:
            self.title.setText("No job yet")
            self.state.setText("")
            self.message.setText("Queue a training with New training…")
            for v in self.stats.values():
                v.setText("–")
            self.loss_line.setData([], [])
            self.epoch_dots.setData([], [])
            self.validation_line.setData([], [])
            self.best_marker.hide()
            return
        self.title.setText(job.plan.name)
        self.state.setText(f"<b style='color:{STATE_COLORS.get(job.state, '#c9d1d9')}'>{job.state.upper()}</b>")
        step = job.current or job.steps[-1]
        # the curve follows the running step; after training, the detector's curve stays on show
        shown = job.step_by_kind("detector") if step.kind == "evaluate" or job.state == FINISHED else step
        p = job.progress_of(shown.kind)
        index = job.steps.index(step) + 1
        self.stats["step"].setText(f"all {len(job.steps)} done" if job.state == FINISHED
                                   else f"{step.title} ({index}/{len(job.steps)})")
        self.stats["epoch"].setText(f"{p.epoch}/{p.epochs}" if p.epochs else "–")
        self.stats["speed"].setText(f"{p.images_per_s:.1f}" if p.images_per_s else "–")
        self.stats["eta"].setText(_duration(p.eta_s) if p.eta_s is not None and job.state == "running" else "–")
        self.stats["loss"].setText(f"{p.curve[-1][1]:.4f}" if p.curve else "–")
        self.stats["checkpoint"].setText(f"epoch {p.checkpoint_epoch}" if p.last_checkpoint else "–")
        self.plot.setTitle(f"{shown.title} loss", color="#c9d1d9", size="10pt")
        self.loss_line.setData([x for x, _ in p.curve], [y for _, y in p.curve])
        self.epoch_dots.setData([x for x, _ in p.epoch_curve], [y for _, y in p.epoch_curve])
        self.validation_line.setData([x for x, _ in p.validation_curve], [y for _, y in p.validation_curve])
        self.best_marker.setVisible(bool(p.best_epoch))
        self.best_marker.setValue(p.best_epoch)
        colour = "#ff6b60" if job.state == FAILED else "#c9d1d9"
        warnings = [w for kind in ("detector", "evaluate") if job.step_by_kind(kind) is not None
                    for w in job.progress_of(kind).warnings]
        text = f"<span style='color:{colour}'>{_html(job.message)}</span>"
        if p.best_epoch:
            text += f"<br>Kept epoch {p.best_epoch}: the lowest loss on held-out good images."
        if warnings:
            text += "".join(f"<br><span style='color:#f2a900'>Warning: {_html(w)}</span>" for w in warnings)
        self.message.setText(text)
        active = job.state in ACTIVE_STATES
        self.stop_button.setEnabled(job.state in ("running", QUEUED))
        self.resume_button.setEnabled(job.state in (STOPPED, FAILED))
        self.remove_button.setEnabled(not active)
        ready = job.model_ready and not active
        self.use_button.setEnabled(ready)
        self.threshold.setEnabled(ready)
        self.use_button.setText("Use this model again" if job.registered else "Use this model")
        if job.threshold is not None and job.threshold != self._shown_threshold:
            self._shown_threshold = job.threshold  # the evaluation's suggestion; the operator may change it
            self.threshold.setValue(job.threshold)
        self._show_metrics(job.metrics)

    def _show_metrics(self, metrics: dict | None) -> None:
        if not metrics:
            self.metrics.setRowCount(0)
            return
        cats = list(metrics.get("categories", {}).items()) + [("mean", metrics.get("mean", {}))]
        self.metrics.setRowCount(len(cats))
        for r, (name, m) in enumerate(cats):
            values = [name] + [_fmt(m.get(k)) for k, _ in METRIC_COLUMNS] + [str(m.get("n_good", "")),
                                                                               str(m.get("n_defect", ""))]
            for c, v in enumerate(values):
                self.metrics.setItem(r, c, QTableWidgetItem(v))
        s = metrics.get("suggested_threshold", {})
        thr = suggested_threshold(metrics)
        self.metrics_note.setText(
            f"Suggested threshold {_fmt(thr)} (F1-optimal {_fmt(s.get('f1_optimal'))}, 99% of good images below "
            f"{_fmt(s.get('good_quantile'))}); {metrics.get('ms_per_image', 0):.0f} ms per image on "
            f"{(metrics.get('model') or {}).get('device', '?')}.")


def _fmt(value) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "–"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


class RunPage(QWizardPage):
    """The job queue (every job, newest last) and the monitor of the selected one."""

    new_training_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Training jobs")
        self.setSubTitle("Jobs run one after the other in the background; closing this window does not stop them. "
                         "Quitting the app stops the running one with a checkpoint; Resume continues it.")
        self.jobs = QListWidget()
        self.jobs.setObjectName("JobList")
        self.jobs.setMinimumWidth(220)
        self.new_button = QPushButton("New training…")
        left = QVBoxLayout()
        left.addWidget(self.jobs, 1)
        left.addWidget(self.new_button)
        left_box = QWidget()
        left_box.setLayout(left)
        self.monitor = JobMonitor()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left_box)
        split.addWidget(self.monitor)
        split.setSizes([240, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        self.new_button.clicked.connect(self.new_training_requested)
        self.jobs.currentItemChanged.connect(lambda *_: self.selection_changed())
        self.queue: TrainingJobQueue | None = None

    def attach(self, queue: TrainingJobQueue) -> None:
        self.queue = queue
        queue.job_added.connect(self._on_added)
        queue.job_changed.connect(self._on_changed)
        queue.job_removed.connect(self._on_removed)
        queue.job_progress.connect(self._on_progress)
        queue.job_log.connect(self._on_log)
        for job in queue.jobs:
            self._add_item(job)
        if self.jobs.count():
            self.jobs.setCurrentRow(self.jobs.count() - 1)

    def _item(self, job_id: str) -> QListWidgetItem | None:
        for i in range(self.jobs.count()):
            if self.jobs.item(i).data(Qt.ItemDataRole.UserRole) == job_id:
                return self.jobs.item(i)
        return None

    def _add_item(self, job: TrainingJob) -> None:
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, job.id)
        self.jobs.addItem(item)
        self._label(item, job)

    def _label(self, item: QListWidgetItem, job: TrainingJob) -> None:
        item.setText(f"{job.plan.name}\n{job.state}"
                     + (f" · {job.current.title.lower()}" if job.current and job.state != FINISHED else "")
                     + (" · in use" if job.registered else ""))
        item.setForeground(pg.mkColor(STATE_COLORS.get(job.state, "#c9d1d9")))

    def selected_job(self) -> TrainingJob | None:
        item = self.jobs.currentItem()
        return self.queue.job(item.data(Qt.ItemDataRole.UserRole)) if item and self.queue else None

    def select(self, job_id: str) -> None:
        item = self._item(job_id)
        if item is not None:
            self.jobs.setCurrentItem(item)

    def selection_changed(self) -> None:
        self.monitor.show_job(self.selected_job())

    def _on_added(self, job_id: str) -> None:
        self._add_item(self.queue.job(job_id))
        self.select(job_id)

    def _on_changed(self, job_id: str) -> None:
        item, job = self._item(job_id), self.queue.job(job_id)
        if item is not None and job is not None:
            self._label(item, job)
        if self.monitor.job is job:
            self.monitor.refresh()

    def _on_removed(self, job_id: str) -> None:
        item = self._item(job_id)
        if item is not None:
            self.jobs.takeItem(self.jobs.row(item))
        self.selection_changed()

    def _on_progress(self, job_id: str) -> None:
        if self.monitor.job is not None and self.monitor.job.id == job_id:
            self.monitor.refresh()

    def _on_log(self, job_id: str, line: str) -> None:
        if self.monitor.job is not None and self.monitor.job.id == job_id:
            self.monitor.append_log(line)

    def isComplete(self) -> bool:
        return True
