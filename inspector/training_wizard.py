"""The training wizard (menu Training): from a folder of good images to a model in use.

Pages: data (layout check, counts, thumbnails) -> what to train (detector, category, size, epochs,
batch, learning rate, mask ratio, image and crop size) -> devices -> VAE and classifier ->
output -> summary with the exact command lines (commit) -> run: the job queue and a monitor with
the live loss curve, speed, epoch, ETA and log; Stop / Resume; the evaluation metrics and the
suggested threshold; "Use this model" registers the model in the model picker and opens it.

Widgets only display and emit; `TrainingCenter` connects them to the `TrainingJobQueue`
(inspector/training_jobs.py, which owns the processes) and to the inspector controller.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QPlainTextEdit, QPushButton, QRadioButton, QSpinBox,
                               QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget, QWizard,
                               QWizardPage)

from .dialogs import BackgroundTask
from .training_jobs import (ACTIVE_STATES, DETECTORS, FAILED, FINISHED, QUEUED, STOPPED, TrainingJob,
                            TrainingJobQueue, TrainingPlan, build_steps, default_settings, format_command,
                            register_model, step_environment, suggested_threshold)

__all__ = ["TrainingWizard", "JobMonitor", "TrainingCenter", "scan_dataset", "available_devices"]

DATASET_KINDS = (("mvtec", "MVTec AD dataset root"), ("visa", "VisA dataset root"),
                 ("folder", "A folder of good images (custom product)"))
DETECTOR_LABELS = {"deco-diff": "DeCo-Diff — gated deviation diffusion (recommended)",
                   "diad": "DiAD — noise-prediction diffusion with DDIM reconstruction"}
THUMBNAILS = 8
THUMB_PX = 96
STATE_COLORS = {QUEUED: "#8b949e", "running": "#58a6ff", "stopping": "#f2a900", STOPPED: "#f2a900",
                FAILED: "#ff6b60", FINISHED: "#3fb950"}
METRIC_COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_aupro", "AUPRO"),
                  ("image_ap", "I-AP"), ("pixel_f1max", "P-F1"))


def scan_dataset(kind: str, root: str, test_dir: str = "") -> dict:
    """describe_dataset plus up to THUMBNAILS training images (QImage, scaled) spread over the
    categories; raises DatasetLayoutError (one line) when the folder is not a `kind` dataset.
    Runs in a background thread (QImage is safe there, QPixmap is not)."""
    from training.datasets import FOLDER_LAYOUT, MVTEC_LAYOUT, VISA_LAYOUT, DatasetLayoutError, build_dataset
    from training.datasets import describe_dataset

    if test_dir and Path(test_dir).resolve().is_relative_to(Path(root).resolve()):
        raise DatasetLayoutError(f"the test folder {test_dir} is inside the folder of good images {root}: its "
                                 "defective images would be trained on; keep the two folders apart")
    desc = describe_dataset(root, test_dir or None)
    if desc["layout"] != kind:
        expected = {"mvtec": MVTEC_LAYOUT, "visa": VISA_LAYOUT, "folder": FOLDER_LAYOUT}[kind]
        raise DatasetLayoutError(f"{root} looks like a {desc['layout']} dataset, not {kind} (expected {expected})")
    train = build_dataset(kind, root, "all", "train", None, test_dir=test_dir or None)
    by_cat: dict[str, list] = {}
    for s in train.samples:
        by_cat.setdefault(s.category, []).append(s.path)
    picks: list[tuple[str, str]] = []
    while len(picks) < THUMBNAILS and any(by_cat.values()):
        for cat, paths in by_cat.items():
            if paths and len(picks) < THUMBNAILS:
                picks.append((cat, str(paths.pop(0))))
    thumbs = []
    for cat, path in picks:
        img = QImage(path)
        if not img.isNull():
            thumbs.append((cat, path, img.scaled(THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.SmoothTransformation)))
    desc["thumbnails"] = thumbs
    return desc


def available_devices() -> dict:
    """{'cores': CPU cores, 'gpus': [CUDA device names]}."""
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA setup means: CPU only
        gpus = []
    return {"cores": os.cpu_count() or 1, "gpus": gpus}


def _form() -> QFormLayout:
    """A form whose fields keep a readable width instead of spanning the whole page."""
    form = QFormLayout()
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
    return form


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("Hint")
    label.setWordWrap(True)
    return label


def _path_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(lambda: _browse(edit, title, parent))
    row.addWidget(button)
    return row


def _browse(edit: QLineEdit, title: str, parent: QWidget) -> None:
    folder = QFileDialog.getExistingDirectory(parent, title, edit.text() or str(Path.home()))
    if folder:
        edit.setText(folder)


class DataPage(QWizardPage):
    """Dataset kind, folders, a background layout check with counts per category and thumbnails."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Training data")
        self.setSubTitle("Good images to learn from; optionally test images with defects (and masks) to measure "
                         "the model and suggest a threshold.")
        self.description: dict | None = None
        self.error = ""
        self._task: BackgroundTask | None = None
        self.kind_group = QButtonGroup(self)
        kinds = QHBoxLayout()
        self.kind_buttons = {}
        for i, (kind, label) in enumerate(DATASET_KINDS):
            b = QRadioButton(label)
            self.kind_group.addButton(b, i)
            self.kind_buttons[kind] = b
            kinds.addWidget(b)
        kinds.addStretch(1)
        self.kind_buttons["folder"].setChecked(True)
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("folder")
        self.test_edit = QLineEdit()
        self.test_edit.setPlaceholderText("optional: a folder with good/ and one folder per defect kind")
        form = QFormLayout()
        form.addRow("Data folder", _path_row(self.data_edit, "Choose the data folder", self))
        self.test_label = QLabel("Test folder")
        form.addRow(self.test_label, _path_row(self.test_edit, "Choose the test folder", self))
        self.layout_hint = _hint("")
        self.status = QLabel("Choose a folder.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["category", "train good", "test good", "test defect", "defect kinds",
                                              "masks"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMaximumHeight(260)
        self.thumbs = QHBoxLayout()
        self.thumbs.setSpacing(6)
        thumbs_box = QWidget()
        thumbs_box.setLayout(self.thumbs)
        thumbs_box.setMinimumHeight(THUMB_PX + 24)
        layout = QVBoxLayout(self)
        layout.addLayout(kinds)
        layout.addLayout(form)
        layout.addWidget(self.layout_hint)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(_hint("Some of the good training images:"))
        layout.addWidget(thumbs_box)
        layout.addStretch(1)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(400)
        self._debounce.timeout.connect(self.check)
        self.data_edit.textChanged.connect(self._schedule_check)
        self.test_edit.textChanged.connect(self._schedule_check)
        self.kind_group.idClicked.connect(lambda _: self._on_kind())
        self._on_kind()

    def kind(self) -> str:
        return DATASET_KINDS[max(0, self.kind_group.checkedId())][0]

    def set_kind(self, kind: str) -> None:
        self.kind_buttons[kind].setChecked(True)
        self._on_kind()

    def _on_kind(self) -> None:
        from training.datasets import FOLDER_LAYOUT, MVTEC_LAYOUT, VISA_LAYOUT

        kind = self.kind()
        custom = kind == "folder"
        self.test_edit.setEnabled(custom)
        self.test_label.setEnabled(custom)
        self.layout_hint.setText({"mvtec": MVTEC_LAYOUT, "visa": VISA_LAYOUT, "folder": FOLDER_LAYOUT}[kind])
        self._schedule_check()

    def _schedule_check(self) -> None:
        self.description = None
        self.error = ""
        self.completeChanged.emit()
        self._debounce.start()

    def check(self) -> None:
        """Validate the folders in the background; the table fills in when done."""
        root = self.data_edit.text().strip()
        if not root:
            self.status.setText("Choose a folder.")
            return
        self.status.setText(f"Checking {root}…")
        kind, test = self.kind(), self.test_edit.text().strip() if self.kind() == "folder" else ""
        task = BackgroundTask(lambda: scan_dataset(kind, root, test), self)
        self._task = task
        task.done.connect(lambda desc, t=task: self._on_checked(t, desc))
        task.failed.connect(lambda msg, t=task: self._on_failed(t, msg))
        task.start()

    def is_checking(self) -> bool:
        return self._debounce.isActive() or (self._task is not None and self._task.is_alive())

    def _on_checked(self, task, desc: dict) -> None:
        if task is not self._task:
            return
        self.description, self.error = desc, ""
        cats = desc["categories"]
        self.table.setRowCount(len(cats))
        for row, (name, c) in enumerate(cats.items()):
            kinds = ", ".join(f"{k} {n}" for k, n in c["defect_kinds"].items()) or "–"
            masks = f"{c['masks_found']}/{c['test_defect']}" if c["test_defect"] else "–"
            for col, value in enumerate([name, c["train_good"], c["test_good"], c["test_defect"], kinds, masks]):
                item = QTableWidgetItem(str(value))
                if col in (1, 2, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        train = sum(c["train_good"] for c in cats.values())
        test = sum(c["test_good"] + c["test_defect"] for c in cats.values())
        text = (f"<span style='color:#3fb950'>OK</span>: {desc['layout']} layout, {len(cats)} "
                f"categor{'y' if len(cats) == 1 else 'ies'}, {train} good training images, {test} test images.")
        if desc["warnings"]:
            text += "<br><span style='color:#f2a900'>" + "<br>".join(desc["warnings"]) + "</span>"
        self.status.setText(text)
        self._show_thumbnails(desc.get("thumbnails", []))
        self.completeChanged.emit()

    def _on_failed(self, task, message: str) -> None:
        if task is not self._task:
            return
        self.description, self.error = None, message
        self.table.setRowCount(0)
        self._show_thumbnails([])
        self.status.setText(f"<span style='color:#ff6b60'>{message}</span>")
        self.completeChanged.emit()

    def _show_thumbnails(self, thumbs) -> None:
        while self.thumbs.count():
            item = self.thumbs.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for cat, path, image in thumbs:
            label = QLabel()
            label.setPixmap(QPixmap.fromImage(image))
            label.setToolTip(f"{cat}: {path}")
            label.setFixedSize(THUMB_PX, THUMB_PX)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.thumbs.addWidget(label)
        self.thumbs.addStretch(1)

    def isComplete(self) -> bool:
        return self.description is not None

    def categories(self) -> list[str]:
        return list((self.description or {}).get("categories", {}))

    def has_test_images(self, category: str = "all") -> bool:
        cats = (self.description or {}).get("categories", {})
        chosen = cats.values() if category == "all" else [cats[category]] if category in cats else []
        return any(c["test_good"] + c["test_defect"] > 0 for c in chosen)


class ModelPage(QWizardPage):
    """Detector, category, model size and the optimisation settings, with CPU / CUDA defaults."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("What to train")
        self.setSubTitle("CPU defaults are filled in; on a GPU workstation press CUDA defaults (the next page "
                         "chooses the devices).")
        self.detector = QComboBox()
        for key, label in DETECTOR_LABELS.items():
            self.detector.addItem(label, key)
        self.category = QComboBox()
        self.recipe = QComboBox()
        self.recipe.addItem("Automatic: fit within a time budget (recommended)", "fit")
        self.recipe.addItem("Manual: the epochs and settings below", "manual")
        self.recipe.setToolTip("Automatic picks the settings for this machine, trains within the budget, keeps the "
                               "epoch that does best on held-out good images and calibrates the maps and the "
                               "threshold on them (python main.py fit)")
        self.time_budget = QSpinBox()
        self.time_budget.setRange(2, 7 * 24 * 60)
        self.time_budget.setValue(45)
        self.time_budget.setSuffix(" min")
        self.size = QComboBox()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100_000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1e-2)
        self.lr.setSingleStep(1e-5)
        self.mask_ratio = QDoubleSpinBox()
        self.mask_ratio.setRange(0.0, 1.0)
        self.mask_ratio.setSingleStep(0.05)
        self.image_size = QSpinBox()
        self.image_size.setRange(32, 2048)
        self.image_size.setSingleStep(8)
        self.center_size = QSpinBox()
        self.center_size.setRange(32, 2048)
        self.center_size.setSingleStep(32)
        self.latent_crop = QComboBox()
        for label, value in (("whole latents", 0), ("16 x 16 windows (about 4x faster on a CPU)", 16)):
            self.latent_crop.addItem(label, value)
        for w in (self.detector, self.category, self.recipe, self.size, self.latent_crop):
            w.setMinimumWidth(420)
        for w in (self.epochs, self.batch, self.lr, self.mask_ratio, self.image_size, self.center_size):
            w.setMinimumWidth(160)
        self.cpu_defaults = QPushButton("CPU defaults")
        self.cuda_defaults = QPushButton("CUDA defaults")
        if not available_devices()["gpus"]:
            self.cuda_defaults.setEnabled(False)
            self.cuda_defaults.setToolTip("No CUDA device found on this machine")
        form = _form()
        form.addRow("Detector", self.detector)
        form.addRow("Category", self.category)
        form.addRow("Recipe", self.recipe)
        form.addRow("Time budget", self.time_budget)
        form.addRow("Model size", self.size)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size (all processes)", self.batch)
        form.addRow("Learning rate", self.lr)
        self.mask_label = QLabel("Mask ratio")
        form.addRow(self.mask_label, self.mask_ratio)
        form.addRow("Image size (px, resize)", self.image_size)
        form.addRow("Crop size (px, model input)", self.center_size)
        form.addRow("Train on", self.latent_crop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cpu_defaults)
        buttons.addWidget(self.cuda_defaults)
        buttons.addStretch(1)
        self.notes = _hint("")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.notes)
        layout.addStretch(1)
        self.detector.currentIndexChanged.connect(self._on_detector)
        self.recipe.currentIndexChanged.connect(self._on_recipe)
        self.center_size.valueChanged.connect(self._on_crop)
        self.cpu_defaults.clicked.connect(lambda: self.apply_defaults(default_settings("cpu", self.detector_kind())))
        self.cuda_defaults.clicked.connect(lambda: self.apply_defaults(
            default_settings("cuda", self.detector_kind(), len(available_devices()["gpus"]))))
        self._on_detector()
        self.apply_defaults(default_settings("cpu", self.detector_kind()))

    def detector_kind(self) -> str:
        return self.detector.currentData()

    def recipe_kind(self) -> str:
        """'fit' (automatic) or 'manual'."""
        return self.recipe.currentData()

    def _on_recipe(self) -> None:
        """The automatic recipe chooses the optimisation settings itself: only the budget and sizes stay."""
        automatic = self.recipe_kind() == "fit"
        self.time_budget.setEnabled(automatic)
        for w in (self.size, self.epochs, self.batch, self.lr, self.mask_ratio, self.latent_crop):
            w.setEnabled(not automatic)
        if not automatic:
            self._on_crop()
            self.mask_ratio.setEnabled(self.detector_kind() == "deco-diff")

    def _on_detector(self) -> None:
        kind = self.detector_kind()
        current = self.size.currentText()
        self.size.clear()
        sizes = DETECTORS[kind][1]
        self.size.addItems(list(sizes))
        self.size.setCurrentText(current if current in sizes else DETECTORS[kind][2])
        deco = kind == "deco-diff"
        self.mask_ratio.setEnabled(deco)
        self.mask_label.setEnabled(deco)
        self.notes.setText(
            "DeCo-Diff: UNet_T is ours for live CPU inspection (6.3 M parameters); UNet_XS…XL are the reference "
            "sizes. The mask ratio is the share of latent patches kept clean at most." if deco else
            "DiAD: DiAD_T for the CPU, DiAD_S / DiAD_M on a GPU. Trained with training.train_diad (same events, "
            "checkpoints and resume as DeCo-Diff).")
        self._on_recipe()

    def _on_crop(self) -> None:
        """Latent windows only help when the latents (crop / 8) are larger than the window."""
        windows = self.center_size.value() // 8 > 16
        self.latent_crop.setEnabled(windows)
        if not windows:
            self.latent_crop.setCurrentIndex(0)

    def apply_defaults(self, d: dict) -> None:
        self.size.setCurrentText(d["model_size"])
        self.epochs.setValue(d["epochs"])
        self.batch.setValue(d["batch_size"])
        self.lr.setValue(d["lr"])
        self.mask_ratio.setValue(d["mask_ratio"])
        self.image_size.setValue(d["image_size"])
        self.center_size.setValue(d["center_size"])
        self.latent_crop.setCurrentIndex(max(0, self.latent_crop.findData(d["latent_crop"])))
        self._on_crop()
        wizard = self.wizard()
        if isinstance(wizard, TrainingWizard):
            wizard.devices_page.apply_defaults(d)

    def initializePage(self) -> None:
        wizard = self.wizard()
        cats = wizard.data_page.categories()
        previous = self.category.currentData()
        self.category.clear()
        self.category.addItem(f"All categories ({len(cats)})", "all")
        if len(cats) > 1:
            for c in cats:
                self.category.addItem(c, c)
        index = self.category.findData(previous)
        self.category.setCurrentIndex(max(0, index))


class DevicesPage(QWizardPage):
    """CPU or CUDA, processes per node, OpenMP threads per process."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Devices")
        self.setSubTitle("Training runs under torchrun: gloo processes on the CPU, one NCCL process per GPU.")
        self.found = available_devices()
        self.cpu = QRadioButton(f"CPU ({self.found['cores']} cores)")
        gpus = self.found["gpus"]
        self.cuda = QRadioButton(f"CUDA: {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"
                                 + (f" ({', '.join(gpus)})" if gpus else " found"))
        self.cuda.setEnabled(bool(gpus))
        self.cpu.setChecked(True)
        self.nproc = QSpinBox()
        self.nproc.setRange(1, max(1, self.found["cores"], len(gpus)))
        self.threads = QSpinBox()
        self.threads.setRange(1, max(1, self.found["cores"]))
        self.nproc.setMinimumWidth(120)
        self.threads.setMinimumWidth(120)
        form = _form()
        form.addRow(self.cpu)
        form.addRow(self.cuda)
        form.addRow("Processes per node", self.nproc)
        self.threads_label = QLabel("OpenMP threads per process")
        form.addRow(self.threads_label, self.threads)
        self.note = _hint("")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addStretch(1)
        self.cpu.toggled.connect(self._on_device)
        self.nproc.valueChanged.connect(self._on_device)
        self.threads.valueChanged.connect(self._on_device)
        self._on_device()

    def device(self) -> str:
        return "cuda" if self.cuda.isChecked() else "cpu"

    def apply_defaults(self, d: dict) -> None:
        (self.cuda if d["device"] == "cuda" and self.cuda.isEnabled() else self.cpu).setChecked(True)
        self.nproc.setValue(d["nproc"])
        self.threads.setValue(d["threads_per_process"])

    def _on_device(self) -> None:
        cpu = self.device() == "cpu"
        self.threads.setEnabled(cpu)
        self.threads_label.setEnabled(cpu)
        cores = self.found["cores"]
        if cpu:
            used = self.nproc.value() * self.threads.value()
            self.note.setText(f"{self.nproc.value()} process(es) x {self.threads.value()} thread(s) = {used} of "
                              f"{cores} cores." + (" More threads than cores slows every step down a lot."
                                                   if used > cores else ""))
        else:
            self.note.setText(f"One process per GPU is usual ({len(self.found['gpus'])} found).")

    def validatePage(self) -> bool:
        batch = self.wizard().model_page.batch.value()
        if batch % self.nproc.value():
            self.note.setText(f"<span style='color:#ff6b60'>The batch size {batch} must be divisible by "
                              f"{self.nproc.value()} processes: change one of them.</span>")
            return False
        return True


class VaePage(QWizardPage):
    """The VAE (an existing folder, or train the compact one first) and the category classifier."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Image encoder (VAE) and category classifier")
        self.setSubTitle("The detector works on VAE latents. A Stable-Diffusion VAE folder gives the best maps; "
                         "without one, the wizard trains the compact VAE (~2.7 M parameters) first.")
        self.use_folder = QRadioButton("Use a VAE folder I have (Stable-Diffusion VAE or a compact VAE trained before)")
        self.train = QRadioButton("Train the compact VAE first")
        self.train.setChecked(True)
        self.vae_edit = QLineEdit()
        self.vae_edit.setPlaceholderText("folder with config.json and diffusion_pytorch_model.safetensors")
        self.vae_epochs = QSpinBox()
        self.vae_epochs.setRange(1, 10_000)
        self.vae_epochs.setValue(60)
        self.classifier = QCheckBox("Train the category classifier (the inspector then recognises the product itself)")
        self.classifier_epochs = QSpinBox()
        self.classifier_epochs.setRange(1, 10_000)
        self.classifier_epochs.setValue(30)
        self.vae_edit.setMinimumWidth(620)
        self.vae_epochs.setMinimumWidth(120)
        self.classifier_epochs.setMinimumWidth(120)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = _form()
        form.addRow(self.use_folder)
        form.addRow("VAE folder", _path_row(self.vae_edit, "Choose a VAE folder", self))
        form.addRow(self.train)
        form.addRow("VAE epochs", self.vae_epochs)
        form.addRow(QLabel(""))
        form.addRow(self.classifier)
        form.addRow("Classifier epochs", self.classifier_epochs)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.use_folder.toggled.connect(self._update)
        self.vae_edit.textChanged.connect(self._update)
        self.classifier.toggled.connect(self._update)

    def initializePage(self) -> None:
        wizard = self.wizard()
        several = len(wizard.data_page.categories()) > 1 and wizard.model_page.category.currentData() == "all"
        self.classifier.setEnabled(several)
        if not several:
            self.classifier.setChecked(False)
        elif not self.property("classifier_touched"):
            self.classifier.setChecked(True)
        self._update()

    def vae_problem(self) -> str:
        if not self.use_folder.isChecked():
            return ""
        text = self.vae_edit.text().strip()
        if not text:
            return "Choose the VAE folder."
        folder = Path(text)
        if not folder.is_dir():
            return f"{folder} does not exist."
        if not ((folder / "config.json").is_file() or (folder / "vae" / "config.json").is_file()):
            return f"{folder} has no config.json (nor vae/config.json): not a VAE folder."
        return ""

    def _update(self) -> None:
        folder = self.use_folder.isChecked()
        self.vae_edit.setEnabled(folder)
        self.vae_epochs.setEnabled(not folder)
        self.classifier_epochs.setEnabled(self.classifier.isChecked() and self.classifier.isEnabled())
        problem = self.vae_problem()
        self.status.setText(f"<span style='color:#ff6b60'>{problem}</span>" if problem else "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return not self.vae_problem()


class OutputPage(QWizardPage):
    """Where the job folder goes, its name (also the name in the model picker), checkpoints, evaluation."""

    def __init__(self, default_root: Path, parent=None):
        super().__init__(parent)
        self.setTitle("Output")
        self.setSubTitle("Everything of this training (checkpoints, model, logs, events, evaluation) goes into "
                         "<output folder>/<name>.")
        self.output_edit = QLineEdit(str(default_root))
        self.name_edit = QLineEdit()
        self.ckpt_every = QSpinBox()
        self.ckpt_every.setRange(1, 1000)
        self.ckpt_every.setValue(10)
        self.evaluate = QCheckBox("Evaluate on the test images when training ends (metrics and a suggested threshold)")
        self.evaluate.setChecked(True)
        self.output_edit.setMinimumWidth(620)
        self.name_edit.setMinimumWidth(420)
        self.ckpt_every.setMinimumWidth(120)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = _form()
        form.addRow("Output folder", _path_row(self.output_edit, "Choose the output folder", self))
        form.addRow("Model name", self.name_edit)
        form.addRow("Checkpoint every (epochs)", self.ckpt_every)
        form.addRow(self.evaluate)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.output_edit.textChanged.connect(self._update)
        self.name_edit.textChanged.connect(self._update)

    def initializePage(self) -> None:
        wizard = self.wizard()
        if not self.name_edit.text().strip():
            category = wizard.model_page.category.currentData() or "all"
            data = Path(wizard.data_page.data_edit.text().strip()).name or "data"
            label = data if category == "all" else category
            self.name_edit.setText(f"{label}-{wizard.model_page.size.currentText()}-{time.strftime('%Y%m%d-%H%M')}")
        has_test = wizard.data_page.has_test_images(wizard.model_page.category.currentData() or "all")
        self.evaluate.setEnabled(has_test)
        if not has_test:
            self.evaluate.setChecked(False)
        self.evaluate.setToolTip("" if has_test else "The data has no test images")
        self._update()

    def problem(self) -> str:
        root, name = self.output_edit.text().strip(), self.name_edit.text().strip()
        if not root:
            return "Choose an output folder."
        if not name or any(c in name for c in '/\\:*?"<>|'):
            return "The model name must be a plain folder name."
        job = Path(root) / name
        if job.exists() and any(job.iterdir()):
            return f"{job} already exists and is not empty: choose another name (Resume a stopped job from its list)."
        return ""

    def _update(self) -> None:
        problem = self.problem()
        self.status.setText(f"<span style='color:#ff6b60'>{problem}</span>" if problem else "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return not self.problem()


class SummaryPage(QWizardPage):
    """The plan and the exact command lines; committing queues the job."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Summary")
        self.setSubTitle("These commands run one after the other (you can also copy them into a terminal). "
                         "Start queues the job; it runs when the jobs before it are done.")
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Start training")
        self.text = QPlainTextEdit()
        self.text.setObjectName("CommandLines")
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        mono.setPointSize(9)
        self.text.setFont(mono)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.status)

    def initializePage(self) -> None:
        wizard = self.wizard()
        plan, steps = wizard.plan(), wizard.steps()
        env = " ".join(f"{k}={v}" for k, v in step_environment(plan).items() if k == "OMP_NUM_THREADS")
        what = (f"automatic recipe within {plan.time_budget_min} min" if plan.recipe == "fit" else
                f"{plan.model_size}, {plan.epochs} epochs, batch {plan.batch_size}, lr {plan.lr:g}")
        lines = [f"# {plan.name}: {DETECTOR_LABELS[plan.detector].split(' — ')[0]} {what}, {plan.nproc} process(es) "
                 f"on {plan.device}", f"# job folder: {plan.job_dir}", ""]
        for i, s in enumerate(steps, 1):
            lines += [f"# {i}. {s.title}", f"{env} {format_command(s.argv)}", ""]
        self.text.setPlainText("\n".join(lines))
        problems = plan.problems()
        self.status.setText("<span style='color:#ff6b60'>" + "<br>".join(problems) + "</span>" if problems else "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return not self.wizard().plan().problems()

    def validatePage(self) -> bool:
        self.wizard().submit()
        return True


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
            grid.addWidget(_hint(label), 0, i)
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
        self.threshold.setValue(0.3)
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
        self.metrics_note = _hint("Metrics appear here when the evaluation on the test images has run.")
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
                self.threshold.setValue(job.threshold if job.threshold is not None else _model_threshold(job))
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


def _model_threshold(job: TrainingJob) -> float:
    """The threshold stored in the job's model folder (the trainer's default), else 0.3."""
    try:
        from engine.checkpoint import read_model_json

        return float(read_model_json(job.plan.model_dir).get("settings", {}).get("threshold", 0.3))
    except Exception:  # noqa: BLE001 - no model yet
        return 0.3


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


class TrainingWizard(QWizard):
    """Data -> model -> devices -> VAE/classifier -> output -> summary (commit) -> run."""

    DATA, MODEL, DEVICES, VAE, OUTPUT, SUMMARY, RUN = range(7)
    submitted = Signal(object, object)  # TrainingPlan, [TrainingStep]

    def __init__(self, default_output: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Training wizard")
        self.setObjectName("TrainingWizard")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Close")
        self.resize(1180, 800)
        self.data_page = DataPage()
        self.devices_page = DevicesPage()
        self.model_page = ModelPage()
        self.vae_page = VaePage()
        self.output_page = OutputPage(default_output)
        self.summary_page = SummaryPage()
        self.run_page = RunPage()
        for pid, page in ((self.DATA, self.data_page), (self.MODEL, self.model_page),
                          (self.DEVICES, self.devices_page), (self.VAE, self.vae_page),
                          (self.OUTPUT, self.output_page), (self.SUMMARY, self.summary_page),
                          (self.RUN, self.run_page)):
            self.setPage(pid, page)
        self.model_page.apply_defaults(default_settings("cpu", "deco-diff"))
        self.vae_page.classifier.clicked.connect(lambda: self.vae_page.setProperty("classifier_touched", True))
        self.run_page.new_training_requested.connect(self.new_training)

    def show_jobs(self) -> None:
        """Open on the job list (used when jobs exist)."""
        self.setStartId(self.RUN)
        self.restart()

    def new_training(self) -> None:
        self.setStartId(self.DATA)
        self.output_page.name_edit.clear()
        self.restart()

    def plan(self) -> TrainingPlan:
        d, m, dev, v, o = self.data_page, self.model_page, self.devices_page, self.vae_page, self.output_page
        kind = d.kind()
        category = m.category.currentData() or "all"
        center = m.center_size.value()
        crop = m.latent_crop.currentData() or 0
        return TrainingPlan(
            name=o.name_edit.text().strip(), dataset=kind, data_dir=d.data_edit.text().strip(),
            test_dir=d.test_edit.text().strip() if kind == "folder" else "", category=category,
            detector=m.detector_kind(), model_size=m.size.currentText(), epochs=m.epochs.value(),
            batch_size=m.batch.value(), lr=m.lr.value(), mask_ratio=m.mask_ratio.value(),
            image_size=m.image_size.value(), center_size=center, latent_crop=crop if crop < center // 8 else 0,
            device=dev.device(), nproc=dev.nproc.value(), threads_per_process=dev.threads.value(),
            vae=v.vae_edit.text().strip() if v.use_folder.isChecked() else "", train_vae=v.train.isChecked(),
            vae_epochs=v.vae_epochs.value(), train_classifier=v.classifier.isChecked() and v.classifier.isEnabled(),
            classifier_epochs=v.classifier_epochs.value(), output_dir=o.output_edit.text().strip(),
            ckpt_every=o.ckpt_every.value(), evaluate=o.evaluate.isChecked() and o.evaluate.isEnabled(),
            recipe=m.recipe_kind(), time_budget_min=m.time_budget.value())

    def steps(self):
        plan = self.plan()
        return build_steps(plan, classes=len(self.data_page.categories()),
                           has_test_images=self.data_page.has_test_images(plan.category))

    def submit(self) -> None:
        self.submitted.emit(self.plan(), self.steps())


class TrainingCenter(QObject):
    """Owns the job queue and the wizard for an InspectorController; registers trained models
    in the model picker ("Use this model") and stops training gracefully when the app closes."""

    model_registered = Signal(str)

    def __init__(self, controller):
        super().__init__(controller)
        self.controller = controller
        self.models_root = Path(controller.data_dir) / "models"
        self._tasks: set[BackgroundTask] = set()
        self.queue = TrainingJobQueue(Path(controller.data_dir) / "training" / "jobs.json", parent=self)
        if self.queue.load_problem:
            controller.message(self.queue.load_problem, "warning")
        self.wizard = TrainingWizard(Path(controller.data_dir) / "training" / "runs", controller.window)
        self.wizard.run_page.attach(self.queue)
        self.wizard.submitted.connect(self.submit)
        monitor = self.wizard.run_page.monitor
        monitor.stop_requested.connect(self.queue.stop)
        monitor.resume_requested.connect(self.queue.resume)
        monitor.remove_requested.connect(self.queue.remove)
        monitor.use_requested.connect(self.use_model)
        self.queue.job_changed.connect(self._on_job_changed)

    def show_wizard(self) -> None:
        if self.queue.jobs and not self.wizard.isVisible():
            self.wizard.show_jobs()
        self.wizard.show()
        self.wizard.raise_()
        self.wizard.activateWindow()

    def submit(self, plan: TrainingPlan, steps) -> TrainingJob:
        job = self.queue.submit(plan, steps)
        self.controller.message(f"Training job {plan.name} queued ({len(steps)} steps, folder {plan.job_dir})")
        return job

    def _on_job_changed(self, job_id: str) -> None:
        job = self.queue.job(job_id)
        if job is None:
            return
        if job.state == FAILED:
            self.controller.message(f"Training job {job.plan.name}: {job.message.splitlines()[0]}", "error")
        elif job.state == FINISHED and not job.registered:
            self.controller.message(f"Training job {job.plan.name} finished: {job.message}", "ok")

    def use_model(self, job_id: str, threshold: float) -> None:
        """Copy the job's model into the model picker with `threshold` (in the background: a large
        model takes a while), then open it."""
        job = self.queue.job(job_id)
        if job is None or not job.model_ready:
            return
        name = job.plan.name
        self.controller.message(f"Registering the model of {name}…")
        task = BackgroundTask(lambda: register_model(job.plan.model_dir, self.models_root, name, threshold), self)
        self._tasks.add(task)
        task.done.connect(lambda path, t=task: self._registered(t, job_id, path, threshold))
        task.failed.connect(lambda msg, t=task: self._register_failed(t, name, msg))
        task.start()

    def _registered(self, task, job_id: str, path: Path, threshold: float) -> None:
        self._tasks.discard(task)
        self.queue.set_registered(job_id, path, threshold)
        self.controller._show_models()
        self.controller.open_model(str(path))
        self.controller.message(f"Model {path.name} registered (threshold {threshold:.4g}) and opening", "ok")
        self.model_registered.emit(str(path))

    def _register_failed(self, task, name: str, message: str) -> None:
        self._tasks.discard(task)
        self.controller.message(f"Cannot register the model of {name}: {message}", "error")

    def shutdown(self) -> None:
        if self.queue.busy():
            self.controller.message("Stopping the running training job (a checkpoint is written)…", "warning")
        self.queue.shutdown()
        self.wizard.close()

