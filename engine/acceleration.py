"""Inference speed-ups that keep results the same: channels-last memory layout for the UNet,
CPU lanes (a batch split over single-threaded worker threads), an opt-in `torch.compile`
(inductor) with a fallback to eager execution, and for reduced precision on a CPU networks whose
convolution and linear weights are stored in the autocast dtype (`autocast_networks`).

What each one gives on the 2-core development CPU is measured by benchmarks/bench_engine.py
(`--variants plain,default,compile`); the README performance section has the figures.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Callable, Iterable

import torch
from torch import nn

__all__ = ["AUTOCAST_DTYPES", "CPU_COMPILE_OPTIONS", "CompiledOrEager", "CpuLanes", "autocast_networks", "autocast_weights",
           "cpu_description", "cpu_name", "in_chunks", "set_memory_format"]

log = logging.getLogger(__name__)

# autocast precision -> the dtype autocast runs convolutions and matrix products in
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# modules whose weights autocast casts to the lower precision on every call
_AUTOCAST_WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
# /proc/cpuinfo flag -> the reduced-precision arithmetic it gives (what decides bf16 / int8 speed)
CPU_ARITHMETIC_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512_vnni", "AVX-512 VNNI"),
                        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"))


def _cpuinfo_field(name: str) -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_description() -> str:
    """One line for benchmark tables: model name, reduced-precision units, core count; e.g.
    'AMD EPYC (AVX-512 BF16, AVX-512 VNNI, AVX2, no AMX), 2 cores'."""
    flags = set(_cpuinfo_field("flags").split())
    units = [label for flag, label in CPU_ARITHMETIC_FLAGS if flag in flags]
    if flags and "amx_bf16" not in flags:
        units.append("no AMX")
    text = ", ".join(units)
    return f"{cpu_name()} ({text or platform.machine()}), {os.cpu_count()} cores"


def set_memory_format(module: nn.Module, channels_last: bool) -> nn.Module:
    """Store the 4-D (convolution) weights of `module` in channels-last (NHWC) or the default
    contiguous (NCHW) layout, in place. Values are unchanged; only the strides differ."""
    return module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def autocast_weights(module: nn.Module, precision: str) -> nn.Module:
    """A copy of `module` whose convolution and linear weights and biases are stored in the dtype
    autocast gives those operators for `precision` ('bf16' / 'fp16'); norms keep float32.

    Run under the same autocast, the copy computes exactly what `module` computes (autocast casts
    every argument of those operators to that dtype anyway), without casting every weight on
    every call: on the 2-core AMX development CPU those casts were 1284 copies and about 14 % of a
    demo-model frame in bf16 (batch 1, one thread: 7.9 -> 8.7 frames/s, maps bit-identical)."""
    dtype = AUTOCAST_DTYPES[precision]
    low = deepcopy(module)
    for part in low.modules():
        if isinstance(part, _AUTOCAST_WEIGHT_MODULES):
            part.to(dtype)
    return low


def autocast_networks(unet: nn.Module, vae, settings, device: torch.device) -> tuple[Callable, Callable, Callable]:
    """The (UNet, VAE encode, VAE decode) callables a detector runs under the autocast of its
    `settings` (precision; runtime 'torch' when it has one): on a CPU with 'bf16' / 'fp16',
    copies with weights stored in that dtype (`autocast_weights`, taken now: later in-place
    changes to the weights are not seen); otherwise the networks themselves (CUDA casts weights
    cheaply, fp32 needs none, another runtime replaces the callables)."""
    precision = settings.precision if getattr(settings, "runtime", "torch") == "torch" else "fp32"
    if precision not in AUTOCAST_DTYPES or device.type != "cpu":
        return unet, vae.encode, vae.decode
    low_vae = autocast_weights(vae, precision)
    return autocast_weights(unet, precision), low_vae.encode, low_vae.decode


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int | None) -> torch.Tensor:
    """fn(x) computed on `size` samples at a time and concatenated (all at once when `size` is None).

    On a CPU the compact VAE is faster one image at a time: at 256 px its activations (16 x 256 x
    256 floats, 4 MB per image) stay in cache, while a batch of 16 streams through memory; on the
    2-core development CPU decoding took 59 ms per image one at a time against 99 ms per image in a
    batch of 16, encoding 21 against 37 ms."""
    if size is None or x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])


class CpuLanes:
    """`size` worker threads, each running PyTorch with one intra-op thread.

    A batch split into `size` parts and run side by side ("lanes") keeps every core busy with
    whole convolutions, GroupNorms and attention of its own samples; the alternative, each
    operator split over the cores by OpenMP, synchronises the cores after every one of the
    thousands of small operators of a UNet step and spins while the display thread or another
    program holds a core. The results are the same (each sample is computed on its own). The
    threads release the GIL inside every operator. Close with `close()` (also on garbage
    collection of the executor)."""

    def __init__(self, size: int):
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="cpu-lane",
                                        initializer=torch.set_num_threads, initargs=(1,))

    def map(self, fn: Callable, items: Iterable) -> list:
        """[fn(item) for item in items], run on the lanes; the first exception is re-raised."""
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


# inductor options for CPU compiles: freezing folds the (inference-only) weights into the graph,
# so convolutions and linear layers run on oneDNN with weights packed once, fused with their
# pointwise neighbours (UNet_XS bf16, batch 4, one thread: 248 -> 206 ms per image)
CPU_COMPILE_OPTIONS = {"freezing": True}


class CompiledOrEager:
    """`fn` run through `torch.compile(fn, dynamic=False, options=options)` (inductor: fused
    elementwise and norm kernels; one compilation per input shape, the first call of each shape
    takes long). Safe to call from several threads (CPU lanes): a call with an input shape not
    seen before runs alone, so a shape is compiled once and by one thread, in that thread's
    intra-op thread count.

    If compiling fails (no C++ compiler, an unsupported operation, ...) the reason is logged,
    passed once to `on_fallback(text)`, and `fn` itself runs from then on, so inspection goes
    on at eager speed. Other errors (bad inputs, out of memory) propagate unchanged."""

    def __init__(self, fn: Callable, name: str, on_fallback: Callable[[str], None] | None = None,
                 options: dict | None = None):
        self.fn = fn
        self.name = name
        self.on_fallback = on_fallback
        self.failure = ""
        self._compiled: Callable | None = None
        self._seen: set[tuple] = set()
        self._first_calls = threading.Lock()
        try:
            self._compiled = torch.compile(fn, dynamic=False, options=options)
        except Exception as e:  # noqa: BLE001 - torch.compile refuses on unsupported Python/platforms
            self._give_up(e)

    @property
    def compiled(self) -> bool:
        """True while the compiled path is in use (False after a fallback)."""
        return self._compiled is not None

    def _give_up(self, error: BaseException) -> None:
        self._compiled = None
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        self.failure = f"{type(error).__name__}: {first_line}"
        text = f"torch.compile of the {self.name} failed ({self.failure}); running it uncompiled"
        log.warning("%s", text)
        if self.on_fallback is not None:
            self.on_fallback(text)

    def __call__(self, *args, **kwargs):
        if self._compiled is None:
            return self.fn(*args, **kwargs)
        shapes = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else type(a) for a in args)
        if shapes in self._seen:
            return self._call(args, kwargs)
        with self._first_calls:
            out = self._call(args, kwargs)
            self._seen.add(shapes)
            return out

    def _call(self, args, kwargs):
        compiled = self._compiled
        if compiled is None:
            return self.fn(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:
            self._give_up(e)
            return self.fn(*args, **kwargs)
