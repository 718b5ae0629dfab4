"""The inference runtime of a detector's networks: PyTorch (eager, the default) or OpenVINO Runtime.

Both detectors run their diffusion loop and map math in PyTorch and call three networks through
attributes (`NETWORK_ATTRIBUTES`): the VAE encoder, the UNet step and the VAE decoder. With
`settings.runtime == "openvino"` `select_networks` replaces those callables by OpenVINO compiled
models (`openvino.convert_model` of a traced wrapper, compiled for the GPU plugin when present,
else the CPU):

* fp32: the converted model, inference precision f32 (maps agree with torch fp32 to ~1e-5);
* bf16: the same model compiled with the bf16 inference precision hint (AMX / AVX512-BF16 CPUs);
* int8: NNCF post-training quantization of the fp32 model, calibrated on the inputs the networks
  see while the model inspects its own good training images (`calibration.npz` beside the model,
  written by `python main.py calibrate-runtime` or at the end of `fit`).

The converted models are cached beside the model (`openvino_cache/`, or a per-user cache folder
when the model folder is read-only): one .xml/.bin pair per network and form plus a .json with the
key it was built for (a hash of the network's weights, the input shapes, the OpenVINO / NNCF /
torch / app versions, the calibration data) and the SHA-256 of both files. A key that differs or
a file whose hash does not match is rebuilt, never trusted. Beside them, each compiled form a
network ran in (its dynamic-batch model and its static copies per batch size, per device and
compile settings) is kept as an OpenVINO compiled blob (`<network>-<form>-<key hash>.blob`: a
header with the SHA-256 and the key, then the blob), imported instead of compiled the next time
(a damaged blob is compiled again: OpenVINO runs a blob with flipped bytes without complaint).
If OpenVINO is missing or a network fails to convert or compile, the detector gets a notice and
runs on torch.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .runtime import notify
from .version import __version__

__all__ = ["RUNTIMES", "PRECISIONS", "NETWORK_ATTRIBUTES", "CACHE_DIR", "CALIBRATION_FILE", "NetworkSpec",
           "RuntimeUnavailable", "CalibrationSet", "check_runtime_setting", "openvino_problem", "select_networks",
           "cache_folder", "network_key", "EXECUTION_VERSION", "MAX_STATIC_BATCHES", "record_network_inputs",
           "autocast_precision", "user_cache_root", "compile_cached",
           "module_fingerprint", "build_openvino_networks"]

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "openvino")
# precisions each runtime accepts (torch: autocast; openvino: inference precision / quantization)
PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "openvino": ("fp32", "bf16", "int8")}
# network name -> the detector attribute holding its callable
NETWORK_ATTRIBUTES = {"encode": "_encode", "unet": "_unet_fn", "decode": "_decode"}
CACHE_DIR = "openvino_cache"
CALIBRATION_FILE = "calibration.npz"
# the last CHECK_IMAGES of a calibration set are held out of quantization (they check accuracy)
CHECK_IMAGES = 8
# calls of each network NNCF calibrates on at most (each call is one batch of inputs)
MAX_CALIBRATION_CALLS = 300
# int8: the first and last KEEP_FLOAT_LAYERS convolutions / matrix products of each network stay
# float (the image-facing and latent-facing layers: quantizing them moved the demo model's latents
# and scores most); NNCF's transformer recipe (attention score products and softmax unquantized)
KEEP_FLOAT_LAYERS = 2
QUANTIZATION_RECIPE = f"transformer,keep-{KEEP_FLOAT_LAYERS}"
# int8 keeps a network quantized only when, swapped in alone (the others in int8_float_precision),
# it moves the scores of the held-out calibration images by at most this share of the threshold
# on average against torch fp32 (else it runs float); on the demo model (fp32 elsewhere) the quantized UNet moved test scores by 0.016 on average and flipped 3 of 165
# verdicts, the quantized decoder 0.005 and 1
INT8_SCORE_TOLERANCE = 0.02
INT8_SELECTION_FILE = "int8-selection.json"
# batch sizes a network compiles a static-shape copy for (CompiledNetwork): with fixed shapes the
# CPU plugin plans its memory and picks its kernels once. 2-core AMD EPYC, UNet_XS int8, 2 threads:
# 179 ms a batch-8 step against 205 with the dynamic batch, 27.0 ms a batch-1 step against 33.3
# (the VAE decoder at batch 1: 12.2 against 13.0); compiling the copy took 1.6-1.8 s
MAX_STATIC_BATCHES = 3
# a batch size with no copy of its own runs padded (its last row repeated) on the smallest copy at
# most PAD_MAX_FACTOR times its size, for its first PAD_CALLS_BEFORE_COPY calls; only a size that
# keeps coming gets its own copy. A folder's remainder (165 demo parts: 20 x 8, then 5, on two
# lanes 3 + 2) pads to the copy for 4 instead of importing two more (0.4 s each for the demo's
# int8 UNet) or compiling them (1.4 s each)
PAD_MAX_FACTOR = 2
PAD_CALLS_BEFORE_COPY = 8
# how compiled networks run (2: a static-shape copy per batch size; 3: smaller batches padded onto
# a copy); part of the keys of decisions made by running them (the int8 selection,
# engine.runtime_choice), so they are made again
EXECUTION_VERSION = 3
# compiled blobs (compile_cached): the first line of each file; and how many a network and form
# keeps (the least recently used go first). Demo UNet int8 on the 2-core AMD EPYC: a batch-8 copy
# compiles in 1.4 s and imports from its blob in 0.65 s; UNet_XS int8 1.62 s against 0.64 s (29 MB)
BLOB_MAGIC = b"DECO-INSPECTOR-OPENVINO-BLOB 1\n"
BLOB_SUFFIX = ".blob"
MAX_CACHED_BLOBS = 8
# OpenVINO inference precision hint per precision (int8: see int8_float_precision)
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}
# the environment variable that replaces the per-user cache folder (tests, shared stations)
HOME_ENV = "DECO_INSPECTOR_HOME"


class RuntimeUnavailable(RuntimeError):
    """OpenVINO cannot run this model (not installed, conversion or compilation failed)."""


@dataclass(frozen=True)
class NetworkSpec:
    """One network a detector runs: `module(*example)` gives its output [B,...] (float32);
    `dims` gives each input's shape with -1 for the batch; `dtypes` 'f32' or 'i64' per input."""

    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    dims: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]


