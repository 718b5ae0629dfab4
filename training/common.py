"""Shared pieces of the training entry points: process group, events, schedules, checkpoints.

Every entry point runs the same way under `torchrun --nproc_per_node=N -m training.<name>` and
as a plain process: gloo on CPU, nccl on CUDA, rank 0 writes checkpoints and events.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from engine.checkpoint import atomic_torch_save, safe_torch_load
from engine.defaults import DEFAULT_THRESHOLD

from .events import ERROR as ERROR_EVENT
from .events import EVENTS

__all__ = [
    "DistContext",
    "setup_distributed",
    "cleanup_distributed",
    "EventLog",
    "warmup_cosine_factor",
    "make_lr_scheduler",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "str2bool",
    "next_experiment_dir",
    "experiment_dir",
    "per_rank_batch",
    "TrainingRun",
    "start_training_run",
    "make_optimizer",
    "run_monitored_epochs",
    "detector_training_data",
    "seed_for",
    "run_entry",
    "run_reporting_errors",
    "add_run_arguments",
    "add_data_arguments",
    "add_detector_training_arguments",
    "add_selection_arguments",
]


def user_errors() -> tuple[type[BaseException], ...]:
    """Faults of the user's input that end a command with one line each, not a traceback: bad
    arguments, layouts and model folders (ValueError and its kinds), missing and unreadable files."""
    from engine.imageio import ImageReadError as FrameReadError

    from .datasets import ImageReadError

    return (ValueError, FileNotFoundError, ImageReadError, FrameReadError)


def run_reporting_errors(prog: str, events: "EventLog", body) -> int:
    """`body()`'s exit code; a `user_errors()` fault is printed as `prog: error: ...` lines on
    stderr and one `error` event, exit code 2; anything else is an `error` event and re-raised."""
    try:
        return body()
    except user_errors() as e:
        lines = str(e).splitlines() or [type(e).__name__]
        events.emit("error", message=lines[0])
        for line in lines:
            print(f"{prog}: error: {line}", file=sys.stderr)
        return 2
    except Exception as e:
        events.emit("error", message=f"{type(e).__name__}: {e}")
        raise


def run_entry(prog: str, argv: list[str] | None, build_parser, body, distributed: bool = True,
              user_errors_exit: bool = True) -> int:
    """The one `main()` of the training commands: parse `argv` with `build_parser()`, set up the
    process group on `args.device` (torchrun; `distributed` False: none, ctx None), open the event
    log (`args.events`, rank 0 only), run `body(args, ctx, events)` and close both whatever happens.
    user_errors_exit: a `user_errors()` fault ends the command with `prog: error:` lines and exit
    code 2 (`run_reporting_errors`); False: every fault is one `error` event and is re-raised
    (the traceback goes to stderr)."""
    args = build_parser().parse_args(argv)
    ctx = setup_distributed(args.device) if distributed else None
    events = EventLog(args.events, enabled=ctx is None or ctx.is_main)
    try:
        if user_errors_exit:
            return run_reporting_errors(prog, events, lambda: body(args, ctx, events))
        try:
            return body(args, ctx, events)
        except Exception as e:  # reported as one event; the traceback goes to stderr
            events.emit(ERROR_EVENT, message=f"{type(e).__name__}: {e}")
            raise
    finally:
        events.close()
        if distributed:
            cleanup_distributed()


def add_data_arguments(p: argparse.ArgumentParser, datasets: tuple[str, ...] = ("mvtec", "visa", "folder"),
                       default: str = "mvtec") -> None:
    """--dataset (a layout among `datasets`), --data-dir (required) and --object-category."""
    p.add_argument("--dataset", choices=list(datasets), default=default)
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (folder: the good images)")
    p.add_argument("--object-category", default="all", help="a category name, a comma list, or all")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --events, which every training command takes."""
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    p.add_argument("--events", type=Path, default=None, help="append JSON-line events here (for the wizard)")


