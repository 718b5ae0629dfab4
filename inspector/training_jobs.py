"""The app's training-job queue: runs the steps of `training.jobs` jobs one at a time through
QProcess (the GUI never waits on it), stops a step with SIGTERM (the trainers then write a
checkpoint and emit `stopped`), follows their event files and keeps the job list in
`<user data dir>/training/jobs.json`. Plans, command lines, events and the job store are Qt-free
in `training.jobs` and `training.events`.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from training.events import EventTail
from training.jobs import (ACTIVE_STATES, FAILED, FINISHED, QUEUED, RUNNING, STOPPED, STOPPING, JobStore, TrainingJob,
                           TrainingPlan, TrainingStep, format_command, leftover_process, step_environment,
                           suggested_threshold)

__all__ = ["TrainingJobQueue", "STOP_GRACE_MS"]

STOP_GRACE_MS = 120_000  # a stopping step that has not exited by then is killed

class TrainingJobQueue(QObject):
    """Runs jobs one step at a time through QProcess and follows their event files.

    job_added(id), job_changed(id): state, step or message changed; job_progress(id): new events;
    job_log(id, line): a console line of the running step."""

    job_added = Signal(str)
    job_changed = Signal(str)
    job_removed = Signal(str)
    job_progress = Signal(str)
    job_log = Signal(str, str)

    def __init__(self, store_path: Path, poll_ms: int = 250, parent=None):
        super().__init__(parent)
        self.store = JobStore(store_path)
        self.jobs, self.load_problem = self.store.load()
        self.process: QProcess | None = None
        self.running: TrainingJob | None = None
        self._tail: EventTail | None = None
        self._run_events: list[dict] = []
        self._text = ""
        self._log_file = None
        self._stop_deadline: float | None = None
        self._closing = False
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._poll)
        self.timer.start(poll_ms)

    # ----------------------------------------------------------------- queries
    def job(self, job_id: str) -> TrainingJob | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def busy(self) -> bool:
        return self.running is not None

    # ----------------------------------------------------------------- commands
    def submit(self, plan: TrainingPlan, steps: list[TrainingStep]) -> TrainingJob:
        job = TrainingJob(plan, steps)
        job.message = "Waiting for the job before it to end." if self.running else ""
        self.jobs.append(job)
        self._save()
        self.job_added.emit(job.id)
        self._start_next()
        return job

    def stop(self, job_id: str) -> None:
        """Graceful stop: SIGTERM to torchrun, which forwards it; the trainer checkpoints and exits."""
        job = self.job(job_id)
        if job is None:
            return
        if job.state == QUEUED:
            job.state, job.message = STOPPED, "Taken off the queue before it started."
            self._changed(job)
            return
        if job is self.running and self.process is not None and job.state == RUNNING:
            job.state = STOPPING
            job.message = "Stopping: the trainer writes a checkpoint first…"
            self._stop_deadline = time.monotonic() + STOP_GRACE_MS / 1000
            self.process.terminate()
            self._changed(job)

    def resume(self, job_id: str) -> None:
        """Queue a stopped or failed job again: its current step continues from its last checkpoint
        (VAE and detector) or starts over (classifier, evaluation)."""
        job = self.job(job_id)
        if job is None or job.state not in (STOPPED, FAILED):
            return
        leftover = leftover_process(job) if job is not self.running else None
        if leftover:
            job.message = (f"Process {leftover} of this job (from an earlier session) is still running; "
                           "Resume is possible once it has ended.")
            self._changed(job)
            return
        job.state, job.message, job.ended = QUEUED, "", None
        self._changed(job)
        self._start_next()

    def remove(self, job_id: str) -> None:
        """Forget a job that is not running (its files stay on disk)."""
        job = self.job(job_id)
        if job is None or job.state in ACTIVE_STATES:
            return
        self.jobs.remove(job)
        self._save()
        self.job_removed.emit(job_id)

    def set_registered(self, job_id: str, path: Path, threshold: float | None) -> None:
        job = self.job(job_id)
        if job is not None:
            job.registered, job.threshold = str(path), threshold
            self._changed(job)

    def shutdown(self, wait_ms: int = 60_000) -> None:
        """The app is closing: stop the running step gracefully (checkpoint kept) and wait for it."""
        self._closing = True
        self.timer.stop()
        if self.running is not None and self.process is not None:
            job = self.running
            if job.state == RUNNING:
                job.state = STOPPING
                self.process.terminate()
            if not self.process.waitForFinished(wait_ms):
                self.process.kill()
                self.process.waitForFinished(5000)
            self._poll()
            if self.running is job:  # finished() was not delivered: settle the job here
                self._on_finished(self.process.exitCode(), self.process.exitStatus())
        self._save()

    # ----------------------------------------------------------------- running
    def _start_next(self) -> None:
        if self.running is not None or self._closing:
            return
        job = next((j for j in self.jobs if j.state == QUEUED), None)
        if job is None:
            return
        if job.current is None:
            self._finish(job)
            return
        self._launch(job)

    def _launch(self, job: TrainingJob) -> None:
        step = job.current
        step.events.parent.mkdir(parents=True, exist_ok=True)
        step.log.parent.mkdir(parents=True, exist_ok=True)
        self.running = job
        job.state, job.message, job.ended = RUNNING, f"{step.title}: starting…", None
        self._tail = EventTail(step.events, offset=EventTail(step.events).size())
        self._run_events = []
        self._text = ""
        self._stop_deadline = None
        try:
            self._log_file = open(step.log, "a", encoding="utf-8")
            self._log_file.write(f"\n$ {format_command(step.argv)}\n")
            self._log_file.flush()
        except OSError:
            self._log_file = None
        proc = QProcess(self)
        from training.launch import launch_environment

        env = QProcessEnvironment()
        for key, value in {**launch_environment(), **step_environment(job.plan)}.items():
            env.insert(key, value)
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.setWorkingDirectory(str(job.plan.job_dir) if job.plan.job_dir.is_dir() else str(step.events.parent))
        proc.readyReadStandardOutput.connect(self._on_output)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.process = proc
        proc.start(step.argv[0], step.argv[1:])
        job.pid = int(proc.processId()) or None
        self._changed(job)

    def _on_output(self) -> None:
        if self.process is None:
            return
        self._text += bytes(self.process.readAllStandardOutput()).decode("utf-8", errors="replace")
        *lines, self._text = self._text.split("\n")
        for raw in lines:
            # progress bars redraw with carriage returns: keep what the line ended up showing
            line = next((seg for seg in reversed(raw.split("\r")) if seg.strip()), "").rstrip()
            if not line:
                continue
            self._log(line)

    def _log(self, line: str) -> None:
        job = self.running
        if job is None:
            return
        job.log_tail.append(line)
        if self._log_file is not None:
            try:
                self._log_file.write(line + "\n")
                self._log_file.flush()
            except OSError:
                self._log_file = None
        self.job_log.emit(job.id, line)

    def _read_events(self, job: TrainingJob) -> None:
        """Feed the running step's new events to its progress."""
        events = self._tail.read() if self._tail is not None else []
        if not events:
            return
        step = job.current
        prog = job.progress_of(step.kind)
        for ev in events:
            prog.feed(ev)
        self._run_events.extend(events)
        if job.state == RUNNING:
            job.message = f"{step.title} ({job.step + 1}/{len(job.steps)})" + (
                f" — epoch {prog.epoch}/{prog.epochs}" if prog.epochs else "")
        self.job_progress.emit(job.id)

    def _poll(self) -> None:
        job = self.running
        if job is None:
            return
        self._read_events(job)
        if (self._stop_deadline is not None and time.monotonic() > self._stop_deadline
                and self.process is not None):
            self._log("The step did not stop in time; killing it (its last checkpoint is kept).")
            self._stop_deadline = None
            self.process.kill()

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.running is not None:
            self._log(f"Could not start {self.running.current.argv[0]}: {self.process.errorString()}")
            self._on_finished(-1, QProcess.ExitStatus.CrashExit)

    def _on_finished(self, exit_code: int, exit_status) -> None:
        job = self.running
        if job is None:
            return
        self._on_output()
        if self._text.strip():
            self._log(self._text.strip())
            self._text = ""
        self._read_events(job)
        self._tail = None
        step = job.current
        outcomes = [e["event"] for e in self._run_events]
        stopping = job.state == STOPPING
        self.running, proc, self.process = None, self.process, None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if proc is not None:
            proc.deleteLater()
        finished = ("finished" in outcomes or "evaluation" in outcomes) and exit_code == 0
        if finished:
            job.step += 1
            if job.current is None:
                self._finish(job)
            elif stopping:  # the step ended just as Stop was pressed: the next one waits for Resume
                job.state, job.ended = STOPPED, time.time()
                job.message = f"Stopped after {step.title.lower()}; Resume starts {job.current.title.lower()}."
                self._changed(job)
            else:
                job.state, job.message = QUEUED, ""
                self._changed(job)
        elif stopping or "stopped" in outcomes:
            job.state, job.ended = STOPPED, time.time()
            kept = job.progress_of(step.kind).last_checkpoint if step.resumable else ""
            job.message = (f"Stopped during {step.title.lower()}"
                           + (f"; checkpoint kept ({kept}). Resume continues from it." if kept else
                              "; Resume runs this step again."))
            self._changed(job)
        else:
            job.state, job.ended = FAILED, time.time()
            errors = [e.get("message", "") for e in self._run_events if e["event"] == "error"]
            reason = errors[-1] if errors else f"the process ended with exit code {exit_code}"
            last = "\n".join(list(job.log_tail)[-12:])
            job.message = f"{step.title} failed: {reason}\nLast log lines:\n{last}"
            self._changed(job)
        self._start_next()

    def _finish(self, job: TrainingJob) -> None:
        job.state, job.ended = FINISHED, time.time()
        metrics = job.metrics
        thr = suggested_threshold(metrics)
        if job.threshold is None and thr is not None:
            job.threshold = thr
        job.message = ("Training finished" + (f"; evaluation suggests threshold {thr:.4g}." if thr is not None
                                              else "; no evaluation (no test images)."))
        self._changed(job)

    def _changed(self, job: TrainingJob) -> None:
        self._save()
        self.job_changed.emit(job.id)

    def _save(self) -> None:
        try:
            self.store.save(self.jobs)
        except OSError as e:
            self.load_problem = f"cannot save the training job list {self.store.path}: {e}"
