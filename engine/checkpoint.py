"""Checkpoint and model-folder IO for the UNet, with validation before use.

Two formats are read:
* our model folder: `model.json` (format, version, configs) + `unet.safetensors`
  (+ `vae/` in diffusers layout, + `classifier/`), written atomically;
* a DeCo-Diff reference checkpoint `.pt` = {"model": state_dict, "opt", "scheduler", "epoch",
  "args"}, read with `torch.load(weights_only=True)`, where `argparse.Namespace` is the only
  object allowed besides tensors and plain containers. Checkpoints of the original DeCo-Diff
  (no gate layers) load with gating off.

Nothing here ever unpickles arbitrary objects: a file that needs them is refused unread.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .state_dicts import compare_state_dict
from .unet import _SIZE_TABLE, GatedUNet, UNetConfig

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "read_folder_weights",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ReferenceCheckpoint",
    "read_reference_checkpoint",
    "load_unet",
    "read_model_json",
    "write_model_json",
    "save_unet_weights",
    "atomic_write_bytes",
    "atomic_torch_save",
    "safe_torch_load",
]

MODEL_FORMAT = "deco-inspector-model"
MODEL_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
UNET_WEIGHTS = "unet.safetensors"
GATING_PREFIXES = ("gate_head.", "skip_gates.")


class CheckpointError(ValueError):
    """A checkpoint or model folder that cannot be used; the message names the file."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _readable(tmp) -> None:
    """mkstemp creates 0600 files; give the final file the usual permissions (0666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _atomic_replace(path: Path, write) -> None:
    """Call `write(tmp_path)` on a temp file beside `path`, fsync it, then rename it over `path`;
    on any failure the temp file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through a temp file and a rename, so a kill never leaves half a file."""
    _atomic_replace(path, lambda tmp: torch.save(obj, tmp))


def safe_torch_load(path: Path, allowed_globals: tuple = (argparse.Namespace,)):
    """torch.load with weights_only=True; every failure becomes one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "file is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).split("\n")[0]
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line or "GLOBAL" in line), first)
        raise CheckpointError(
            path, f"refused: not a weights-only checkpoint, it asks to run Python objects ({detail}); nothing was executed"
        ) from None
    except Exception as e:  # garbage makes the unpickler fail in any way (IndexError, TypeError, struct.error ...)
        raise CheckpointError(path, f"cannot be read as a PyTorch checkpoint (truncated or corrupt?): "
                                    f"{type(e).__name__}: {e}") from None


@dataclass
class ReferenceCheckpoint:
    """A DeCo-Diff reference checkpoint, validated: its UNet config and its state dict."""

    path: Path
    config: UNetConfig
    state_dict: dict[str, torch.Tensor]
    epoch: int | None = None
    args: dict = field(default_factory=dict)
    has_gating: bool = True


