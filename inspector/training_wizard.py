"""The training wizard (menu Training): from a folder of good images to a model in use.

Pages: data (layout check, counts, thumbnails) -> what to train (detector, category, size, epochs,
batch, learning rate, mask ratio, image and crop size) -> devices -> VAE and classifier ->
output -> summary with the exact command lines (commit) -> run: the job queue and a monitor with
the live loss curve, speed, epoch, ETA and log; Stop / Resume; the evaluation metrics and the
suggested threshold; "Use this model" registers the model in the model picker and opens it.

Widgets only display and emit; `TrainingCenter` connects them to the `TrainingJobQueue`
(inspector/training_jobs.py, which owns the processes; plans, steps and the job store
are training.jobs) and to the inspector controller.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWizard

from training.jobs import (FAILED, FINISHED, TrainingJob, TrainingPlan, build_steps, default_settings,
                           register_model)

from .dialogs import BackgroundTask
from .job_monitor import RunPage
from .training_jobs import TrainingJobQueue
from .wizard_finish_pages import OutputPage, SummaryPage, VaePage
from .wizard_pages import DataPage, DevicesPage, ModelPage

__all__ = ["TrainingWizard", "TrainingCenter"]


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
        self.model_page.defaults_applied.connect(self.devices_page.apply_defaults)
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
            vae=v.chosen_vae(), train_vae=v.train.isChecked(),
            vae_epochs=v.vae_epochs.value(), train_classifier=v.classifier.isChecked() and v.classifier.isEnabled(),
            classifier_epochs=v.classifier_epochs.value(), output_dir=o.output_edit.text().strip(),
            ckpt_every=o.ckpt_every.value(), evaluate=o.evaluate.isChecked() and o.evaluate.isEnabled(),
            recipe=m.recipe_kind(), time_budget_min=m.time_budget.value(),
            runtime=self.summary_page.runtime_combo.currentData() or "")

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
        self.controller.refresh_models()
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