def check_runtime_setting(runtime: str, precision: str) -> None:
    """ValueError naming the problem for an unknown runtime or a precision that runtime does not have."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be {' or '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS[runtime]:
        hint = " (int8 needs runtime openvino)" if precision == "int8" else ""
        raise ValueError(f"precision for runtime {runtime} must be {', '.join(PRECISIONS[runtime])}, "
                         f"got {precision!r}{hint}")


def autocast_precision(settings) -> str:
    """The torch autocast precision of a detector's settings: its precision on the torch runtime,
    'fp32' (no autocast) when OpenVINO runs the networks."""
    return settings.precision if getattr(settings, "runtime", "torch") == "torch" else "fp32"


def openvino_problem() -> str | None:
    """None when OpenVINO can be imported, else one line saying why not."""
    try:
        import openvino  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
        return f"OpenVINO is not installed ({type(e).__name__}: {e}); pip install 'deco-inspector[openvino]'"
    return None


# ------------------------------------------------------------------------------------------ calibration data
@dataclass(frozen=True)
class CalibrationSet:
    """A model's own good images for int8 calibration and the accuracy check: crops [N,S,S,3]
    uint8 RGB (already resized and center-cropped), class_ids [N]; the last `held_out` images are
    not used for quantization."""

    crops: np.ndarray
    class_ids: np.ndarray
    held_out: int = 0

    def images(self, rows: slice | None = None) -> torch.Tensor:
        """Crops as the networks' input [n,3,S,S] float32 in [-1,1]."""
        crops = self.crops if rows is None else self.crops[rows]
        batch = torch.from_numpy(crops).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return ((batch - 0.5) / 0.5).contiguous()  # exactly engine.preprocess.preprocess_frames' scaling

    @property
    def quantize_rows(self) -> slice:
        return slice(0, len(self.crops) - self.held_out)

    @property
    def check_rows(self) -> slice:
        return slice(len(self.crops) - self.held_out, len(self.crops))

    def digest(self) -> str:
        h = hashlib.sha256(self.crops.tobytes())
        h.update(self.class_ids.astype(np.int64).tobytes())
        h.update(str(self.held_out).encode())
        return h.hexdigest()

    def save(self, folder: Path) -> Path:
        """Write calibration.npz into `folder` (atomically; plain arrays, no pickles)."""
        path = Path(folder) / CALIBRATION_FILE
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-", suffix=".npz")
        os.close(fd)
        try:
            np.savez_compressed(tmp, crops=self.crops, class_ids=self.class_ids.astype(np.int64),
                                held_out=np.int64(self.held_out))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, folder: Path, center_size: int, num_classes: int) -> "CalibrationSet | None":
        """The folder's calibration.npz, or None when it has none; ValueError naming the file when
        it is unreadable or does not fit the model (crop size, class ids)."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                crops, ids, held = data["crops"], data["class_ids"], int(data["held_out"])
        except Exception as e:  # noqa: BLE001 - any damage to the file is reported the same way
            raise ValueError(f"{path}: unreadable calibration images ({type(e).__name__}: {e})") from None
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (center_size, center_size, 3):
            raise ValueError(f"{path}: calibration crops must be uint8 [N,{center_size},{center_size},3], "
                             f"got {crops.dtype} {list(crops.shape)}")
        if ids.shape != (len(crops),) or len(crops) == 0 or ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(f"{path}: class ids do not fit {len(crops)} crops of a {num_classes}-class model")
        return cls(crops, ids.astype(np.int64), max(0, min(held, len(crops) - 1)))


class _Recorder:
    """Calls `fn` and keeps a numpy copy of the inputs of every call (thread-safe)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls: list[tuple[np.ndarray, ...]] = []
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._lock:
            self.calls.append(tuple(a.detach().cpu().numpy().copy() for a in args))
        return self.fn(*args)