def add_detector_training_arguments(p: argparse.ArgumentParser, sizes, default_size: str, global_batch_size: int,
                                    accumulation_steps: int, results_name: str) -> None:
    """The arguments both detector trainers (train_deco_diff, train_diad) take: data, preprocessing,
    schedule, VAE, outputs, checkpoints, run and held-out selection (`add_selection_arguments`)."""
    p.add_argument("--dataset", choices=["mvtec", "visa", "folder"], default="mvtec")
    p.add_argument("--data-dir", type=Path, default=Path("./mvtec-dataset/"),
                   help="dataset root (for --dataset folder: the folder of good images)")
    p.add_argument("--test-dir", type=Path, default=None, help="--dataset folder: optional test folder")
    p.add_argument("--object-category", default="all", help="a category name, a comma list, or all")
    p.add_argument("--model-size", choices=sizes, default=default_size)
    p.add_argument("--image-size", type=int, default=288)
    p.add_argument("--center-size", type=int, default=256)
    p.add_argument("--resize-filter", choices=["bicubic", "bilinear"], default="bicubic",
                   help="resize filter, stored in the model so inference uses the same one")
    p.add_argument("--epochs", type=int, default=800)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--global-batch-size", type=int, default=global_batch_size)
    p.add_argument("--accumulation-steps", type=int, default=accumulation_steps)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--augmentation", type=str2bool, default=True)
    p.add_argument("--global-seed", type=int, default=1000)
    p.add_argument("--vae", default=None, help="VAE folder (our compact VAE or a diffusers SD VAE) or a cached HF id")
    p.add_argument("--vae-type", choices=["ema", "mse"], default="ema",
                   help="Stable-Diffusion VAE from the local Hugging Face cache when --vae is not given")
    p.add_argument("--classifier", type=Path, default=None, help="classifier folder to bundle into the exported model")
    p.add_argument("--cache-latents", type=str2bool, default=True,
                   help="encode each image once per augmentation variant (exact for the reference augmentation)")
    p.add_argument("--latent-crop", type=int, default=0,
                   help="train on random NxN crops of the model input (0: whole); the network is convolutional, "
                        "so CPU training can use e.g. 16 (4x fewer pixels, 16x cheaper attention)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help=f"default: results/{results_name}_{{dataset}}_{{category}}_{{size}}_{{center}}")
    p.add_argument("--experiment-dir", type=Path, default=None, help="exact output folder (no numbering)")
    p.add_argument("--resume", default="", help="a checkpoint to continue from, or 'auto' (last.pt of the experiment dir)")
    p.add_argument("--ckpt-every", type=int, default=10, help="epochs between checkpoints")
    p.add_argument("--log-every", type=int, default=20, help="steps between step events")
    p.add_argument("--num-workers", type=int, default=0)
    add_run_arguments(p)
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="threshold stored in the exported model")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    add_selection_arguments(p)


def str2bool(text: str) -> bool:
    """argparse type for the reference's true/false flags."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def setup_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA);
    otherwise a single process. `device`: 'cpu', 'cuda' or None (CUDA when present)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        dev = torch.device("cpu")
    backend = None
    if world > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world, device=dev, backend=backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_for(global_seed: int, ctx: DistContext, epoch: int = 0) -> int:
    """The reference's per-rank seed (global_seed * world + rank), offset per epoch so that a
    resumed run draws the same numbers as an uninterrupted one."""
    return global_seed * ctx.world_size + ctx.rank + 100_003 * epoch


class EventLog:
    """One JSON object per line (started, step, epoch, checkpoint, evaluation, finished, error)
    for the training wizard; rank 0 only. Each line is flushed as it is written."""

    def __init__(self, path: Path | None, enabled: bool = True):
        self.path = Path(path) if path else None
        self.enabled = enabled and self.path is not None
        self._file = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def emit(self, event: str, **fields) -> None:
        """Write one event (a name from training.events.EVENTS, the schema the wizard reads)."""
        if event not in EVENTS:
            raise ValueError(f"unknown training event {event!r}; the names are listed in training.events")
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def warmup_cosine_factor(epoch_index: int, warmup_epochs: int, total_epochs: int) -> float:
    """Learning-rate factor for 0-based epoch `epoch_index`: linear warm-up reaching 1 at the
    end of warm-up, then half a cosine over `total_epochs`.

    The reference evaluates this schedule one epoch late (its epoch 1 runs at lr 0); here
    epoch k uses the factor of k + 1, so the first epoch already trains."""
    k = epoch_index + 1
    if k < warmup_epochs:
        return k / max(1, warmup_epochs)
    progress = (k - warmup_epochs) / max(1, total_epochs - warmup_epochs)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class WarmupCosine:
    """`warmup_cosine_factor` as a LambdaLR callable whose length (`total_epochs`) can be changed
    mid-run (a time budget fixes the epoch count after the first epoch); LambdaLR saves and
    restores its attributes with the scheduler's state."""

    def __init__(self, warmup_epochs: int, total_epochs: int):
        self.warmup_epochs, self.total_epochs = warmup_epochs, total_epochs

    def __call__(self, epoch_index: int) -> float:
        return warmup_cosine_factor(epoch_index, self.warmup_epochs, self.total_epochs)


