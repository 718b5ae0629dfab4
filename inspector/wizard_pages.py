"""The training wizard's first pages: the data (layout check, counts, thumbnails), what to train
(detector, recipe, size, epochs, batch, learning rate, mask ratio, image and crop size) and the
devices. Widgets only display and emit."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget, QWizardPage)

from training.jobs import DETECTORS, default_settings

from .dialogs import BackgroundTask

__all__ = ["DataPage", "ModelPage", "DevicesPage", "scan_dataset", "available_devices", "form_layout", "hint_label",
           "path_row"]

DATASET_KINDS = (("mvtec", "MVTec AD dataset root"), ("visa", "VisA dataset root"),
                 ("folder", "A folder of good images (custom product)"))
DETECTOR_LABELS = {"deco-diff": "DeCo-Diff — gated deviation diffusion (recommended)",
                   "diad": "DiAD — noise-prediction diffusion with DDIM reconstruction"}
THUMBNAILS = 8
THUMB_PX = 96


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


def form_layout() -> QFormLayout:
    """A form whose fields keep a readable width instead of spanning the whole page."""
    form = QFormLayout()
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
    return form


def hint_label(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("Hint")
    label.setWordWrap(True)
    return label


def path_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(lambda: browse_into(edit, title, parent))
    row.addWidget(button)
    return row


def browse_into(edit: QLineEdit, title: str, parent: QWidget) -> None:
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
        form.addRow("Data folder", path_row(self.data_edit, "Choose the data folder", self))
        self.test_label = QLabel("Test folder")
        form.addRow(self.test_label, path_row(self.test_edit, "Choose the test folder", self))
        self.layout_hint = hint_label("")
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
        layout.addWidget(hint_label("Some of the good training images:"))
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
    """Detector, category, model size and the optimisation settings, with CPU / CUDA defaults;
    `defaults_applied` carries the defaults on to the devices page."""

    defaults_applied = Signal(dict)

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
        form = form_layout()
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
        self.notes = hint_label("")
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
        self.defaults_applied.emit(d)

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
        form = form_layout()
        form.addRow(self.cpu)
        form.addRow(self.cuda)
        form.addRow("Processes per node", self.nproc)
        self.threads_label = QLabel("OpenMP threads per process")
        form.addRow(self.threads_label, self.threads)
        self.note = hint_label("")
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