def _strip_module_prefix(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _infer_config(path: Path, sd: dict, args: dict, size: str | None, ncls: int | None,
                  latent_size: int | None) -> UNetConfig:
    for key in ("input_blocks.0.0.weight", "cond_stage_model.embedding.weight"):
        if key not in sd:
            raise CheckpointError(path, f"not a DeCo-Diff UNet state dict: missing {key!r}")
    found_mc = int(sd["input_blocks.0.0.weight"].shape[0])
    found_ncls = int(sd["cond_stage_model.embedding.weight"].shape[0])
    # reference checkpoints have the reference layout: attention at every level
    found_size = next((name for name, spec in _SIZE_TABLE.items()
                       if spec.model_channels == found_mc and spec.attention_levels is None), None)
    if found_size is None:
        raise CheckpointError(path, f"model_channels {found_mc} matches no known size ({', '.join(_SIZE_TABLE)})")
    declared = args.get("model_size")
    if declared and declared != found_size:
        raise CheckpointError(path, f"its args say {declared} but the weights are {found_size} (model_channels {found_mc})")
    if size is not None and size != found_size:
        raise CheckpointError(
            path, f"expected {size} (model_channels {_SIZE_TABLE[size].model_channels if size in _SIZE_TABLE else '?'}), "
                  f"found {found_size} (model_channels {found_mc})")
    if ncls is not None and ncls != found_ncls:
        raise CheckpointError(path, f"expected {ncls} classes, found {found_ncls}")
    if latent_size is None:
        center = args.get("center_size", 256)
        latent_size = (center if args.get("center_crop", True) else args.get("image_size", 288)) // 8
    has_gating = any(k.startswith(GATING_PREFIXES) for k in sd)
    return UNetConfig(
        model_channels=found_mc, num_head_channels=found_mc // _SIZE_TABLE[found_size].heads, context_dim=2 * found_mc,
        ncls=found_ncls, latent_size=latent_size, use_gating=has_gating, size=found_size)


def read_reference_checkpoint(path, size: str | None = None, ncls: int | None = None,
                              latent_size: int | None = None) -> ReferenceCheckpoint:
    """Read and validate a reference `.pt`; `size`/`ncls` given are checked against the file."""
    path = Path(path)
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        found = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(path, f"expected a dict with a 'model' state dict, found {found}")
    sd = _strip_module_prefix({k: v for k, v in sd.items()})
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"state dict entries that are not tensors: {bad[:5]}")
    args_obj = obj.get("args") if isinstance(obj, dict) else None
    args = vars(args_obj) if isinstance(args_obj, argparse.Namespace) else dict(args_obj or {})
    config = _infer_config(path, sd, args, size, ncls, latent_size)
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return ReferenceCheckpoint(path=path, config=config, state_dict=sd, epoch=epoch, args=args,
                               has_gating=config.use_gating)


def check_state_dict(path: Path, expected: dict, sd: dict, what: str,
                     allowed_missing: tuple[str, ...] = ()) -> None:
    """Raise one CheckpointError naming `path` when `sd` does not fit `expected` exactly
    (missing, unexpected or wrong-shape entries; keys starting with `allowed_missing` may be absent)."""
    mismatch = compare_state_dict(expected, sd, allowed_missing)
    if mismatch:
        raise CheckpointError(path, f"does not match {what}: {mismatch.describe()}")


def write_model_parts(folder, unet, vae=None, vae_ref: str | None = None, classifier=None,
                      uses_vae: bool = True) -> Path:
    """Start a model folder (either detector's): the network's weights (unet.safetensors), a copy of
    the VAE in vae/ (`vae`; or `vae_ref`, a reference the caller writes into model.json: exactly one
    of them when the model `uses_vae`, neither when not) and the classifier in classifier/ when given.
    The caller writes model.json last, so a half-written folder never loads."""
    from .classifier import save_classifier
    from .vae import save_vae

    if uses_vae and (vae is None) == (vae_ref is None):
        raise ValueError("give exactly one of vae (copied into the folder) or vae_ref (referenced)")
    if not uses_vae and (vae is not None or vae_ref is not None):
        raise ValueError("a pixel-space model takes no VAE")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_unet_weights(unet, folder)
    if vae is not None:
        save_vae(vae, folder / "vae")
    if classifier is not None:
        save_classifier(classifier, folder / "classifier")
    return folder


def model_json_header(kind: str, folder: Path, model_id: str, unet) -> dict:
    """The first entries of every model.json: detector kind, model id (default: the folder's name),
    the app version and time that wrote it, and the network's config."""
    from .version import __version__

    return {"detector": kind, "model_id": model_id or folder.name, "app_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unet": unet.config.to_dict()}


def read_model_parts(folder: Path, meta: dict, vae=None, classifier=None, latent: bool = True):
    """(vae, classifier) of a model folder, the counterpart of `write_model_parts`: `vae` given as a
    loaded VAE is used as it is, as a path or id it is opened, else the folder's own ("vae" in
    model.json: a subfolder or a reference; `latent` False: no VAE); `classifier` given as a folder is
    opened, else the folder's own when model.json names one (None when there is none)."""
    from .classifier import load_classifier
    from .vae import VAE, load_vae

    vae_model = None
    if isinstance(vae, VAE):
        vae_model = vae
    elif latent:
        spec = vae or meta.get("vae") or "vae"
        local = folder / spec if isinstance(spec, str) else None
        vae_model = load_vae(local if local is not None and local.is_dir() else spec)
    if classifier is None and meta.get("classifier") and (folder / meta["classifier"]).exists():
        classifier = load_classifier(folder / meta["classifier"])
    elif classifier is not None and not hasattr(classifier, "predict"):
        classifier = load_classifier(classifier)
    return vae_model, classifier


