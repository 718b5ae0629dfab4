"""What the window knows of the model the engine worker holds: a frozen record made in the worker
after each load or settings change, read by the controller and the control panel (never a dict)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .controls import AUTO_CATEGORY, AUTO_MIN_SCORE

if TYPE_CHECKING:  # the engine (and torch) load in the worker, after the window is up
    from engine.runtime import InspectionModel, ModelInfo

__all__ = ["LoadedModel", "RuntimeOption", "automatic_category", "model_disk_bytes", "model_summary",
           "runtime_options"]

NO_SIZE_NAME = "custom UNet"   # the size shown for a UNet built outside the named sizes


def model_disk_bytes(path: str) -> int:
    """Size on disk of a model folder or checkpoint file (0 when unknown)."""
    p = Path(path)
    try:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return 0
    return 0


@dataclass(frozen=True)
class LoadedModel:
    """The loaded model: its description (`describe()`), where it was opened from, its size on
    disk in bytes, the run-time settings the window shows and the CPU lanes a full batch runs on;
    runtime: 'torch fp32', 'openvino int8', ...; ms_per_part: that setting's time measured when the
    machine default was decided (engine.runtime_choice), None when it was not measured."""

    info: ModelInfo
    path: str
    disk_bytes: int
    threshold: float
    reverse_steps: int
    start_t: int
    gate_fusion: bool
    batch_size: int
    lanes: int
    runtime: str = "torch fp32"
    ms_per_part: float | None = None
    runtime_options: tuple["RuntimeOption", ...] = ()
    runtime_reason: str = ""

    @classmethod
    def of(cls, model: InspectionModel, path: str) -> "LoadedModel":
        """The record of `model`, opened from `path` (call in the thread that owns the model)."""
        s = model.settings
        runtime = f"{getattr(s, 'runtime', 'torch')} {s.precision}"
        choice = getattr(model, "runtime_choice", None)
        measured = choice.ms_per_part if choice is not None else None
        return cls(info=model.describe(), path=str(path), disk_bytes=model_disk_bytes(str(path)),
                   threshold=s.threshold, reverse_steps=s.reverse_steps, start_t=s.start_t,
                   gate_fusion=s.gate_fusion, batch_size=s.batch_size, lanes=model.lane_count(s.batch_size),
                   runtime=runtime, ms_per_part=measured.get(runtime) if measured else None,
                   runtime_options=runtime_options(choice, runtime),
                   runtime_reason=choice.reason if choice is not None else "")

    @property
    def name(self) -> str:
        """The model id, else the folder or file name."""
        return self.info.model_id or Path(self.path).name

    @property
    def size_name(self) -> str:
        return self.info.size or NO_SIZE_NAME


@dataclass(frozen=True)
class RuntimeOption:
    """One runtime / precision the model panel offers: name 'openvino int8'; ms_per_part measured
    when the machine default was decided (None: not measured, or it failed the accuracy check);
    default: the machine's choice for this model."""

    name: str
    ms_per_part: float | None = None
    default: bool = False
    checked: bool = False

    @property
    def label(self) -> str:
        """'openvino int8 · 46 ms/part · default', 'torch bf16 · fails the accuracy check or cannot run', 'openvino fp32'."""
        parts = [self.name]
        if self.ms_per_part is not None:
            parts.append(f"{self.ms_per_part:.0f} ms/part")
        elif self.checked:
            parts.append("fails the accuracy check or cannot run")
        if self.default:
            parts.append("default")
        return " · ".join(parts)


def runtime_options(choice, current: str) -> tuple[RuntimeOption, ...]:
    """Every runtime / precision the engine offers (engine.runtime_choice.CANDIDATE_NAMES, imported
    in the worker thread), with the machine default's measurements where it made one; `current` is
    always among them. choice: a RuntimeChoice or None."""
    from engine.runtime_choice import CANDIDATE_NAMES

    names = list(CANDIDATE_NAMES)
    if current not in names:
        names.append(current)
    measured = dict(choice.ms_per_part) if choice is not None else {}
    default = choice.name if choice is not None and measured else None
    return tuple(RuntimeOption(n, measured.get(n), n == default, n in measured) for n in names)


def model_summary(model: LoadedModel) -> str:
    """Rich text for the model box: id, size, parameters, disk size, classes, device."""
    info, disk = model.info, model.disk_bytes
    kind = f" ({info.detector})" if info.detector else ""
    classes = len(info.classes)
    parts = [f"<b>{model.name}</b>{kind}",
             f"{model.size_name} · {info.unet_parameters / 1e6:.1f} M parameters"
             + (f" · {disk / 1e6:.0f} MB on disk" if disk else ""),
             f"{classes} categor{'y' if classes == 1 else 'ies'}"
             + (" · classifier" if info.classifier else "")
             + (" · gated" if info.gating else ""),
             f"Runs on {info.device} · {model.runtime}"
             + (f" ({model.ms_per_part:.0f} ms/part measured)" if model.ms_per_part else "")]
    return "<br>".join(parts)


def automatic_category(info: ModelInfo | None) -> tuple[bool, str]:
    """(whether the model can choose the category itself, the label of that choice): a category
    classifier, DiAD's lowest-score choice over its classes, or a one-class model (None: no model)."""
    if info is None or info.classifier:
        return True, AUTO_CATEGORY
    if info.category_selection == "min-score":
        return True, AUTO_MIN_SCORE
    return len(info.classes) <= 1, AUTO_CATEGORY