def record_network_inputs(detector, images: torch.Tensor, class_ids: torch.Tensor,
                          networks: dict[str, Callable]) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """Run `detector.score_latents` on a batch with the torch `networks` wrapped in recorders and
    return the inputs every network was called with (NNCF's calibration data)."""
    saved = {name: getattr(detector, attr) for name, attr in NETWORK_ATTRIBUTES.items() if hasattr(detector, attr)}
    recorders = {name: _Recorder(fn) for name, fn in networks.items()}
    try:
        for name, rec in recorders.items():
            setattr(detector, NETWORK_ATTRIBUTES[name], rec)
        batch = max(1, int(detector.settings.batch_size))
        for start in range(0, images.shape[0], batch):
            detector.score_latents(images[start:start + batch], class_ids[start:start + batch])
    finally:
        for name, fn in saved.items():
            setattr(detector, NETWORK_ATTRIBUTES[name], fn)
    return {name: rec.calls for name, rec in recorders.items()}


# ------------------------------------------------------------------------------------------ the cache
def user_cache_root() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override) / "cache"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "DecoInspector" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deco-inspector"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_folder(source: str, fingerprint: str) -> Path:
    """Where a model's converted networks live: `<model folder>/openvino_cache` when the model is
    a writable folder, else a per-user cache folder named after the weights' fingerprint."""
    folder = Path(source) if source else None
    if folder is not None and folder.is_dir() and _writable(folder / CACHE_DIR):
        return folder / CACHE_DIR
    fallback = user_cache_root() / "openvino" / fingerprint[:24]
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's parameter and buffer names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _versions(precision: str) -> dict:
    import openvino

    out = {"openvino": openvino.__version__, "torch": torch.__version__, "app": __version__}
    if precision == "int8":
        out["nncf"] = _installed_version("nncf")
    return out


