"""The default runtime and precision of a model on this machine: the fastest setting that keeps
the model's verdicts, decided once per model and machine and remembered.

The check runs each candidate (torch fp32, the reference; torch bf16; OpenVINO fp32, bf16, int8)
on the held-out images of the model's calibration set (`engine.openvino_runtime.CalibrationSet`,
its own good images, not used for quantization): a candidate passes when every image keeps the
reference's verdict at the model's threshold, the scores move by at most `SCORE_TOLERANCE` x
threshold on average and no score by more than `MAX_SCORE_CHANGE` x threshold
(`score_change_problem`). The fastest passing candidate (ms per part, measured on the same images
after one warm-up batch) is the default. The decision is stored in a per-machine file keyed by the
model's weights, its calibration data, the CPU, the torch thread count (the window keeps a core for
the display and runs torch on the others, `inspect` uses them all: each decides for how it runs),
the library versions and `CHECK_RULE_VERSION`, so it is made once; a model without calibration
images stays on torch fp32.

The first check of a saved model runs in a child process (`python -m engine.runtime_choice
--model FOLDER`): converting and quantizing every candidate takes far more memory than running
the chosen one (1.8 GB against 0.63 GB resident for the demo model, measured), and the window
must stay within its memory budget. The parent then reads the stored decision and builds only
the chosen networks (from the compiled-network cache the child filled).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .acceleration import cpu_name
from .child_process import launch_environment, python_module_command
from .openvino_runtime import (EXECUTION_VERSION, CalibrationSet, user_cache_root, module_fingerprint,
                               openvino_problem)
from .runtime import StageClock

__all__ = ["CANDIDATES", "CANDIDATE_NAMES", "load_on_runtime", "SCORE_TOLERANCE", "PIN_ENV", "RuntimeChoice", "check_candidates", "machine_default",
           "choice_file", "model_names_runtime", "apply_default_runtime"]

log = logging.getLogger(__name__)

# (runtime, precision) in the order they are tried; the first is the reference
CANDIDATES = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
CANDIDATE_NAMES = tuple(f"{runtime} {precision}" for runtime, precision in CANDIDATES)   # 'openvino int8', as shown
# a candidate's scores may differ from the reference's by at most this share of the threshold on
# average, and each by at most MAX_SCORE_CHANGE of it. One image alone is not held to the mean: on
# an AMD EPYC (AVX-512 VNNI, no AMX) OpenVINO int8 moved one good image of the demo model's nine by
# 0.033 (6.7 % of the threshold 0.5; mean 0.010) while keeping image and pixel AUROC within 0.001
# and every verdict of 165 test parts (benchmarks/results/accuracy-zen4.md)
SCORE_TOLERANCE = 0.05
MAX_SCORE_CHANGE = 0.10
# part of every stored decision's key: raise it when the check's rule or its candidates change, so
# machines decide again instead of keeping a choice the old rule made (2: mean + largest change;
# 3: the warm-up call takes the timed batch, so no OpenVINO compile is timed)
CHECK_RULE_VERSION = 3
CHOICE_FILE = "runtime_choice.json"
# "RUNTIME PRECISION" (e.g. "torch fp32") in this environment variable replaces the machine default
# (a station that must not change, the test suite)
PIN_ENV = "DECO_INSPECTOR_RUNTIME"
# the first check of a saved model runs in a child process (see the module docstring); tests that
# replace `check_candidates` in this process turn it off
CHECK_IN_CHILD = True
# the child is given this long (every candidate converted, quantized and timed; minutes on a busy CPU)
CHILD_TIMEOUT_S = 1800
# the child's last line (relayed to the log): how much memory the check took, kept out of the window
CHILD_PEAK_PREFIX = "peak resident memory of the check:"


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


def _decision_key(model, calibration: CalibrationSet | None) -> str:
    try:
        import openvino

        ov_version = openvino.__version__
    except Exception:  # noqa: BLE001 - not installed or broken: part of the key all the same
        ov_version = "none"
    parts = [f"rule {CHECK_RULE_VERSION}", f"execution {EXECUTION_VERSION}", module_fingerprint(model.unet),
             calibration.digest() if calibration is not None else "",
             cpu_name(), str(os.cpu_count()), f"{torch.get_num_threads()} threads", torch.__version__, ov_version,
             str(model.device)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _timed_scores(model, images: torch.Tensor, ids: torch.Tensor) -> tuple[list[float], float]:
    """Scores of a batch and the wall ms per image, after one warm-up call on the same batch (an
    OpenVINO network compiles a copy for each new batch size on its first call: not the part's time)."""
    model.score_latents(images, ids)
    start = time.perf_counter()
    maps, _ = model.score_latents(images, ids, StageClock(model.device))
    ms = (time.perf_counter() - start) * 1000.0 / images.shape[0]
    return maps.final.reshape(images.shape[0], -1).amax(dim=1).tolist(), ms


def score_change_problem(scores: list[float], reference: list[float], threshold: float) -> str | None:
    """None when `scores` keep the `reference` scores' verdicts at `threshold` and move within the
    tolerances (see the module docstring), else what is wrong, in a few words."""
    flipped = sum((a > threshold) != (b > threshold) for a, b in zip(scores, reference))
    if flipped:
        return f"{flipped} verdict{'s' if flipped > 1 else ''} changed"
    changes = [abs(a - b) for a, b in zip(scores, reference)]
    if not changes:
        return None
    mean, largest = sum(changes) / len(changes), max(changes)
    if mean > SCORE_TOLERANCE * threshold:
        return f"scores moved by {mean:.3g} on average (at most {SCORE_TOLERANCE * threshold:.3g})"
    if largest > MAX_SCORE_CHANGE * threshold:
        return f"a score moved by {largest:.3g} (at most {MAX_SCORE_CHANGE * threshold:.3g})"
    return None


def check_candidates(model, calibration: CalibrationSet, candidates=CANDIDATES) -> RuntimeChoice:
    """Run every candidate on the calibration set's held-out images (see the module docstring)
    and return the fastest that keeps the reference's verdicts. Leaves the model on its choice."""
    rows = calibration.check_rows if calibration.held_out else slice(None)
    images = calibration.images(rows)
    ids = torch.from_numpy(calibration.class_ids[rows])
    threshold = float(model.settings.threshold)
    timings: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    reference: list[float] | None = None
    best: tuple[float, str, str] | None = None
    for runtime, precision in candidates:
        name = f"{runtime} {precision}"
        if runtime == "openvino" and openvino_problem():
            timings[name], notes[name] = None, "not installed"
            continue
        model.with_settings(runtime=runtime, precision=precision)
        if (model.settings.runtime, model.settings.precision) != (runtime, precision):
            timings[name], notes[name] = None, "cannot run here"  # it fell back (a notice says why)
            continue
        scores, ms = _timed_scores(model, images, ids)
        if reference is None:
            reference = scores
        problem = score_change_problem(scores, reference, threshold)
        timings[name] = round(ms, 1) if problem is None else None
        if problem is not None:
            notes[name] = f"{ms:.1f} ms/part, rejected: {problem}"
        elif best is None or ms < best[0]:
            best = (ms, runtime, precision)
    runtime, precision = (best[1], best[2]) if best else candidates[0]
    model.with_settings(runtime=runtime, precision=precision)
    ref_ms = timings.get(" ".join(candidates[0]))
    reason = (f"{runtime} {precision} is the fastest setting that keeps the verdicts of {len(reference or [])} "
              f"held-out good images: " + ", ".join(f"{k} {v} ms/part" if v is not None else f"{k} ({notes[k]})"
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


def _stored_choice(key: str) -> RuntimeChoice | None:
    stored = _read_choices(choice_file()).get(key)
    if isinstance(stored, dict) and stored.get("runtime") and stored.get("precision"):
        return RuntimeChoice(stored["runtime"], stored["precision"], stored.get("ms_per_part", {}),
                             stored.get("reason", ""))
    return None


def _store_choice(key: str, model, choice: RuntimeChoice) -> None:
    path = choice_file()
    data = _read_choices(path)
    data[key] = {"model_id": model.model_id, "runtime": choice.runtime, "precision": choice.precision,
                 "ms_per_part": choice.ms_per_part, "reason": choice.reason,
                 "decided": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        _write_choices(path, data)
    except OSError as e:
        log.warning("could not store the runtime choice in %s: %s", path, e)


def _check_in_child(model, key: str, candidates) -> RuntimeChoice | None:
    """Run the check of a saved model in a child process (same device and torch thread count, so
    the same OpenVINO streams are timed), relaying its lines to this log. Returns the decision it
    stored; torch fp32 with the reason when the child failed, ran past CHILD_TIMEOUT_S or stored
    nothing (a crash there must not take the window down by a retry here; a failure is stored, so
    the next start does not repeat it, a time-out is not); None when no child could be started
    (the caller then checks in this process)."""
    command = python_module_command("engine.runtime_choice", [
        "--model", str(model.source), "--device", str(model.device), "--threads", str(torch.get_num_threads()),
        "--candidates", ",".join(f"{runtime} {precision}" for runtime, precision in candidates)])
    label = model.model_id or model.source
    log.info("checking every runtime of %s on this machine, in a child process (once per model and machine)", label)
    try:
        child = subprocess.Popen(command, env=launch_environment(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        log.warning("the runtime check of %s could not start a child process (%s); checking here instead", label, e)
        return None
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        child.kill()

    watchdog = threading.Timer(CHILD_TIMEOUT_S, stop)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in child.stdout:
            if line.strip():
                lines.append(line.rstrip())
                log.info("runtime check: %s", lines[-1])
        code = child.wait()
    finally:
        watchdog.cancel()
        child.stdout.close()
    choice = _stored_choice(key)
    if code == 0 and choice is not None:
        return choice
    problem = (f"ran past {CHILD_TIMEOUT_S} s" if timed_out.is_set()
               else f"failed (exit {code})" if code else "stored no decision")
    reason = f"the runtime check in a child process {problem}" + (f": {lines[-1]}" if lines else "")
    log.warning("%s: %s; running it on torch fp32", label, reason)
    failed = RuntimeChoice("torch", "fp32", {}, reason)
    if code and not timed_out.is_set():
        _store_choice(key, model, failed)
    return failed


def machine_default(model, candidates=CANDIDATES, in_child: bool | None = None) -> RuntimeChoice:
    """Put `model` on its default runtime and precision for this machine: the stored decision,
    or, the first time, `check_candidates` on its calibration set (stored for next time; for a
    saved model in a child process unless `in_child` is False, see CHECK_IN_CHILD and
    `_check_in_child`). A model without calibration images (or with unreadable ones) stays on
    torch fp32. Logs the choice."""
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
    stored = _stored_choice(key)
    when = "decided before"
    if in_child is None:
        in_child = CHECK_IN_CHILD
    if stored is None and in_child and Path(model.source).is_dir():
        stored, when = _check_in_child(model, key, candidates), "decided in a child process"
    if stored is not None:
        model.with_settings(runtime=stored.runtime, precision=stored.precision)
        if (model.settings.runtime, model.settings.precision) == (stored.runtime, stored.precision):
            log.info("runtime for %s on this machine: %s (%s: %s)", label, stored.name, when, stored.reason)
            return stored
    choice = check_candidates(model, calibration, candidates)
    _store_choice(key, model, choice)
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


def _peak_resident_mb() -> float | None:
    """This process's peak resident memory in MB (VmHWM), None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv=None) -> int:
    """`python -m engine.runtime_choice --model FOLDER`: decide and store the machine default of
    a saved model here (what `machine_default` runs in a child process)."""
    parser = argparse.ArgumentParser(prog="python -m engine.runtime_choice", description=main.__doc__)
    parser.add_argument("--model", required=True, help="a saved model folder")
    parser.add_argument("--device", default=None, help="the device the asking process runs the model on")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, as in the process that asks (0: torch's default)")
    parser.add_argument("--candidates", default=",".join(CANDIDATE_NAMES),
                        help="comma list of 'RUNTIME PRECISION' to check, the reference first (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from .loading import load_model

    try:
        model = load_model(args.model, device=args.device)
    except Exception as e:  # noqa: BLE001 - one line naming the model and the problem, for the parent's log
        print(f"cannot open {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    candidates = tuple(tuple(name.split()) for name in args.candidates.split(",") if name.strip())
    unknown = [" ".join(c) for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        parser.error(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATE_NAMES)}")
    choice = machine_default(model, candidates, in_child=False)   # this is the child
    print(f"runtime for {model.model_id or args.model}: {choice.name}")
    peak = _peak_resident_mb()
    if peak is not None:
        print(f"{CHILD_PEAK_PREFIX} {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
