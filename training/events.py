"""The training event stream: the event names every trainer writes (`training.common.EventLog`, one
JSON object per line with "event" and "time") and the wizard reads (`EventTail`, `StepProgress`).

One schema on both sides: `EventLog.emit` refuses a name that is not listed here, and
`StepProgress.feed` reads these names only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["STARTED", "STEP", "EPOCH", "VALIDATION", "EPOCHS_FITTED", "EARLY_STOP", "WARNING", "CHECKPOINT",
           "STOPPED", "FINISHED", "EVALUATION", "ERROR", "STAGE", "SELECTED", "CALIBRATION", "THRESHOLD",
           "NORMALIZATION", "FUSION", "EVENTS", "EventTail", "StepProgress", "finite_or_none"]

STARTED = "started"              # a step began (epochs, start_epoch, steps_per_epoch, settings)
STEP = "step"                    # one optimisation step (step, epoch, loss, images_per_s)
EPOCH = "epoch"                  # one epoch done (epoch, epochs, loss, eta_s, images_per_s, complete)
VALIDATION = "validation"        # the held-out loss of an epoch (epoch, loss, best_epoch)
EPOCHS_FITTED = "epochs_fitted"  # a time budget fixed the epoch count (epochs)
EARLY_STOP = "early_stop"        # the run stopped before its epoch count (epoch: budget or no gain)
WARNING = "warning"              # something the operator should read (message)
CHECKPOINT = "checkpoint"        # a checkpoint was written (path, epoch, model_dir)
STOPPED = "stopped"              # stopped on request (SIGTERM), resumable
FINISHED = "finished"            # the step's output is complete (model_dir, summary figures)
EVALUATION = "evaluation"        # evaluation figures
ERROR = "error"                  # the step failed (message)
STAGE = "stage"                  # fit: a stage of the recipe began
SELECTED = "selected"            # fit: the kept epoch
CALIBRATION = "calibration"      # calibrate_scores: the per-category scales
THRESHOLD = "threshold"          # fit: the threshold set from held-out good parts
NORMALIZATION = "normalization"  # normalize_maps: the map normalization learned
FUSION = "fusion"                # normalize_maps: the fusion weight chosen
LATENT_MEMORY = "latent_memory"  # normalize_maps / fit: the latent memory kept (images, share in the score)
EVENTS = frozenset((STARTED, STEP, EPOCH, VALIDATION, EPOCHS_FITTED, EARLY_STOP, WARNING, CHECKPOINT, STOPPED,
                    FINISHED, EVALUATION, ERROR, STAGE, SELECTED, CALIBRATION, THRESHOLD, NORMALIZATION, FUSION,
                    LATENT_MEMORY))


def finite_or_none(value) -> float | None:
    """A finite float from an event field, else None."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class EventTail:
    """Reads a growing JSON-lines file from where it last stopped; half-written lines wait for
    their end. Lines that are not JSON objects are counted in `bad_lines` and skipped."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self.bad_lines = 0
        self._partial = b""

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(record, dict) and "event" in record:
                events.append(record)
            else:
                self.bad_lines += 1
        return events


@dataclass
class StepProgress:
    """What a step's events say: the loss curve (x in epochs, fractional for step events),
    the per-epoch losses, speed, epoch, ETA, the last checkpoint and how it ended."""

    kind: str
    curve: list[tuple[float, float]] = field(default_factory=list)
    epoch_curve: list[tuple[int, float]] = field(default_factory=list)
    validation_curve: list[tuple[int, float]] = field(default_factory=list)
    best_epoch: int = 0
    warnings: list[str] = field(default_factory=list)
    epoch: int = 0
    epochs: int = 0
    start_epoch: int = 0
    steps_per_epoch: int = 0
    images_per_s: float | None = None
    eta_s: float | None = None
    last_checkpoint: str = ""
    checkpoint_epoch: int = 0
    model_dir: str = ""
    info: dict = field(default_factory=dict)
    outcome: str = ""  # '', 'finished', 'stopped' or 'error'
    error: str = ""
    summary: dict = field(default_factory=dict)

    def feed(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == STARTED:
            self.info = ev
            self.epochs = int(ev.get("epochs") or self.epochs)
            self.start_epoch = int(ev.get("start_epoch") or 0)
            self.steps_per_epoch = int(ev.get("steps_per_epoch") or 0)
            self.outcome, self.error = "", ""
            # a resumed run repeats epochs after its last checkpoint: drop what it will redo
            self.curve = [p for p in self.curve if p[0] <= self.start_epoch]
            self.epoch_curve = [p for p in self.epoch_curve if p[0] <= self.start_epoch]
            self.validation_curve = [p for p in self.validation_curve if p[0] <= self.start_epoch]
        elif kind == STEP:
            loss = finite_or_none(ev.get("loss"))
            if loss is not None:
                step = int(ev.get("step") or 0)
                x = step / self.steps_per_epoch if self.steps_per_epoch else float(ev.get("epoch") or 0)
                self.curve.append((x, loss))
            self.images_per_s = finite_or_none(ev.get("images_per_s")) or self.images_per_s
            self.epoch = max(self.epoch, int(ev.get("epoch") or 0) - 1)
        elif kind == EPOCH:
            self.epoch = int(ev.get("epoch") or self.epoch)
            self.epochs = int(ev.get("epochs") or self.epochs)
            loss = finite_or_none(ev.get("loss"))
            if ev.get("complete", True) and loss is not None:
                self.epoch_curve.append((self.epoch, loss))
                if not self.steps_per_epoch:  # trainers without step events: one point per epoch
                    self.curve.append((float(self.epoch), loss))
            self.eta_s = finite_or_none(ev.get("eta_s"))
            self.images_per_s = finite_or_none(ev.get("images_per_s")) or self.images_per_s
            for key in ("psnr", "val_accuracy"):
                if key in ev:
                    self.summary[key] = ev[key]
        elif kind == VALIDATION:
            loss = finite_or_none(ev.get("loss"))
            if loss is not None:
                self.validation_curve.append((int(ev.get("epoch") or 0), loss))
            self.best_epoch = int(ev.get("best_epoch") or self.best_epoch)
        elif kind in (EPOCHS_FITTED, EARLY_STOP):
            # a time budget fixed the epoch count, or the run stopped before it (budget, no gain)
            self.epochs = int(ev.get("epochs") or ev.get("epoch") or self.epochs)
        elif kind == WARNING:
            self.warnings.append(str(ev.get("message") or ""))
        elif kind == CHECKPOINT:
            self.last_checkpoint = str(ev.get("path") or "")
            self.checkpoint_epoch = int(ev.get("epoch") or 0)
            self.model_dir = str(ev.get("model_dir") or self.model_dir)
        elif kind == STOPPED:
            self.outcome = "stopped"
            self.eta_s = None
        elif kind == FINISHED:
            self.outcome = "finished"
            self.eta_s = 0.0
            self.epoch = int(ev.get("epoch") or self.epochs or self.epoch)
            self.model_dir = str(ev.get("model_dir") or self.model_dir)
            self.summary.update({k: v for k, v in ev.items() if k not in ("event", "time")})
        elif kind == EVALUATION:
            self.outcome = "finished"
            self.summary.update({k: v for k, v in ev.items() if k not in ("event", "time")})
        elif kind == ERROR:
            self.outcome = "error"
            self.error = str(ev.get("message") or "error")