def _load_strict(path: Path, unet: GatedUNet, sd: dict, allow_missing_gating: bool = False) -> None:
    size = unet.config.size or f"model_channels {unet.config.model_channels}"
    check_state_dict(path, unet.state_dict(), sd, f"{size} with {unet.config.ncls} classes",
                     GATING_PREFIXES if allow_missing_gating else ())
    unet.load_state_dict(sd, strict=not allow_missing_gating)


def read_model_json(folder) -> dict:
    """Read and validate `model.json` of a model folder."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise CheckpointError(folder, f"not a model folder: {MODEL_JSON} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(path, f"'format' must be {MODEL_FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise CheckpointError(
            path, f"format_version {version!r} is not supported (this app reads up to {MODEL_FORMAT_VERSION}); "
                  "update DeCo Inspector")
    if "unet" not in meta:
        raise CheckpointError(path, "has no 'unet' config")
    return meta


def write_model_json(folder, meta: dict) -> None:
    """Write `model.json` atomically, stamping format and format version."""
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, **meta}
    atomic_write_bytes(Path(folder) / MODEL_JSON, json.dumps(meta, indent=2).encode("utf-8"))


def update_model_json(folder, update) -> dict:
    """Read `model.json`, let `update(meta)` change it in place, and write it back stamped with the
    current format (the stale stamp is dropped). Returns the written content."""
    meta = read_model_json(folder)
    update(meta)
    meta.pop("format", None)
    meta.pop("format_version", None)
    write_model_json(folder, meta)
    return meta


def save_unet_weights(unet: GatedUNet, folder) -> None:
    """Write `unet.safetensors` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{UNET_WEIGHTS}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}, str(tmp))
    os.replace(tmp, folder / UNET_WEIGHTS)


def read_folder_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(path, state dict) of a model folder's unet.safetensors, or one CheckpointError."""
    weights = Path(folder) / UNET_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(folder, f"{UNET_WEIGHTS} is missing")
    try:
        return weights, load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(weights, f"cannot be read as safetensors (truncated or corrupt?): {e}") from None


def _load_folder_unet(folder: Path, size: str | None, ncls: int | None) -> GatedUNet:
    meta = read_model_json(folder)
    try:
        config = UNetConfig.from_dict(meta["unet"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(folder / MODEL_JSON, f"bad 'unet' config: {e}") from None
    if size is not None and config.size != size:
        raise CheckpointError(folder, f"expected {size}, found {config.size or 'a custom size'}")
    if ncls is not None and config.ncls != ncls:
        raise CheckpointError(folder, f"expected {ncls} classes, found {config.ncls}")
    weights, sd = read_folder_weights(folder)
    unet = GatedUNet(config)
    _load_strict(weights, unet, sd)
    return unet


def load_unet(path, size: str | None = None, ncls: int | None = None, use_gating: bool | None = None,
              device: torch.device | str | None = None) -> GatedUNet:
    """Load a UNet, in eval mode, from our model folder (or its model.json / unet.safetensors)
    or from a reference `.pt`. `size`/`ncls`, when given, must match the file. Gating follows
    the file unless `use_gating` overrides it (a file without gate weights cannot turn it on)."""
    path = Path(path)
    if path.is_file() and path.name in (MODEL_JSON, UNET_WEIGHTS):
        path = path.parent
    if path.is_dir():
        unet = _load_folder_unet(path, size, ncls)
    elif path.is_file():
        ref = read_reference_checkpoint(path, size=size, ncls=ncls)
        unet = GatedUNet(ref.config)
        _load_strict(path, unet, ref.state_dict, allow_missing_gating=not ref.has_gating)
    else:
        raise CheckpointError(path, "no such file or model folder")
    if use_gating is not None:
        if use_gating and not unet.config.use_gating:
            raise CheckpointError(path, "gating requested, but this model was trained without gates")
        unet.use_gating = use_gating
    unet.eval()
    return unet.to(device) if device is not None else unet
