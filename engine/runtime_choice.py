"""The default runtime and precision of a model on this machine: the fastest setting that keeps
the model's verdicts, decided once per model and machine and remembered.

The check runs each candidate (torch fp32, the reference; torch bf16; OpenVINO fp32, bf16, int8)
on the held-out images of the model's calibration set (`engine.openvino_runtime.CalibrationSet`,
its own good images, not used for quantization): a candidate passes when every image keeps the
reference's verdict at the model's threshold and its score moves by at most
`SCORE_TOLERANCE` x threshold. The fastest passing candidate (ms per part, measured on the same
images after one warm-up batch) is the default. The decision is stored in a per-machine file
keyed by the model's weights, its calibration data, the CPU and the library versions, so it is
made once; a model without calibration images stays on torch fp32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .openvino_runtime import (CalibrationSet, user_cache_root, module_fingerprint, openvino_problem)
from .runtime import StageClock

__all__ = ["CANDIDATES", "CANDIDATE_NAMES", "load_on_runtime", "SCORE_TOLERANCE", "PIN_ENV", "RuntimeChoice", "check_candidates", "machine_default",
           "choice_file", "model_names_runtime", "apply_default_runtime"]

log = logging.getLogger(__name__)

# (runtime, precision) in the order they are tried; the first is the reference
CANDIDATES = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
CANDIDATE_NAMES = tuple(f"{runtime} {precision}" for runtime, precision in CANDIDATES)   # 'openvino int8', as shown
# a candidate's score may differ from the reference's by at most this share of the threshold
SCORE_TOLERANCE = 0.05
CHOICE_FILE = "runtime_choice.json"
# "RUNTIME PRECISION" (e.g. "torch fp32") in this environment variable replaces the machine default
# (a station that must not change, the test suite)
PIN_ENV = "DECO_INSPECTOR_RUNTIME"


@dataclass(frozen=True)
class RuntimeChoice:
    """runtime / precision chosen; ms_per_part: each candidate's measured time ('name': ms, None
    when it failed the check or could not run); reason: one line for the log."""

    runtime: str
    precision: str
    ms_per_part: dict
    reason: str

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"


def choice_file() -> Path:
    """The per-machine file holding the decisions (in the user cache folder)."""
    return user_cache_root() / CHOICE_FILE


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _decision_key(model, calibration: CalibrationSet | None) -> str:
    try:
        import openvino

        ov_version = openvino.__version__
    except Exception:  # noqa: BLE001 - not installed or broken: part of the key all the same
        ov_version = "none"
    parts = [module_fingerprint(model.unet), calibration.digest() if calibration is not None else "",
             _cpu_name(), str(os.cpu_count()), torch.__version__, ov_version, str(model.device)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _timed_scores(model, images: torch.Tensor, ids: torch.Tensor) -> tuple[list[float], float]:
    """Scores of a batch and the wall ms per image (after one warm-up call on two images)."""
    model.score_latents(images[:2], ids[:2])
    start = time.perf_counter()
    maps, _ = model.score_latents(images, ids, StageClock(model.device))
    ms = (time.perf_counter() - start) * 1000.0 / images.shape[0]
    return maps.final.reshape(images.shape[0], -1).amax(dim=1).tolist(), ms


def check_candidates(model, calibration: CalibrationSet, candidates=CANDIDATES) -> RuntimeChoice:
    """Run every candidate on the calibration set's held-out images (see the module docstring)
    and return the fastest that keeps the reference's verdicts. Leaves the model on its choice."""
    rows = calibration.check_rows if calibration.held_out else slice(None)
    images = calibration.images(rows)
    ids = torch.from_numpy(calibration.class_ids[rows])
    threshold = float(model.settings.threshold)
    timings: dict[str, float | None] = {}
    reference: list[float] | None = None
    best: tuple[float, str, str] | None = None
    for runtime, precision in candidates:
        name = f"{runtime} {precision}"
        if runtime == "openvino" and openvino_problem():
            timings[name] = None
            continue
        model.with_settings(runtime=runtime, precision=precision)
        if (model.settings.runtime, model.settings.precision) != (runtime, precision):
            timings[name] = None  # it fell back (a notice says why)
            continue
        scores, ms = _timed_scores(model, images, ids)
        if reference is None:
            reference = scores
        same = all((a > threshold) == (b > threshold) and abs(a - b) <= SCORE_TOLERANCE * threshold
                   for a, b in zip(scores, reference))
        timings[name] = round(ms, 1) if same else None
        if same and (best is None or ms < best[0]):
            best = (ms, runtime, precision)
    runtime, precision = (best[1], best[2]) if best else candidates[0]
    model.with_settings(runtime=runtime, precision=precision)
    ref_ms = timings.get(" ".join(candidates[0]))
    reason = (f"{runtime} {precision} is the fastest setting that keeps the verdicts of {len(reference or [])} "
              f"held-out good images: " + ", ".join(f"{k} {v} ms/part" if v is not None else f"{k} -"
                                                     for k, v in timings.items()))
    if ref_ms is None:
        reason += " (the reference could not run)"
    return RuntimeChoice(runtime, precision, timings, reason)