def _installed_version(package: str) -> str:
    """A package's version from its installed metadata (importing nncf only for its version costs
    0.3-1 s of every start); when the metadata is missing, from the package itself (which raises
    ImportError when it is not installed)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return importlib.import_module(package).__version__


def network_key(spec: NetworkSpec, fingerprint: str, form: str, calibration: str = "") -> dict:
    """What a cached network was built from; any difference means it must be rebuilt."""
    return {"network": spec.name, "form": form, "weights": fingerprint, "inputs": [list(d) for d in spec.dims],
            "dtypes": list(spec.dtypes), "versions": _versions(form), "calibration": calibration,
            "recipe": QUANTIZATION_RECIPE if form == "int8" else ""}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_cached(core, folder: Path, stem: str, key: dict):
    """The cached ov.Model for `key`, or None (with the reason logged) when it is missing, stale or damaged."""
    meta_path, xml, binary = folder / f"{stem}.json", folder / f"{stem}.xml", folder / f"{stem}.bin"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            log.info("OpenVINO cache %s is stale (the weights or versions changed): rebuilding", meta_path)
            return None
        if meta.get("xml_sha256") != _sha256(xml) or meta.get("bin_sha256") != _sha256(binary):
            log.warning("OpenVINO cache %s does not match its checksums: rebuilding", meta_path)
            return None
        return core.read_model(str(xml))
    except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, whatever the damage
        log.warning("OpenVINO cache %s is unreadable (%s: %s): rebuilding", meta_path, type(e).__name__, e)
        return None


def _write_cached(model, folder: Path, stem: str, key: dict) -> None:
    """Save an ov.Model and its key (the .json last, so a half-written pair is never used)."""
    import openvino as ov

    tmp_dir = Path(tempfile.mkdtemp(dir=folder, prefix=f".{stem}-"))
    try:
        ov.save_model(model, str(tmp_dir / f"{stem}.xml"), compress_to_fp16=False)
        for ext in (".xml", ".bin"):
            os.replace(tmp_dir / f"{stem}{ext}", folder / f"{stem}{ext}")
        meta = {"key": key, "xml_sha256": _sha256(folder / f"{stem}.xml"),
                "bin_sha256": _sha256(folder / f"{stem}.bin")}
        tmp_meta = tmp_dir / f"{stem}.json"
        tmp_meta.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp_meta, folder / f"{stem}.json")
    finally:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()


def _device_identity(core, device: str) -> dict:
    """What a compiled blob is specific to besides the network: the device and its instruction sets."""
    out = {"device": device}
    for prop in ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES"):
        try:
            out[prop] = str(core.get_property(device, prop))
        except Exception:  # noqa: BLE001 - a plugin without the property: the name alone
            out[prop] = ""
    return out


def _blob_key(core, model, device: str, config: dict, network: dict) -> dict:
    return {"network": network, "inputs": [str(p.get_partial_shape()) for p in model.inputs],
            "device": _device_identity(core, device), "config": config, "execution": EXECUTION_VERSION}


def _blob_path(folder: Path, stem: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return folder / f"{stem}-{digest[:20]}{BLOB_SUFFIX}"


def _import_blob(core, path: Path, key: dict, device: str, config: dict):
    """The compiled model in the blob at `path` when its header names `key` and its checksum holds, else None."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            magic, digest, key_line = f.readline(), f.readline().strip().decode("ascii"), f.readline()
            payload = f.read()
        if magic != BLOB_MAGIC or hashlib.sha256(key_line + payload).hexdigest() != digest:
            log.warning("OpenVINO compiled blob %s does not match its checksum: compiling again", path)
            return None
        if json.loads(key_line) != key:
            log.info("OpenVINO compiled blob %s was made for another network or device: compiling again", path)
            return None
        compiled = core.import_model(io.BytesIO(payload), device, config)
    except Exception as e:  # noqa: BLE001 - a blob that does not load is compiled again, whatever the damage
        log.warning("OpenVINO compiled blob %s is unreadable (%s: %s): compiling again", path, type(e).__name__, e)
        return None
    try:
        os.utime(path)   # recently used: pruned last
    except OSError:
        pass
    return compiled


