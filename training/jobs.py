"""Training jobs, Qt-free: the plan the wizard asks for, the exact command lines of its steps, the
job record rebuilt from the steps' event files, the job list on disk and the registration of a
trained model in the app's model list.

A job is one `TrainingPlan` run as a sequence of steps, each a real `torchrun` process
(`python -m torch.distributed.run --standalone --nproc_per_node=N -m training.<entry> ...`):
the compact VAE (optional), the category classifier (optional), the detector (DeCo-Diff or
DiAD) and the evaluation on the test images (when there are some). Every step writes its JSON
event stream (`training.events`) to `<job folder>/events/<step>.jsonl` and its console output to
`<job folder>/logs/<step>.log`; the wizard's curves and numbers come from those files only, so a
job's report survives the app being closed. The app's `inspector.training_jobs.TrainingJobQueue`
runs the steps.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from engine.defaults import DEFAULT_THRESHOLD
from engine.diad.model import DIAD_SIZES
from engine.runtime_choice import CANDIDATE_NAMES
from engine.unet import UNET_SIZES

from .events import EventTail, StepProgress, finite_or_none
from .launch import SHIPPED_VAE

__all__ = [
    "DETECTORS", "TrainingPlan", "TrainingStep", "build_steps", "format_command", "default_settings",
    "step_environment", "TrainingJob", "JobStore", "leftover_process", "register_model", "suggested_threshold",
    "model_threshold", "QUEUED", "RUNNING", "STOPPING", "STOPPED", "FAILED", "FINISHED", "ACTIVE_STATES",
    "STEP_TITLES", "RECIPES", "LOG_TAIL_LINES",
]

QUEUED, RUNNING, STOPPING, STOPPED, FAILED, FINISHED = "queued", "running", "stopping", "stopped", "failed", "finished"
ACTIVE_STATES = (RUNNING, STOPPING)

# detector kind -> (trainer module, model sizes offered, the size suggested on CPU, on CUDA)
DETECTORS = {
    "deco-diff": ("training.train_deco_diff", UNET_SIZES, "UNet_T", "UNet_S"),
    "diad": ("training.train_diad", DIAD_SIZES, "DiAD_T", "DiAD_S"),
}
STEP_TITLES = {"vae": "VAE fine-tuning", "classifier": "Category classifier", "detector": "Detector",
               "calibrate": "Score calibration", "runtime": "Runtime calibration", "evaluate": "Evaluation"}
LOG_TAIL_LINES = 400
RECIPES = ("fit", "manual")


@dataclass
class TrainingPlan:
    """Everything the wizard asks, in the trainers' own terms.

    dataset: 'mvtec' | 'visa' | 'folder'; data_dir: the dataset root (folder: the good images);
    test_dir: folder layout only, optional test folder (good/ + one folder per defect, masks);
    category: 'all' or one category name; detector: a DETECTORS key; sizes in pixels (image_size:
    resize side, center_size: the centre crop the model sees); lr: AdamW learning rate;
    batch_size: global batch over all processes; device: 'cpu' or 'cuda'; nproc: processes per
    node (CPU: gloo ranks, CUDA: one per GPU); vae: a VAE folder, or '' for the VAE shipped
    with the app (`training.launch.SHIPPED_VAE`); train_vae: fine-tune the shipped VAE on the
    data first (vae_epochs) and train on that; output_dir / name: the job folder is output_dir/name; recipe: 'fit'
    (DeCo-Diff: `training.fit` chooses epochs, batch and learning rate for the machine and trains
    within time_budget_min minutes, keeps the best epoch on held-out good images and normalizes
    the maps) or 'manual' (the trainer with the settings above); runtime: 'openvino int8', 'torch
    fp32', ... stored in the model (it then always runs on it), '' for the machine default (the
    fastest setting that keeps the verdicts, decided when the model is first opened)."""

    name: str = "my-model"
    dataset: str = "folder"
    data_dir: str = ""
    test_dir: str = ""
    category: str = "all"
    detector: str = "deco-diff"
    model_size: str = "UNet_T"
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-4
    mask_ratio: float = 0.7
    image_size: int = 288
    center_size: int = 256
    latent_crop: int = 16
    device: str = "cpu"
    nproc: int = 1
    threads_per_process: int = 1
    vae: str = ""
    train_vae: bool = False
    vae_epochs: int = 60
    train_classifier: bool = False
    classifier_epochs: int = 30
    output_dir: str = ""
    ckpt_every: int = 10
    log_every: int = 5
    evaluate: bool = True
    eval_max_per_category: int = 0
    recipe: str = "manual"
    time_budget_min: int = 45
    runtime: str = ""

    @property
    def job_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def model_dir(self) -> Path:
        """The exported model folder the detector step rewrites at every checkpoint."""
        return self.job_dir / "detector" / "model"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingPlan":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def problems(self) -> list[str]:
        """What stops this plan from running, one sentence each (empty: it can run)."""
        out = []
        if self.dataset not in ("mvtec", "visa", "folder"):
            out.append(f"unknown dataset kind {self.dataset!r}")
        if not self.data_dir or not Path(self.data_dir).is_dir():
            out.append(f"the data folder {self.data_dir or '(none)'} does not exist")
        if self.test_dir and not Path(self.test_dir).is_dir():
            out.append(f"the test folder {self.test_dir} does not exist")
        if self.detector not in DETECTORS:
            out.append(f"unknown detector {self.detector!r}")
        elif self.model_size not in DETECTORS[self.detector][1]:
            out.append(f"{self.model_size} is not a {self.detector} model size")
        if self.center_size % 32 or self.center_size < 32:
            out.append(f"the crop size must be a multiple of 32 pixels, got {self.center_size}")
        if self.image_size < self.center_size:
            out.append(f"the image size ({self.image_size}) must be at least the crop size ({self.center_size})")
        if self.nproc < 1:
            out.append("at least one process is needed")
        elif self.batch_size % self.nproc:
            out.append(f"the batch size {self.batch_size} must be divisible by the {self.nproc} processes")
        if self.epochs < 1:
            out.append("at least one epoch is needed")
        if self.recipe not in RECIPES:
            out.append(f"unknown recipe {self.recipe!r}")
        if self.recipe == "fit" and self.time_budget_min < 2:
            out.append("the time budget must be at least 2 minutes")
        if self.runtime and self.runtime not in CANDIDATE_NAMES:
            out.append(f"unknown runtime {self.runtime!r} (one of {', '.join(CANDIDATE_NAMES)})")
        if self.vae and not Path(self.vae).is_dir():
            out.append(f"the VAE folder {self.vae} does not exist")
        if not self.output_dir:
            out.append("choose an output folder")
        if not self.name or any(c in self.name for c in '/\\:*?"<>|'):
            out.append(f"the model name {self.name!r} must be a plain folder name")
        return out


@dataclass
class TrainingStep:
    """One process of a job. kind: 'vae' | 'classifier' | 'detector' | 'calibrate' | 'evaluate'; argv: the
    exact command; events / log: where it reports; output: the folder it produces."""

    kind: str
    argv: list[str]
    events: Path
    log: Path
    output: Path

    @property
    def title(self) -> str:
        return STEP_TITLES[self.kind]

    @property
    def resumable(self) -> bool:
        """Whether a stopped run of this step continues from its checkpoint (else it starts over)."""
        return self.kind in ("vae", "detector")


def default_settings(device: str, detector: str = "deco-diff", gpus: int = 0) -> dict:
    """Sensible TrainingPlan values for a CPU or a CUDA machine (sizes, epochs, batch, processes).

    CPU: the small models, 256-px crops trained on 16x16 latent windows, one process per two
    cores with one OpenMP thread each. CUDA: the reference's settings, one process per GPU."""
    _, _, cpu_size, cuda_size = DETECTORS[detector]
    if device == "cuda":
        return {"device": "cuda", "nproc": max(1, gpus), "model_size": cuda_size, "epochs": 800,
                "batch_size": 32 * max(1, gpus), "lr": 1e-4, "mask_ratio": 0.7, "image_size": 288,
                "center_size": 256, "latent_crop": 0, "threads_per_process": 4, "vae_epochs": 40,
                "ckpt_every": 10}
    cores = os.cpu_count() or 2
    nproc = max(1, min(4, cores // 2))
    return {"device": "cpu", "nproc": nproc, "model_size": cpu_size, "epochs": 200,
            "batch_size": 8 * nproc, "lr": 1e-4, "mask_ratio": 0.7, "image_size": 288, "center_size": 256,
            "latent_crop": 16, "threads_per_process": max(1, cores // nproc // 2), "vae_epochs": 20,
            "ckpt_every": 10}


def build_steps(plan: TrainingPlan, classes: int | None = None,
                has_test_images: bool | None = None) -> list[TrainingStep]:
    """The exact command line of every step of `plan`, in the order they run: torchrun through
    the running interpreter (or the bundle's binary, `training.launch.python_module_command`).

    classes: how many categories the data has (the classifier is trained only for 2 or more);
    has_test_images: whether the evaluation step runs (None: when the plan asks for it)."""
    from training.launch import python_module_command

    job = plan.job_dir
    data = ["--dataset", plan.dataset, "--data-dir", str(plan.data_dir)]
    test = ["--test-dir", str(plan.test_dir)] if plan.dataset == "folder" and plan.test_dir else []
    category = ["--object-category", plan.category]
    sizes = ["--image-size", str(plan.image_size), "--center-size", str(plan.center_size)]
    device = ["--device", plan.device]
    runtime_name, _, precision = plan.runtime.partition(" ")
    runtime = ["--runtime", runtime_name, "--precision", precision] if plan.runtime else []
    steps: list[TrainingStep] = []

    def step(kind: str, module: str, args: list[str], output: Path, nproc: int | None = None,
             torchrun: bool = True) -> None:
        events = job / "events" / f"{kind}.jsonl"
        argv = python_module_command(module, [*args, "--events", str(events)],
                                     nproc=(nproc or plan.nproc) if torchrun else None)
        steps.append(TrainingStep(kind, argv, events, job / "logs" / f"{kind}.log", output))

    vae = plan.vae
    if not vae and plan.train_vae:   # the shipped VAE, fine-tuned on the good images
        out = job / "vae"
        step("vae", "training.train_vae", [*data, *category, *sizes, "--out", str(out), "--init", str(SHIPPED_VAE),
                                           "--epochs", str(plan.vae_epochs),
                                           "--batch-size", str(plan.batch_size),
                                           "--crop", str(min(128, plan.center_size)), "--resume", "auto",
                                           "--extra-images", "skimage", "--line-augment", "0.5", *device], out)
        vae = str(out)
    vae = vae or str(SHIPPED_VAE)
    run_eval = plan.evaluate if has_test_images is None else (plan.evaluate and has_test_images)
    classifier = None
    if plan.recipe == "fit":
        # the automatic recipe: one training.fit process (its own classifier, the UNet under
        # torchrun, held-out selection, map normalization and threshold; the shipped VAE unless
        # one was chosen or trained above)
        args = [*data, *test, *category, *sizes, "--out", str(plan.model_dir), "--time-budget",
                f"{plan.time_budget_min}m", "--nproc", str(plan.nproc), "--detector", plan.detector,
                "--no-evaluate", *device, *runtime]
        step("detector", "training.fit", args + ["--vae", vae], plan.model_dir, torchrun=False)
    else:
        wants_classifier = plan.train_classifier and plan.dataset != "folder" and plan.category == "all"
        if wants_classifier and (classes is None or classes >= 2):
            classifier = job / "classifier"
            step("classifier", "training.train_classifier",
                 [*data, *category, "--out", str(classifier), "--epochs", str(plan.classifier_epochs),
                  "--batch-size", str(plan.batch_size), "--image-size", str(min(256, plan.center_size)), *device],
                 classifier)
        module = DETECTORS[plan.detector][0]
        warmup = min(10, max(1, plan.epochs // 20))
        args = [*data, *test, *category, "--model-size", plan.model_size, *sizes, "--epochs", str(plan.epochs),
                "--warmup-epochs", str(warmup), "--global-batch-size", str(plan.batch_size), "--lr", f"{plan.lr:g}"]
        if plan.detector == "deco-diff":
            args += ["--mask-ratio", f"{plan.mask_ratio:g}"]
        if plan.latent_crop:
            args += ["--latent-crop", str(plan.latent_crop)]
        args += ["--vae", vae]
        if classifier is not None:
            args += ["--classifier", str(classifier)]
        args += ["--experiment-dir", str(job / "detector"), "--resume", "auto", "--ckpt-every",
                 str(plan.ckpt_every), "--log-every", str(plan.log_every), *device]
        step("detector", module, args, plan.model_dir)
    if run_eval and classifier is not None and plan.detector == "deco-diff":
        # several products: scale each one's scores so that one threshold fits all, from the
        # test split's good images (the UNet never trained on them); one process
        step("calibrate", "training.calibrate_scores",
             ["--model", str(plan.model_dir), *data, "--split", "test", *device], plan.model_dir, nproc=1)
    if plan.recipe != "fit":
        # calibration images beside the model (OpenVINO int8, the machine default's check) and the
        # runtime asked for (fit does both itself)
        step("runtime", "training.calibrate_runtime", ["--model", str(plan.model_dir), *data, *category, "--images-only",
                                                      *runtime],
             plan.model_dir, torchrun=False)
    if run_eval:
        out = job / "evaluation"
        evaluate = ["--model", str(plan.model_dir), *data, *test, *category, "--out", str(out), "--record",
                    "--batch-size", "4", *device]
        if plan.eval_max_per_category:
            evaluate += ["--max-per-category", str(plan.eval_max_per_category)]
        step("evaluate", "training.evaluate", evaluate, out)
    return steps


def format_command(argv: list[str]) -> str:
    """A command line to copy into a shell (POSIX quoting)."""
    return shlex.join(argv)


def step_environment(plan: TrainingPlan) -> dict[str, str]:
    """Variables the steps run with on top of the app's environment: OpenMP threads per process,
    unbuffered output, no Hugging Face downloads."""
    return {"OMP_NUM_THREADS": str(plan.threads_per_process), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}



@dataclass
class TrainingJob:
    """One queued, running or finished plan. `step` indexes `steps` (the one running or next);
    `progress` is rebuilt from the event files, never stored."""

    plan: TrainingPlan
    steps: list[TrainingStep]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = QUEUED
    step: int = 0
    message: str = ""
    created: float = field(default_factory=time.time)
    ended: float | None = None
    registered: str = ""
    threshold: float | None = None
    pid: int | None = None
    progress: dict[str, StepProgress] = field(default_factory=dict)
    log_tail: deque = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))

    @property
    def current(self) -> TrainingStep | None:
        return self.steps[self.step] if self.step < len(self.steps) else None

    def progress_of(self, kind: str) -> StepProgress:
        if kind not in self.progress:
            self.progress[kind] = StepProgress(kind)
        return self.progress[kind]

    def step_by_kind(self, kind: str) -> TrainingStep | None:
        return next((s for s in self.steps if s.kind == kind), None)

    @property
    def metrics(self) -> dict | None:
        """metrics.json of the evaluation step, when it ran."""
        step = self.step_by_kind("evaluate")
        path = step.output / "metrics.json" if step else None
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def model_ready(self) -> bool:
        return (self.plan.model_dir / "model.json").is_file()

    def reload(self) -> None:
        """Rebuild progress and the log tail from the files on disk."""
        self.progress = {}
        for s in self.steps:
            tail = EventTail(s.events)
            prog = self.progress_of(s.kind)
            for ev in tail.read():
                prog.feed(ev)
        self.log_tail.clear()
        step = self.current or (self.steps[-1] if self.steps else None)
        if step is not None and step.log.is_file():
            try:
                lines = step.log.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self.log_tail.extend(lines[-LOG_TAIL_LINES:])

    def to_dict(self) -> dict:
        return {"id": self.id, "plan": self.plan.to_dict(), "state": self.state, "step": self.step,
                "message": self.message, "created": self.created, "ended": self.ended,
                "registered": self.registered, "threshold": self.threshold, "pid": self.pid,
                "steps": [{"kind": s.kind, "argv": s.argv, "events": str(s.events), "log": str(s.log),
                           "output": str(s.output)} for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingJob":
        steps = [TrainingStep(s["kind"], list(s["argv"]), Path(s["events"]), Path(s["log"]), Path(s["output"]))
                 for s in data.get("steps", [])]
        job = cls(TrainingPlan.from_dict(data.get("plan", {})), steps, id=str(data["id"]),
                  state=str(data.get("state", STOPPED)), step=int(data.get("step", 0)),
                  message=str(data.get("message", "")), created=float(data.get("created", time.time())),
                  ended=data.get("ended"), registered=str(data.get("registered", "")),
                  threshold=data.get("threshold"), pid=data.get("pid"))
        return job


def leftover_process(job: TrainingJob) -> int | None:
    """The pid of this job's step process when it still runs outside this app (the app was killed
    while training), else None. POSIX only: Linux checks the process's command line for the job
    folder; elsewhere a live pid counts."""
    pid = job.pid
    if not pid or os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OSError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.is_dir():
        try:
            return pid if str(job.plan.job_dir).encode() in cmdline.read_bytes() else None
        except OSError:
            return None
    return pid


class JobStore:
    """The job list as JSON (written atomically). A job that was running when the app went away
    comes back as stopped: Resume continues it from its last checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> tuple[list[TrainingJob], str]:
        """(jobs, problem): problem is '' or one sentence about an unreadable file (kept aside)."""
        if not self.path.is_file():
            return [], ""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            jobs = [TrainingJob.from_dict(d) for d in data.get("jobs", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = self.path.with_suffix(f".unreadable-{int(time.time())}.json")
            try:
                self.path.replace(aside)
            except OSError:
                aside = self.path
            return [], f"the training job list {self.path} could not be read ({e}); it was moved to {aside}"
        for job in jobs:
            if job.state in (*ACTIVE_STATES, QUEUED):
                was = job.state
                job.state = STOPPED
                job.message = ("The app was closed while this job was running; Resume continues from its last "
                               "checkpoint." if was != QUEUED else "The app was closed before this job started.")
                leftover = leftover_process(job)
                if was != QUEUED and leftover:
                    job.message = (f"The app was closed while this job was running and its process {leftover} is "
                                   "still running; Resume is possible once it has ended.")
            job.reload()
        return jobs, ""

    def save(self, jobs: list[TrainingJob]) -> None:
        from engine.checkpoint import atomic_write_bytes

        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": 1, "jobs": [j.to_dict() for j in jobs]}, indent=1)
        atomic_write_bytes(self.path, payload.encode("utf-8"))


def suggested_threshold(metrics: dict | None) -> float | None:
    """The threshold an evaluation suggests: the F1-optimal score when there are defects with
    masks, else the 99% quantile of the good images' scores."""
    if not metrics:
        return None
    s = metrics.get("suggested_threshold") or {}
    for key in ("f1_optimal", "good_quantile"):
        value = finite_or_none(s.get(key))
        if value is not None:
            return value
    return None


def register_model(model_dir: Path, models_root: Path, name: str, threshold: float | None) -> Path:
    """Copy a trained model folder into the app's model list (`models_root/name`, '-2', '-3' ...
    when taken), storing `threshold` as its default; returns the new folder."""
    from engine.checkpoint import read_model_json, write_model_json

    model_dir = Path(model_dir)
    meta = read_model_json(model_dir)
    models_root.mkdir(parents=True, exist_ok=True)
    target, k = models_root / name, 1
    while target.exists():
        k += 1
        target = models_root / f"{name}-{k}"
    tmp = models_root / f".{target.name}.copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    if threshold is not None:
        meta.setdefault("settings", {})["threshold"] = round(float(threshold), 6)
    meta["registered"] = {"from": str(model_dir), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "threshold": threshold}
    meta.pop("format", None)
    meta.pop("format_version", None)
    write_model_json(tmp, meta)
    tmp.rename(target)
    return target


def model_threshold(model_dir: Path) -> float:
    """The threshold stored in a model folder (the trainer's default), else DEFAULT_THRESHOLD."""
    try:
        from engine.checkpoint import read_model_json

        return float(read_model_json(model_dir).get("settings", {}).get("threshold", DEFAULT_THRESHOLD))
    except Exception:  # noqa: BLE001 - no model yet
        return DEFAULT_THRESHOLD