def _read_choices(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_choices(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".runtime-choice-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def machine_default(model) -> RuntimeChoice:
    """Put `model` on its default runtime and precision for this machine: the stored decision,
    or, the first time, `check_candidates` on its calibration set (stored for next time). A model
    without calibration images (or with unreadable ones) stays on torch fp32. Logs the choice."""
    try:
        calibration = CalibrationSet.load(Path(model.source), model.preprocess.center_size,
                                          len(model.class_names)) if model.source else None
    except ValueError as e:
        log.warning("%s", e)
        calibration = None
    label = model.model_id or "the model"
    if calibration is None:
        choice = RuntimeChoice("torch", "fp32", {}, "no calibration images to check other settings on "
                               "(python main.py calibrate-runtime)")
        model.with_settings(runtime="torch", precision="fp32")
        log.info("runtime for %s on this machine: torch fp32 (%s)", label, choice.reason)
        return choice
    key = _decision_key(model, calibration)
    path = choice_file()
    stored = _read_choices(path).get(key)
    if isinstance(stored, dict) and stored.get("runtime") and stored.get("precision"):
        choice = RuntimeChoice(stored["runtime"], stored["precision"], stored.get("ms_per_part", {}),
                               stored.get("reason", ""))
        model.with_settings(runtime=choice.runtime, precision=choice.precision)
        if (model.settings.runtime, model.settings.precision) == (choice.runtime, choice.precision):
            log.info("runtime for %s on this machine: %s (decided before: %s)", label, choice.name, choice.reason)
            return choice
    choice = check_candidates(model, calibration)
    data = _read_choices(path)
    data[key] = {"model_id": model.model_id, "runtime": choice.runtime, "precision": choice.precision,
                 "ms_per_part": choice.ms_per_part, "reason": choice.reason,
                 "decided": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        _write_choices(path, data)
    except OSError as e:
        log.warning("could not store the runtime choice in %s: %s", path, e)
    log.info("runtime for %s on this machine: %s (%s)", label, choice.name, choice.reason)
    return choice


def model_names_runtime(path) -> bool:
    """True when `path` is not a model folder or its model.json settings choose a runtime or a
    precision (then the model's own setting is used, not the machine default)."""
    from .checkpoint import read_model_json

    path = Path(path)
    if path.is_file() and path.suffix in (".json", ".safetensors"):
        path = path.parent
    settings = read_model_json(path).get("settings", {}) if path.is_dir() else {}
    return not path.is_dir() or "runtime" in settings or "precision" in settings


def apply_default_runtime(model, path) -> RuntimeChoice | None:
    """What `main.py inspect` and the window do after loading a model without --runtime/--precision:
    the runtime in $DECO_INSPECTOR_RUNTIME when set, else the machine default (`machine_default`),
    unless model.json names a runtime. None when the model keeps its own setting."""
    if model_names_runtime(path):
        return None
    pinned = os.environ.get(PIN_ENV, "").split()
    if pinned:
        if len(pinned) != 2:
            raise ValueError(f"${PIN_ENV} must be 'RUNTIME PRECISION' (e.g. 'torch fp32'), got {' '.join(pinned)!r}")
        model.with_settings(runtime=pinned[0], precision=pinned[1])
        choice = model.runtime_choice = RuntimeChoice(model.settings.runtime, model.settings.precision, {},
                                                      f"${PIN_ENV}")
        log.info("runtime for %s: %s (%s)", model.model_id or "the model", choice.name, choice.reason)
        return choice
    model.runtime_choice = machine_default(model)
    return model.runtime_choice


def load_on_runtime(path, **overrides) -> tuple[object, RuntimeChoice | None]:
    """`engine.loading.load_model(path, **overrides)`, then the machine default
    (`apply_default_runtime`) unless the overrides name a runtime or precision: the one loading
    rule of the window, `inspect` and `station`. Returns (model, the default applied or None)."""
    from .loading import load_model

    model = load_model(path, **overrides)
    asked = "runtime" in overrides or "precision" in overrides
    return model, None if asked else apply_default_runtime(model, path)