def _export_blob(compiled, path: Path, key: dict) -> None:
    """Write `compiled`'s blob with its header (through a temporary file: a half-written blob is never read)."""
    payload = compiled.export_model()
    payload = payload.getbuffer() if isinstance(payload, io.BytesIO) else payload
    key_line = json.dumps(key, sort_keys=True).encode() + b"\n"
    digest = hashlib.sha256(key_line)
    digest.update(payload)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(BLOB_MAGIC)
            f.write(digest.hexdigest().encode("ascii") + b"\n")
            f.write(key_line)
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prune_blobs(folder: Path, stem: str, keep: int = MAX_CACHED_BLOBS) -> None:
    """Remove all but the `keep` most recently used blobs of `stem`."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0
    for old in sorted(folder.glob(f"{stem}-*{BLOB_SUFFIX}"), key=used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def compile_cached(core, model, device: str, config: dict, folder: Path | None, stem: str, network: dict):
    """`model` compiled for `device` with `config`: imported from its compiled blob in `folder` when
    one was written for the same network key, input shapes, device and config, else compiled (and
    its blob written; at most MAX_CACHED_BLOBS kept per `stem`). `folder` None: no cache."""
    if folder is None:
        return core.compile_model(model, device, config)
    key = _blob_key(core, model, device, config, network)
    path = _blob_path(folder, stem, key)
    compiled = _import_blob(core, path, key, device, config)
    if compiled is not None:
        return compiled
    compiled = core.compile_model(model, device, config)
    try:
        _export_blob(compiled, path, key)
        _prune_blobs(folder, stem)
    except Exception as e:  # noqa: BLE001 - no blob only costs the next start its compile time
        log.warning("could not keep the compiled OpenVINO network %s in %s: %s", stem, folder, e)
    return compiled


# ------------------------------------------------------------------------------------------ conversion
def _convert(spec: NetworkSpec):
    """Trace the network (no autograd: the inference paths) and convert it with a dynamic batch."""
    import openvino as ov

    types = {"f32": ov.Type.f32, "i64": ov.Type.i64}
    with torch.no_grad(), warnings.catch_warnings():
        # the wrappers' shape checks become constants of the trace (the shapes are fixed): not news for a user
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(spec.module.eval(), spec.example, check_trace=False)
        return ov.convert_model(traced, example_input=spec.example,
                                input=[(list(d), types[t]) for d, t in zip(spec.dims, spec.dtypes)])


def _quantize(model, calls: list[tuple[np.ndarray, ...]]):
    """NNCF post-training int8 quantization of an ov.Model on recorded input tuples (see QUANTIZATION_RECIPE)."""
    import nncf

    calls = calls[:MAX_CALIBRATION_CALLS]
    layers = [op.get_friendly_name() for op in model.get_ordered_ops()
              if op.get_type_name() in ("Convolution", "MatMul")]
    keep = layers[:KEEP_FLOAT_LAYERS] + layers[-KEEP_FLOAT_LAYERS:] if len(layers) > 2 * KEEP_FLOAT_LAYERS else []
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(max(level, logging.WARNING))   # its INFO lines list every layer it leaves in float
    try:
        return nncf.quantize(model, nncf.Dataset(calls, lambda item: list(item)), subset_size=len(calls),
                             model_type=nncf.ModelType.TRANSFORMER, ignored_scope=nncf.IgnoredScope(names=keep))
    finally:
        nncf_log.setLevel(level)


class CompiledNetwork:
    """An OpenVINO compiled model called like the torch network: torch tensors in, a float32 torch
    tensor out on the first input's device. Each calling thread gets its own infer request, so CPU
    lanes (`engine.acceleration.CpuLanes`) run side by side on the model's streams.

    `compiled` takes any batch size (None: `compile_dynamic()` gives it when first needed, for a
    model whose compiled blob is on disk); with `compile_for_batch` (batch -> a compiled model of
    that fixed batch) a batch size gets a static-shape copy, used from then on (up to
    MAX_STATIC_BATCHES sizes; a copy that fails to compile leaves that size on `dynamic`), after
    running padded on a larger copy for its first calls where one is near (PAD_MAX_FACTOR,
    PAD_CALLS_BEFORE_COPY): rows are independent, so padding changes no real row's result."""

    def __init__(self, compiled, name: str, dtypes: Sequence[str], key: dict | None = None,
                 folder: Path | None = None, compile_for_batch: Callable[[int], object] | None = None,
                 compile_dynamic: Callable[[], object] | None = None):
        if compiled is None and compile_dynamic is None:
            raise ValueError("a CompiledNetwork needs its compiled model or the way to compile it")
        self.name = name
        self.key = key or {}
        self.folder = folder
        self._dynamic = compiled
        self._compile_dynamic = compile_dynamic
        self._dynamic_lock = threading.Lock()
        self._compile_for_batch = compile_for_batch
        self._static: dict[int, object] = {}    # batch size -> its compiled model, or None when that failed
        self._calls: dict[int, int] = {}        # batch size without a copy -> calls so far
        self._static_lock = threading.Lock()
        self._local = threading.local()
        self._dtypes = [np.float32 if d == "f32" else np.int64 for d in dtypes]

    @property
    def dynamic(self):
        """The compiled model with a dynamic batch (imported from its blob on first use when the
        build deferred it: the static copies run the usual batch sizes, so most runs never need it)."""
        if self._dynamic is None:
            with self._dynamic_lock:
                if self._dynamic is None:
                    self._dynamic = self._compile_dynamic()
        return self._dynamic

    @property
    def static_batches(self) -> tuple[int, ...]:
        """The batch sizes that run on a static-shape compiled copy."""
        return tuple(sorted(b for b, c in self._static.items() if c is not None))

    def compiled_for(self, batch: int):
        """The compiled model that runs this call of a batch of `batch`."""
        return self._runner(batch)[0]

    def _runner(self, batch: int) -> tuple[object, int]:
        """(compiled model, the batch it runs) for this call of a batch of `batch`: its static copy,
        a larger copy to pad onto, a new copy, or the dynamic model."""
        static = self._static.get(batch)
        if static is not None:
            return static, batch
        if batch not in self._static and self._compile_for_batch is not None:
            with self._static_lock:
                if batch not in self._static:
                    calls = self._calls[batch] = self._calls.get(batch, 0) + 1
                    near = [b for b, c in self._static.items() if c is not None and batch < b <= PAD_MAX_FACTOR * batch]
                    full = len(self._static) >= MAX_STATIC_BATCHES
                    if near and (calls <= PAD_CALLS_BEFORE_COPY or full):
                        return self._static[min(near)], min(near)
                    if not full:
                        self._calls.pop(batch, None)
                        try:
                            self._static[batch] = self._compile_for_batch(batch)
                        except Exception as e:  # noqa: BLE001 - the dynamic model still runs this size
                            log.warning("OpenVINO could not compile the %s network for batch %d (%s: %s); "
                                        "it runs with a dynamic batch", self.name, batch, type(e).__name__, e)
                            self._static[batch] = None
        static = self._static.get(batch)
        return (static, batch) if static is not None else (self.dynamic, batch)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        batch = int(args[0].shape[0])
        compiled, run_batch = self._runner(batch)
        request = requests.get(id(compiled))
        if request is None:
            request = requests[id(compiled)] = compiled.create_infer_request()
        arrays = [np.ascontiguousarray(a.detach().cpu().numpy(), dtype=t) for a, t in zip(args, self._dtypes)]
        if run_batch > batch:   # the last row repeated: real values, and rows do not mix
            arrays = [np.concatenate([a, np.repeat(a[-1:], run_batch - batch, axis=0)]) for a in arrays]
        out = request.infer(arrays)[0][:batch]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True)).to(args[0].device)


