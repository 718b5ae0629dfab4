"""The training wizard's last pages: VAE and classifier, output folder, and the summary with the
exact command lines. Widgets only display and emit."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QCheckBox, QComboBox, QLabel, QLineEdit, QPlainTextEdit, QRadioButton, QSpinBox,
                               QVBoxLayout, QWizard, QWizardPage)

from engine.runtime_choice import CANDIDATE_NAMES
from training.jobs import format_command, step_environment
from training.launch import GENERAL_VAE

from .wizard_pages import DETECTOR_LABELS, form_layout, path_row

__all__ = ["VaePage", "OutputPage", "SummaryPage"]


class VaePage(QWizardPage):
    """The VAE (the one shipped with the app, the general-purpose one, the shipped one fine-tuned on
    the data first, or a folder)
    and the category classifier."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTitle("Image encoder (VAE) and category classifier")
        self.setSubTitle("The detector works on VAE latents. The app ships two compact VAEs (~2.7 M parameters): "
                         "the compact one (trained on the demo parts, photos and drawn lines) and a "
                         "general-purpose one trained on photos and textures, so "
                         "only the detector needs training.")
        self.shipped = QRadioButton("Use the compact VAE shipped with the app (the default; nothing to train)")
        self.general = QRadioButton("Use the general-purpose VAE shipped with the app (trained on photos, "
                                    "wallpapers and textures; nothing to train)")
        self.train = QRadioButton("Fine-tune the shipped VAE on my good images first")
        self.use_folder = QRadioButton("Use a VAE folder I have (Stable-Diffusion VAE or a compact VAE trained before)")
        self.shipped.setChecked(True)
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
        form = form_layout()
        form.addRow(self.shipped)
        form.addRow(self.general)
        form.addRow(self.train)
        form.addRow("VAE epochs", self.vae_epochs)
        form.addRow(self.use_folder)
        form.addRow("VAE folder", path_row(self.vae_edit, "Choose a VAE folder", self))
        form.addRow(QLabel(""))
        form.addRow(self.classifier)
        form.addRow("Classifier epochs", self.classifier_epochs)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)
        for choice in (self.shipped, self.general, self.train, self.use_folder):
            choice.toggled.connect(self._update)
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

    def chosen_vae(self) -> str:
        """The VAE folder the plan names: '' for the default shipped VAE (or the one fine-tuned from it)."""
        if self.general.isChecked():
            return str(GENERAL_VAE)
        return self.vae_edit.text().strip() if self.use_folder.isChecked() else ""

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
        self.vae_epochs.setEnabled(self.train.isChecked())
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
        form = form_layout()
        form.addRow("Output folder", path_row(self.output_edit, "Choose the output folder", self))
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
        self.runtime_combo = QComboBox()
        self.runtime_combo.setObjectName("RuntimeAfterTraining")
        self.runtime_combo.addItem("Machine default: the fastest that keeps the verdicts, checked when first opened", "")
        for name in CANDIDATE_NAMES:
            self.runtime_combo.addItem(name, name)
        self.runtime_combo.setToolTip("How the trained model runs. The machine default is decided on each station "
                                      "the first time the model is opened; a named runtime is stored in the model "
                                      "and used everywhere (int8: OpenVINO, quantized on the model's own good images).")
        self.runtime_combo.currentIndexChanged.connect(lambda _: self.initializePage() if self.wizard() else None)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        form = form_layout()
        form.addRow("Runtime", self.runtime_combo)
        layout.addLayout(form)
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