def make_lr_scheduler(optimizer, warmup_epochs: int, total_epochs: int):
    """LambdaLR stepped once per epoch with `warmup_cosine_factor` (a `WarmupCosine`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_epochs, total_epochs))


def save_training_checkpoint(path: Path, model_state: dict, optimizer, scheduler, epoch: int,
                             args: argparse.Namespace, extra: dict | None = None) -> None:
    """The reference layout {model, opt, scheduler, epoch, args}, written atomically."""
    state = {"model": {k.removeprefix("module."): v.detach().cpu() for k, v in model_state.items()},
             "opt": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else {},
             "epoch": epoch, "args": argparse.Namespace(**{k: (str(v) if isinstance(v, Path) else v)
                                                         for k, v in vars(args).items()})}
    if extra:
        state.update(extra)
    atomic_torch_save(state, path)


def load_training_checkpoint(path: Path) -> dict:
    """Read a training checkpoint safely (weights_only; argparse.Namespace allowed)."""
    return safe_torch_load(Path(path))


def next_experiment_dir(results_dir: Path, name: str) -> Path:
    """{results_dir}/{NNN}-{name}, NNN = number of entries + 1 (the reference's numbering)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    index = len([p for p in results_dir.iterdir() if not p.name.startswith(".")]) + 1
    path = results_dir / f"{index:03d}-{name}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def is_interactive() -> bool:
    return sys.stderr.isatty()


def detector_training_data(args):
    """(training split, its preprocessing, the category label of folder names) named by a detector
    trainer's arguments (`add_detector_training_arguments`); augmentation in the loader only when
    the latents are not cached (the cache holds the augmented variants)."""
    from engine.preprocess import PreprocessConfig

    from .datasets import build_dataset

    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    preprocess = PreprocessConfig(image_size=args.image_size, center_size=args.center_size,
                                  resize_filter=args.resize_filter)
    dataset = build_dataset(args.dataset, args.data_dir, categories, "train", preprocess,
                            augment=args.augmentation and not args.cache_latents, test_dir=args.test_dir)
    return dataset, preprocess, args.object_category.replace(",", "+")


class TrainingRun(NamedTuple):
    """Where a detector trainer's run lives and what it starts from (see `start_training_run`)."""

    exp_dir: Path
    ckpt_dir: Path
    events: "EventLog"
    resume_path: Path | None
    held_out: list | None
    clock_start: float


def start_training_run(args, ctx: DistContext, dataset, category_label: str, name: str) -> TrainingRun:
    """The run folder (`experiment_dir`, agreed by all ranks), its checkpoints folder, the event log
    (rank 0), the checkpoint to resume from, the held-out good images (`hold_out`) and the clock the
    time budget counts from."""
    exp_dir = shared_experiment_dir(ctx, lambda: experiment_dir(args, category_label, name))
    ckpt_dir = exp_dir / "checkpoints"
    events = EventLog(args.events, enabled=ctx.is_main)
    resume_path = resume_checkpoint_path(args.resume, ckpt_dir)
    held_out = hold_out(args, dataset, exp_dir, ctx)
    return TrainingRun(exp_dir, ckpt_dir, events, resume_path, held_out, time.perf_counter())


def run_monitored_epochs(args, ctx: DistContext, model, opt, scheduler, loader, sampler, start_epoch: int,
                         run: TrainingRun, monitor, batch_loss, save_checkpoint) -> int:
    """`run_epochs` for a detector trainer: the EpochMonitor `monitor` validates, selects, keeps the
    time budget and stops early; the run's event log is closed at the end, whatever happens."""
    try:
        return run_epochs(args, ctx, model, opt, scheduler, loader, sampler, start_epoch, run.events, batch_loss,
                          save_checkpoint, run.exp_dir, run.ckpt_dir, end_of_epoch=monitor.end_of_epoch,
                          on_finish=monitor.on_finish)
    finally:
        run.events.close()


def make_optimizer(args, model, unet, resume_path: Path | None, schedule_epochs: int):
    """(AdamW, warm-up cosine schedule over `schedule_epochs`, the epoch to start from): both detector
    trainers' optimisation, restored from `resume_path` when there is one."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = make_lr_scheduler(opt, args.warmup_epochs, schedule_epochs)
    return opt, scheduler, restore_training_state(resume_path, unet, opt, scheduler)


def per_rank_batch(global_batch: int, ctx: DistContext, option: str = "--global-batch-size") -> int:
    """Images per process of a global batch; ValueError naming `option` when the processes cannot share
    it evenly."""
    if global_batch % ctx.world_size:
        raise ValueError(f"{option} {global_batch} is not divisible by {ctx.world_size} processes")
    return global_batch // ctx.world_size


def experiment_dir(args, category_label: str, name: str) -> Path:
    """A trainer's output folder: --experiment-dir as given, the folder of a --resume checkpoint, or
    the next numbered folder under --results-dir (default results/<name>_<dataset>_<category>_<size>_<center>)."""
    if args.experiment_dir:
        args.experiment_dir.mkdir(parents=True, exist_ok=True)
        return args.experiment_dir
    if args.resume and args.resume != "auto":
        return Path(args.resume).resolve().parent.parent
    results = args.results_dir or Path("results") / (
        f"{name}_{args.dataset}_{category_label}_{args.model_size}_{args.center_size}")
    return next_experiment_dir(results, args.model_size)


def shared_experiment_dir(ctx: DistContext, make_dir) -> Path:
    """Rank 0 creates the experiment folder (`make_dir()`); every rank gets its path."""
    exp_dir = make_dir() if ctx.is_main else None
    if ctx.distributed:
        shared = [str(exp_dir) if exp_dir else None]
        dist.broadcast_object_list(shared, src=0)
        exp_dir = Path(shared[0])
    return Path(exp_dir)


def resume_checkpoint_path(resume: str, ckpt_dir: Path) -> Path | None:
    """--resume: '' (none), 'auto' (ckpt_dir/last.pt when it exists) or a checkpoint path."""
    if resume == "auto":
        candidate = ckpt_dir / "last.pt"
        return candidate if candidate.is_file() else None
    return Path(resume) if resume else None


def wrap_ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around `module` when running with several ranks."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def restore_training_state(path: Path | None, model: torch.nn.Module, optimizer, scheduler) -> int:
    """Load model, optimizer and scheduler from a training checkpoint; returns its epoch
    (0 when `path` is None)."""
    if path is None:
        return 0
    state = load_training_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["opt"])
    if state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])


def write_args(exp_dir: Path, args: argparse.Namespace) -> None:
    """args.txt (JSON) in the experiment folder, as the reference writes it."""
    (exp_dir / "args.txt").write_text(
        json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2),
        encoding="utf-8")


def broadcast_object(ctx: DistContext, value):
    """Rank 0's `value` (any picklable object) on every rank."""
    if not ctx.distributed:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def ctx_any(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when any rank asked to stop (so all ranks stop at the same step)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def run_epochs(args: argparse.Namespace, ctx: DistContext, model: torch.nn.Module, opt, scheduler, loader, sampler,
               start_epoch: int, events: EventLog, batch_loss, save_checkpoint, exp_dir: Path, ckpt_dir: Path,
               end_of_epoch=None, on_finish=None) -> int:
    """The epoch loop every trainer shares: per-epoch seeding, gradient accumulation, step/epoch
    events, checkpoints every `args.ckpt_every` epochs and at the end, and a graceful stop on
    SIGTERM/SIGINT (or `args.max_steps`) that writes a checkpoint first.

    batch_loss(batch, generator) -> (loss tensor, number of samples) for one loader batch;
    save_checkpoint(epoch, numbered) writes last.pt (+ epoch-N.pt when numbered) and the model
    folder, on rank 0. Uses args.epochs, accumulation_steps, log_every, ckpt_every, max_steps and
    global_seed. A stop asked for on an epoch's last step still completes that epoch.
    end_of_epoch(epochs_done, epoch_seconds) -> a reason to stop (str) or None, called on every
    rank after each complete epoch (it may lower args.epochs: the loop reads it every epoch; rank
    0's answer counts). on_finish(epochs_done, reason) runs on rank 0 after the last checkpoint.
    Returns 0."""
    import numpy as np
    from tqdm import tqdm

    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    steps_per_epoch = math.ceil(len(loader) / args.accumulation_steps)
    global_step = start_epoch * steps_per_epoch
    epoch = start_epoch
    last_saved = start_epoch
    try:
        epoch = start_epoch - 1
        while epoch + 1 < args.epochs:
            epoch += 1
            sampler.set_epoch(epoch)
            model.train()
            # Every epoch's randomness (dropout included) comes from its own seed, so a resumed run
            # continues exactly as an uninterrupted one would.
            torch.manual_seed(seed_for(args.global_seed, ctx, epoch))
            gen = torch.Generator().manual_seed(seed_for(args.global_seed, ctx, epoch))
            t0 = time.perf_counter()
            window_t, window_n = time.perf_counter(), 0
            losses = []
            completed = False
            opt.zero_grad(set_to_none=True)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not ctx.is_main, leave=False,
                       file=sys.stderr)
            for i, batch in enumerate(bar):
                loss, count = batch_loss(batch, gen)
                (loss / args.accumulation_steps).backward()
                losses.append(loss.item())
                window_n += count
                last_in_epoch = completed = i + 1 == len(loader)
                if (i + 1) % args.accumulation_steps == 0 or last_in_epoch:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    global_step += 1
                    if global_step % args.log_every == 0 or last_in_epoch:
                        rate = window_n * ctx.world_size / max(time.perf_counter() - window_t, 1e-9)
                        mean_loss = ctx.all_reduce_mean(
                            float(np.mean(losses[-args.accumulation_steps * args.log_every:])))
                        events.emit("step", epoch=epoch + 1, step=global_step, loss=mean_loss,
                                    images_per_s=rate, images_per_s_per_rank=rate / ctx.world_size,
                                    lr=opt.param_groups[0]["lr"])
                        if ctx.is_main:
                            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.1f}")
                        window_t, window_n = time.perf_counter(), 0
                    if args.max_steps and global_step >= args.max_steps:
                        stop["requested"] = True
                if stop["requested"]:
                    break
            bar.close()
            finished_epoch = completed
            if finished_epoch:
                scheduler.step()
            epoch_loss = ctx.all_reduce_mean(float(np.mean(losses)) if losses else float("nan"))
            seconds = time.perf_counter() - t0
            done = epoch + 1 if finished_epoch else epoch
            events.emit("epoch", epoch=epoch + 1, epochs=args.epochs, loss=epoch_loss, seconds=seconds,
                        eta_s=seconds * (args.epochs - epoch - 1), lr=opt.param_groups[0]["lr"],
                        complete=finished_epoch)
            if ctx.is_main:
                print(f"epoch {epoch + 1}/{args.epochs}  loss {epoch_loss:.5f}  {seconds:.1f}s", file=sys.stderr)
            reason = end_of_epoch(done, seconds) if end_of_epoch is not None and finished_epoch else None
            ending = ctx_any(ctx, reason is not None)
            if ending:
                reason = broadcast_object(ctx, reason)
                args.epochs = done
            want_ckpt = finished_epoch and ((epoch + 1) % args.ckpt_every == 0 or epoch + 1 == args.epochs)
            stopping = ctx_any(ctx, stop["requested"])
            if want_ckpt or stopping:
                if ctx.is_main:
                    save_checkpoint(done, numbered=want_ckpt)
                last_saved = done
                ctx.barrier()
            if stopping:
                events.emit("stopped", epoch=done, checkpoint=str(ckpt_dir / "last.pt"))
                return 0
            if ending:
                events.emit("early_stop", epoch=done, reason=reason)
                if ctx.is_main:
                    print(f"stopping after epoch {done}: {reason}", file=sys.stderr)
        if last_saved != args.epochs and ctx.is_main and epoch + 1 == args.epochs:
            save_checkpoint(args.epochs, numbered=True)
        if on_finish is not None and ctx.is_main:
            on_finish(args.epochs)
        ctx.barrier()
        events.emit("finished", epoch=args.epochs, model_dir=str(exp_dir / "model"),
                    checkpoint=str(ckpt_dir / "last.pt"))
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- held-out selection and time budget
HOLDOUT_MIN = 8
MIN_TRAIN_IMAGES = 8
# A validation counts as better when the held-out loss falls by more than this share of the best.
MIN_IMPROVEMENT = 0.01
HOLDOUT_FILE = "holdout.json"
# Early stopping waits until this share of the run's epochs is done. Before, the cosine schedule's
# learning rate is still high and a small held-out set's loss stalls for a few validations while the
# model still improves: the demo's fit (24 held-out parts) stopped at epoch 106 of 315 with 57 of
# its 90 minutes left, its held-out loss having fallen from 0.057 to 0.051 over the 20 epochs before.
EARLY_STOP_AFTER_SHARE = 0.5
# Patience grows with the run: at least this share of its epochs without a gain before it stops.
# A long run gains about 1 % per few epochs late in its schedule, fewer than 4 validations apart
# only by noise: the demo's 90-minute fit (24 held-out parts, 359 epochs fitted) stopped at epoch
# 228 after 8 epochs without a 1 % gain, its held-out loss having fallen from 0.0319 (epoch 206) to
# 0.0298 (epoch 220), and shipped a model below the previous one's pixel AUROC.
PATIENCE_SHARE = 0.1
BEST_CHECKPOINT = "best.pt"
# With a time budget, stop when less than this many epochs' time is left (so the budget holds).
TIME_BUDGET_STOP_SHARE = 1.0
# The epoch count fitted after the first epoch is fitted again from the average of the epochs after
# the first while the run is in this share of its epochs (a first epoch slowed by other work, or a machine that
# got busy, would otherwise waste or overrun the budget), when the new count differs by REFIT_SHARE.
REFIT_WINDOW = 1 / 3
REFIT_SHARE = 0.1