def int8_float_precision(core) -> str:
    """What int8 networks run their unquantized operators in, and what the networks int8 leaves
    float run in: bf16 where the device computes it natively (AMX / AVX512-BF16), else fp32."""
    try:
        capabilities = core.get_property(_device_name(core), "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - a plugin without the property: the safe choice
        return "fp32"
    return "bf16" if "BF16" in capabilities else "fp32"


def _compile_config(precision: str, streams: int, float_precision: str = "fp32", threads: int = 0) -> dict:
    """Inference precision, and on a CPU `streams` streams of one thread each (one per CPU lane,
    see engine.acceleration.CpuLanes: whole operators per core, no cross-core sync per operator),
    or one stream of `threads` threads (0: all cores)."""
    config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT[float_precision if precision == "int8" else precision]}
    if streams > 1:
        config.update({"NUM_STREAMS": str(streams), "INFERENCE_NUM_THREADS": str(streams)})
    else:
        config["PERFORMANCE_HINT"] = "LATENCY"
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def _core():
    import openvino as ov

    return ov.Core()


def _device_name(core) -> str:
    return "GPU" if any(d.startswith("GPU") for d in core.available_devices) else "CPU"


def build_openvino_networks(specs: Sequence[NetworkSpec], precision: str, source: str,
                            calibration: Callable[[], dict[str, list]] | None = None,
                            calibration_digest: str = "", streams: int = 1, threads: int = 0
                            ) -> dict[str, CompiledNetwork]:
    """Compiled networks for `specs` at `precision`, from the cache when its key matches, else
    converted (and for int8 quantized with the inputs `calibration()` records) and cached; on a
    CPU with `streams` single-threaded streams, or one stream of `threads` threads (0: all cores).
    RuntimeUnavailable with the reason when OpenVINO cannot run them."""
    problem = openvino_problem()
    if problem:
        raise RuntimeUnavailable(problem)

    if precision == "int8" and calibration is None:
        raise RuntimeUnavailable("int8 needs the model's calibration images: run `python main.py calibrate-runtime "
                                 "--model MODEL --data-dir DATA` (fit does it for new models)")
    core = _core()
    fingerprints = {s.name: module_fingerprint(s.module) for s in specs}
    folder = cache_folder(source, hashlib.sha256("".join(fingerprints.values()).encode()).hexdigest())
    form = "int8" if precision == "int8" else "fp32"
    recorded: dict[str, list] | None = None
    out = {}
    for spec in specs:
        key = network_key(spec, fingerprints[spec.name], form, calibration_digest if form == "int8" else "")
        stem = f"{spec.name}-{form}"
        model = _read_cached(core, folder, stem, key)
        if model is None:
            try:
                model = _convert(spec)
                if form == "int8":
                    if recorded is None:
                        recorded = calibration()
                    model = _quantize(model, recorded[spec.name])
            except Exception as e:  # noqa: BLE001 - any conversion failure means: run on torch
                raise RuntimeUnavailable(f"converting the {spec.name} network failed "
                                         f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                                         ) from e
            for stale in folder.glob(f"{stem}-*{BLOB_SUFFIX}"):   # compiled from the network it replaces
                stale.unlink(missing_ok=True)
            try:
                _write_cached(model, folder, stem, key)
            except OSError as e:
                log.warning("could not cache the OpenVINO %s network in %s: %s", spec.name, folder, e)
        device = _device_name(core)
        config = _compile_config(precision, streams, int8_float_precision(core), threads if device == "CPU" else 0)
        compile_dynamic = partial(compile_cached, core, model, device, config, folder, stem, key)
        compiled = None
        if not _blob_path(folder, stem, _blob_key(core, model, device, config, key)).is_file():
            try:   # compiled now, so a model the plugin refuses runs on torch; with a blob it compiled before
                compiled = compile_dynamic()
            except Exception as e:  # noqa: BLE001 - the plugin refuses the model: run on torch
                raise RuntimeUnavailable(f"compiling the {spec.name} network for OpenVINO failed "
                                         f"({type(e).__name__}: {e})") from e
        out[spec.name] = CompiledNetwork(compiled, spec.name, spec.dtypes, key, folder,
                                         _static_compiler(core, model, spec.dims, device, config, folder, stem, key),
                                         compile_dynamic)
    return out


def _static_compiler(core, model, dims: Sequence[tuple[int, ...]], device: str, config: dict,
                     folder: Path | None = None, stem: str = "", network: dict | None = None):
    """batch -> `model` compiled with every input's batch dimension (-1 in `dims`) fixed to batch
    (through the compiled-blob cache in `folder`, see compile_cached)."""
    def compile_for_batch(batch: int):
        fixed = model.clone()
        fixed.reshape({i: [batch if d == -1 else d for d in shape] for i, shape in enumerate(dims)})
        return compile_cached(core, fixed, device, config, folder, stem, network or {})
    return compile_for_batch


def _calibration_for(detector, calibration: CalibrationSet, torch_networks: dict[str, Callable]):
    def record() -> dict[str, list]:
        rows = calibration.quantize_rows
        images = calibration.images(rows)
        ids = torch.from_numpy(calibration.class_ids[rows])
        return record_network_inputs(detector, images, ids, torch_networks)
    return record


def _check_scores(detector, nets: dict[str, Callable], calibration: CalibrationSet) -> torch.Tensor:
    """Scores [n] of the calibration set's held-out images with `nets` in the detector's network slots."""
    saved = {name: getattr(detector, NETWORK_ATTRIBUTES[name]) for name in nets
             if hasattr(detector, NETWORK_ATTRIBUTES[name])}
    try:
        for name, fn in nets.items():
            setattr(detector, NETWORK_ATTRIBUTES[name], fn)
        images = calibration.images(calibration.check_rows)
        maps, _ = detector.score_latents(images, torch.from_numpy(calibration.class_ids[calibration.check_rows]))
        return maps.final.reshape(images.shape[0], -1).amax(dim=1)
    finally:
        for name, fn in saved.items():
            setattr(detector, NETWORK_ATTRIBUTES[name], fn)