def fitted_epoch_count(done: int, seconds_left: float, seconds_per_epoch: float, limit: int) -> int:
    """Epochs a time budget allows in all: the `done` ones plus as many average epochs as fit in
    what is left, at most `limit`, never fewer than `done`."""
    return max(done, min(limit, done + int(max(seconds_left, 0.0) // max(seconds_per_epoch, 1e-9))))


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """--holdout, --holdout-min, --val-every, --patience and --time-budget (see `EpochMonitor`)."""
    p.add_argument("--holdout", type=float, default=0.0,
                   help="share of each category's good images held out for validation (0: none; e.g. 0.1); "
                        "they are listed in holdout.json (the map normalization and threshold use them)")
    p.add_argument("--holdout-min", type=int, default=HOLDOUT_MIN, help="held-out images per category at least")
    p.add_argument("--val-every", type=int, default=5, help="epochs between validations on the held-out images")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many validations without a better held-out loss (0: never)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds of training (latent caching included) to fit the epochs into (0: no budget); "
                        "after the first epoch the epoch count and learning-rate schedule are set to fit it")


def split_holdout(samples, share: float, minimum: int, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of `samples`: per category, a seeded choice of
    max(minimum, round(share * n)) good images is held out. Raises ValueError when fewer than
    MIN_TRAIN_IMAGES would be left to train on."""
    by_cat: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_cat.setdefault(s.category, []).append(i)
    train, held = [], []
    for k, (cat, indices) in enumerate(sorted(by_cat.items())):
        n_held = max(minimum, round(share * len(indices)))
        if len(indices) - n_held < MIN_TRAIN_IMAGES:
            raise ValueError(f"{cat}: {len(indices)} good images are too few to hold out {n_held} for validation "
                             f"and train on at least {MIN_TRAIN_IMAGES}; add images or use --holdout 0")
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed + k)).tolist()
        held += sorted(indices[j] for j in order[:n_held])
        train += sorted(indices[j] for j in order[n_held:])
    return sorted(train), sorted(held)


def hold_out(args: argparse.Namespace, dataset, exp_dir: Path, ctx: DistContext) -> list | None:
    """With --holdout: take the held-out records out of `dataset` (in place), list them in
    exp_dir/holdout.json (rank 0) and return them; None without --holdout."""
    if args.holdout <= 0:
        return None
    train_idx, held_idx = split_holdout(dataset.samples, args.holdout, args.holdout_min, args.global_seed)
    held = [dataset.samples[i] for i in held_idx]
    dataset.samples = [dataset.samples[i] for i in train_idx]
    if ctx.is_main:
        (exp_dir / HOLDOUT_FILE).write_text(json.dumps(
            [{"path": str(r.path), "category": r.category} for r in held], indent=1), encoding="utf-8")
    return held


def read_progress(resume_path: Path | None) -> dict:
    """The time, fitted epoch count and best validation a resumed run had reached."""
    if resume_path is None:
        return {}
    return dict(load_training_checkpoint(resume_path).get("progress") or {})


class EpochMonitor:
    """What a trainer does between epochs on the recipe's terms: held-out validation (every
    args.val_every epochs, `measure(unet) -> {"loss": ..., ...}` on rank 0), the best epoch kept as
    checkpoints/best.pt, early stopping after `patience()` validations without a gain of
    MIN_IMPROVEMENT (not before EARLY_STOP_AFTER_SHARE of the epochs), and the time budget
    (args.time_budget seconds, counted from `clock_start` plus what a resumed run had spent: after the first epoch the epoch count and the learning-rate
    schedule (`schedule_stretch` x the epochs, as the trainer built it) are fitted to it; a run
    stops when the next epoch would not fit). At the end the model folder is exported again from
    the best epoch (`export(unet, epoch, selected)`); `describe(stats)` adds to the printed line."""

    def __init__(self, args, ctx: DistContext, events: EventLog, unet, opt, scheduler, ckpt_dir: Path,
                 resume_path: Path | None, clock_start: float, measure=None, export=None, describe=None,
                 schedule_stretch: float = 1.0):
        self.args, self.ctx, self.events = args, ctx, events
        self.schedule_stretch = schedule_stretch  # the schedule spans this many times the epochs
        self.unet, self.opt, self.scheduler, self.ckpt_dir = unet, opt, scheduler, ckpt_dir
        self.measure, self.export, self.describe = measure, export, describe
        progress = read_progress(resume_path)
        if progress.get("epochs"):
            args.epochs = progress["epochs"]  # the epoch count a time budget fixed
        self.fixed = bool(progress.get("epochs"))
        self.best, self.best_epoch = progress.get("best"), int(progress.get("best_epoch") or 0)
        self.rounds_without_gain = 0
        self.spent_before = float(progress.get("seconds", 0.0))
        self.clock_start = clock_start
        self.loop_start: float | None = None
        self.loop_epochs = 0
        self.limit: int | None = None  # the epoch count asked for (a fitted count never exceeds it)
        self.first_epoch_end: float | None = None

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.clock_start

    def state(self) -> dict:
        """Checkpoint extra: what a resumed run needs to carry on."""
        return {"progress": {"seconds": self.elapsed(), "epochs": self.args.epochs if self.fixed else 0,
                             "best": self.best, "best_epoch": self.best_epoch}}

    def end_of_epoch(self, done: int, seconds: float) -> str | None:
        """`run_epochs`' end_of_epoch hook: a reason to stop, or None."""
        args = self.args
        if self.loop_start is None:
            self.loop_start = time.perf_counter() - seconds
        self.loop_epochs += 1
        if self.loop_epochs == 1:
            self.first_epoch_end = time.perf_counter()
        reason = None
        if args.time_budget:
            per_epoch = (time.perf_counter() - self.loop_start) / self.loop_epochs
            left = args.time_budget - self.elapsed()
            if not self.fixed:
                self.limit = args.epochs
                fitted = broadcast_object(self.ctx, fitted_epoch_count(done, left, per_epoch, self.limit))
                self.fixed = True
                self._set_epochs(fitted, per_epoch)
            elif done < args.epochs * REFIT_WINDOW and self.limit is not None:
                # from the epochs after the first (its start-up costs are not typical); every rank
                # takes rank 0's count (the collective runs on all ranks alike)
                recent = (time.perf_counter() - self.first_epoch_end) / (self.loop_epochs - 1)
                fitted = broadcast_object(self.ctx, fitted_epoch_count(done, left, recent, self.limit))
                if abs(fitted - args.epochs) >= REFIT_SHARE * args.epochs:
                    self._set_epochs(fitted, recent)
            if self.fixed and done < args.epochs and left < per_epoch * TIME_BUDGET_STOP_SHARE:
                reason = f"time budget of {args.time_budget:.0f} s reached"
        last = reason is not None or done >= args.epochs
        if self.measure is not None and self.ctx.is_main and (done % args.val_every == 0 or last):
            stats = self.measure(self.unet)
            improved = self.best is None or stats["loss"] < self.best * (1 - MIN_IMPROVEMENT)
            if improved:
                self.best, self.best_epoch, self.rounds_without_gain = stats["loss"], done, 0
                save_training_checkpoint(self.ckpt_dir / BEST_CHECKPOINT, self.unet.state_dict(), self.opt,
                                         self.scheduler, done, args, extra={"validation": stats, **self.state()})
            else:
                self.rounds_without_gain += 1
            if (args.patience and self.rounds_without_gain >= self.patience()
                    and done >= EARLY_STOP_AFTER_SHARE * args.epochs):
                reason = reason or (f"held-out loss has not improved for {self.rounds_without_gain} validations "
                                    f"(best {self.best:.4f} at epoch {self.best_epoch})")
            self.events.emit("validation", epoch=done, best_epoch=self.best_epoch, best=self.best, improved=improved,
                             **stats)
            extra = f", {self.describe(stats)}" if self.describe else ""
            print(f"validation after epoch {done}: held-out loss {stats['loss']:.4f} (best {self.best:.4f} "
                  f"at epoch {self.best_epoch}){extra}", file=sys.stderr)
        return reason

    def patience(self) -> int:
        """Validations without a gain that stop the run: args.patience, or PATIENCE_SHARE of the
        run's epochs when that is more."""
        return max(self.args.patience, math.ceil(PATIENCE_SHARE * self.args.epochs / max(self.args.val_every, 1)))

    def _set_epochs(self, epochs: int, per_epoch: float) -> None:
        """Fit the run (and its learning-rate schedule) to `epochs` epochs in all."""
        if epochs == self.args.epochs:
            return
        self.args.epochs = epochs
        self.scheduler.lr_lambdas[0].total_epochs = int(epochs * self.schedule_stretch)
        self.events.emit("epochs_fitted", epochs=epochs, seconds_per_epoch=per_epoch, budget_s=self.args.time_budget)

    def on_finish(self, epochs_done: int) -> None:
        """`run_epochs`' on_finish hook (rank 0): export the best epoch's weights as the model."""
        best_path = self.ckpt_dir / BEST_CHECKPOINT
        if self.measure is None or self.export is None or not best_path.is_file():
            return
        best = load_training_checkpoint(best_path)
        self.unet.load_state_dict(best["model"])
        stats = best.get("validation", {})
        self.export(self.unet, int(best["epoch"]), {"by": "held-out good images' loss", "epoch": int(best["epoch"]),
                                                    "epochs_trained": epochs_done, **stats})
        self.events.emit("selected", epoch=int(best["epoch"]), loss=stats.get("loss"))