def _int8_selection(detector, int8: dict[str, CompiledNetwork], calibration: CalibrationSet | None,
                    floats: Callable[[str], dict[str, Callable]], reference: dict[str, Callable]) -> dict[str, Callable]:
    """Per network: keep the int8 form only when it alone moves the held-out scores by at most
    INT8_SCORE_TOLERANCE x threshold on average against the `reference` (torch fp32) networks; the
    others, and the int8 networks' unquantized operators, run in `int8_float_precision` (the
    networks `floats(precision)` gives). The choice is cached
    beside the networks; without held-out calibration images every network stays int8."""
    if calibration is None or calibration.held_out == 0:
        return dict(int8)
    threshold = float(detector.settings.threshold)
    first = next(iter(int8.values()))
    float_precision = int8_float_precision(_core())
    key = hashlib.sha256(json.dumps([n.key for n in int8.values()]
                                    + [threshold, float_precision, EXECUTION_VERSION], sort_keys=True).encode()
                         ).hexdigest()
    path = first.folder / INT8_SELECTION_FILE if first.folder is not None else None
    chosen = None
    if path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == key and set(stored.get("int8", [])) <= set(int8):
                chosen = list(stored["int8"])
        except (OSError, ValueError, AttributeError):
            chosen = None
    float_nets = floats(float_precision)
    if chosen is None:
        reference = _check_scores(detector, reference, calibration)
        change = {name: float((_check_scores(detector, {**float_nets, name: net}, calibration) - reference).abs().mean())
                  for name, net in int8.items()}
        chosen = [name for name, c in change.items() if c <= INT8_SCORE_TOLERANCE * threshold]
        kept = {name: round(c, 4) for name, c in change.items() if name not in chosen}
        log.info("int8 for %s: %s quantized%s", detector.model_id or "the model", ", ".join(chosen) or "nothing",
                 f"; kept fp32 (mean score change on {calibration.held_out} held-out images above "
                 f"{INT8_SCORE_TOLERANCE * threshold:.3g}): {kept}" if kept else "")
        if path is not None:
            try:
                path.write_text(json.dumps({"key": key, "int8": chosen,
                                            "mean_score_change": {k: round(v, 5) for k, v in change.items()}},
                                           indent=1), encoding="utf-8")
            except OSError as e:
                log.warning("could not store the int8 selection in %s: %s", path, e)
    detector.int8_networks = tuple(chosen)
    return {name: int8[name] if name in chosen else float_nets[name] for name in int8}


def select_networks(detector, torch_networks: dict[str, Callable]) -> dict[str, Callable]:
    """The callables a detector runs for its settings' runtime and precision: `torch_networks` for
    torch, else OpenVINO compiled ones (kept on the detector, so changing other settings does not
    rebuild them). When OpenVINO cannot run the model the detector gets a notice, its settings
    switch to torch (fp32 for int8) and `torch_networks` are returned.

    On a CPU the networks get one single-threaded stream per lane of the lanes setting, or with
    one lane (or automatic lanes) one stream of as many threads as the calling thread gives
    PyTorch: in the window that is all cores but one (`inspector.worker.engine_threads`), so the
    live pipeline's network thread keeps to one core and the display, camera and archive to the
    others (benchmarks/bench_live.py: 17 frames/s against 14 with the networks on both cores)."""
    s = detector.settings
    if s.runtime == "torch":
        return torch_networks
    built = detector.__dict__.setdefault("_runtime_networks", {})
    streams = max(1, getattr(s, "lanes", 0)) if detector.device.type == "cpu" else 1   # DiAD has no lanes
    threads = torch.get_num_threads() if streams == 1 else 0
    if (s.precision, streams, threads) in built:
        return built[(s.precision, streams, threads)]
    try:
        calibration = None
        try:
            calibration = CalibrationSet.load(Path(detector.source), detector.preprocess.center_size,
                                              len(detector.class_names)) if detector.source else None
        except ValueError as e:
            if s.precision == "int8":
                raise RuntimeUnavailable(str(e)) from None
        if calibration is not None and calibration.quantize_rows.stop == 0:
            calibration = None
        record = _calibration_for(detector, calibration, torch_networks) if calibration is not None else None
        nets = build_openvino_networks(detector.network_specs(), s.precision, detector.source, record,
                                       calibration.digest() if calibration is not None else "", streams=streams,
                                       threads=threads)
        if s.precision == "int8":
            nets = _int8_selection(detector, nets, calibration, lambda p: built.get((p, streams, threads)) or
                                   build_openvino_networks(detector.network_specs(), p, detector.source, streams=streams,
                                                           threads=threads), torch_networks)
    except RuntimeUnavailable as e:
        fallback = "fp32" if s.precision == "int8" else s.precision
        notify(detector, f"OpenVINO {s.precision} cannot run {detector.model_id or 'this model'}: {e}; "
                         f"running it on torch {fallback}")
        detector.settings = replace(s, runtime="torch", precision=fallback)
        return torch_networks
    built[(s.precision, streams, threads)] = nets
    log.info("%s runs on OpenVINO %s", detector.model_id or "the model", s.precision)
    return nets
