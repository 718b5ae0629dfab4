"""VAE wrapper around diffusers `AutoencoderKL`: images <-> scaled latents, strictly offline loading.

Images are `[B, 3, H, W]` float tensors in [-1, 1]; latents are `[B, C, H/8, W/8]` (C = 4 for
Stable-Diffusion VAEs, 8 for the compact VAE) already
multiplied by `LATENT_SCALE` (0.18215), the convention of the DeCo-Diff reference
(see ../shared/reference/spec.md, section 3.1).

A VAE folder may add `"deco_patch_size": p` to its config.json (the compact VAE uses 4): images
are then folded into p x p patches before the AutoencoderKL (`pixel_unshuffle`, 3 -> 3p^2
channels) and unfolded after it, so the network never runs at full resolution. Stable-Diffusion
VAEs have no such key (p = 1).

`load_vae` never touches the network: it reads a diffusers-layout folder given directly, a
Stable-Diffusion pipeline folder (its `vae/` subfolder), or a snapshot already present in the
local Hugging Face cache. Weights are read from safetensors, or from a `.bin` with
`torch.load(weights_only=True)`, which refuses pickled code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file as load_safetensors
from torch import nn

from .state_dicts import compare_state_dict

__all__ = [
    "LATENT_SCALE",
    "VAE_SHORT_NAMES",
    "VAENotFoundError",
    "VAE",
    "COMPACT_VAE_SIZES",
    "compact_vae_config",
    "create_vae",
    "load_vae",
    "save_vae",
    "resolve_vae_folder",
    "hf_hub_cache_dir",
]

LATENT_SCALE = 0.18215

VAE_SHORT_NAMES: dict[str, str] = {
    "ema": "stabilityai/sd-vae-ft-ema",
    "mse": "stabilityai/sd-vae-ft-mse",
}

CONFIG_NAME = "config.json"
PATCH_SIZE_KEY = "deco_patch_size"
SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
BIN_NAME = "diffusion_pytorch_model.bin"

# Old diffusers checkpoints (sd-vae-ft-mse/-ema among them) name the mid-block attention
# projections query/key/value/proj_attn; current AutoencoderKL calls them to_q/to_k/to_v/to_out.0.
_LEGACY_ATTENTION_NAMES = {
    "query": "to_q",
    "key": "to_k",
    "value": "to_v",
    "proj_attn": "to_out.0",
}


class VAENotFoundError(FileNotFoundError):
    """No VAE weights at any of the places `load_vae` looked; the message lists them all."""


class VAE(nn.Module):
    """An `AutoencoderKL` (attribute `model`) with the 0.18215 latent scaling built in.

    `channels_last=True` stores weights and runs convolutions in NHWC. On the 2-core AMD EPYC
    development CPU the compact VAE at 256 px (batch 1, median of 5) took about 27 ms to encode
    and 66 ms to decode in channels_last against 42 ms and 99 ms in the default NCHW format,
    so channels_last is the default. Outputs are always returned in the default contiguous format.
    """

    def __init__(self, model: AutoencoderKL, *, source: str, channels_last: bool = True, patch_size: int = 1) -> None:
        super().__init__()
        if not isinstance(model, AutoencoderKL):
            raise TypeError(f"VAE wraps a diffusers AutoencoderKL, got {type(model).__name__}")
        expected = 3 * patch_size * patch_size
        if patch_size < 1 or model.config.in_channels != expected or model.config.out_channels != expected:
            raise ValueError(f"a VAE with patch size {patch_size} needs an AutoencoderKL with {expected} input and "
                             f"output channels, got {model.config.in_channels} and {model.config.out_channels}")
        self.model = model
        self.source = source
        self.patch_size = patch_size
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.eval()

    @property
    def config(self) -> dict:
        """The diffusers config of the wrapped model (plus the patch size when not 1), as a plain dict."""
        config = dict(self.model.config)
        if self.patch_size != 1:
            config[PATCH_SIZE_KEY] = self.patch_size
        return config

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each axis (8 for SD VAEs and the compact VAE)."""
        return self.patch_size * 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _prepare(self, x: torch.Tensor, channels: int, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"VAE.{what} expects a [B, {channels}, H, W] tensor, got {shape}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _check_image_size(self, images: torch.Tensor, what: str) -> None:
        f = self.downsample_factor
        h, w = images.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"VAE.{what}: image size {h}x{w} must be divisible by {f} (the VAE downsampling)")

    def posterior(self, images: torch.Tensor, what: str = "posterior"):
        """`[B,3,H,W]` in [-1,1] -> the diffusers DiagonalGaussianDistribution over unscaled latents."""
        x = self._prepare(images, 3, what)
        self._check_image_size(x, what)
        if self.patch_size != 1:
            x = self._prepare(F.pixel_unshuffle(x, self.patch_size), self.model.config.in_channels, what)
        return self.model.encode(x).latent_dist

    def decode_unscaled(self, latents: torch.Tensor, what: str = "decode_unscaled") -> torch.Tensor:
        """`[B,C,h,w]` unscaled latents (the posterior's own units) -> `[B,3,8h,8w]` images."""
        z = self._prepare(latents, self.latent_channels, what)
        images = self.model.decode(z).sample
        if self.patch_size != 1:
            images = F.pixel_shuffle(images, self.patch_size)
        return images.contiguous()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """`[B,3,H,W]` in [-1,1] -> posterior mean * 0.18215, `[B,C,H/8,W/8]` (evaluation/inference)."""
        return (self.posterior(images, "encode").mean * LATENT_SCALE).contiguous()

    def encode_sample(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`[B,3,H,W]` in [-1,1] -> posterior sample * 0.18215, `[B,C,H/8,W/8]` (training)."""
        return (self.posterior(images, "encode_sample").sample(generator) * LATENT_SCALE).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """`[B,C,h,w]` scaled latents -> `[B,3,8h,8w]` images in about [-1,1] (not clamped)."""
        return self.decode_unscaled(latents / LATENT_SCALE, "decode")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction `decode(encode(images))`, `[B,3,H,W]`."""
        return self.decode(self.encode(images))


# name -> (block_out_channels, mid-block self-attention). "compact" is resources/compact_vae (fit's
# default, demo-v5's codec); "small" is the live-speed codec of the demo model (demo-v6): a quarter
# of the convolution work, no attention over the 32x32 grid. benchmarks/bench_networks.py, OpenVINO
# bf16, batch 1, 2-core AMD EPYC: encode 3.0 ms and decode 10.7 ms for two 256 px images, against
# 12.7 / 44.3 for "compact" (benchmarks/results/networks.md and networks-zen4.md).
COMPACT_VAE_SIZES: dict[str, tuple[tuple[int, ...], bool]] = {
    "compact": ((64, 128), True),
    "small": ((32, 64), False),
}


def compact_vae_config(size: str = "compact") -> dict:
    """The project's CPU-sized VAEs: 4x4 pixel patches (48 channels at 64x64 for a 256 px image) into
    an AutoencoderKL with two blocks and one 2x downsampling, so 8x in all (256 px -> 32x32 latents
    with 8 channels, twice the Stable-Diffusion VAE's 4, so that 1-2 px lines survive the round
    trip). `size` picks the block widths (`COMPACT_VAE_SIZES`): "compact" (64 and 128 channels, about
    2.7 M parameters; the SD VAE has 83.7 M) or "small" (32 and 64, no mid-block attention, about
    0.7 M). No layer runs at full resolution: on the 2-core development CPU "compact" encodes a
    256 px image in ~21 ms and decodes it in ~36 ms (torch fp32), against ~31 / ~75 ms for an
    AutoencoderKL with 16-32-64-64 channels (1 M parameters) whose first and last blocks run at 256 px."""
    if size not in COMPACT_VAE_SIZES:
        raise ValueError(f"unknown VAE size {size!r}; choose one of {', '.join(COMPACT_VAE_SIZES)}")
    channels, attention = COMPACT_VAE_SIZES[size]
    return {
        PATCH_SIZE_KEY: 4,
        "in_channels": 48,
        "out_channels": 48,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": list(channels),
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 8,
        "norm_num_groups": 8,
        "sample_size": 256,
        "scaling_factor": LATENT_SCALE,
        "mid_block_add_attention": attention,
    }


def _patch_size(config: Mapping, config_file: str) -> int:
    value = config.get(PATCH_SIZE_KEY, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{config_file}: {PATCH_SIZE_KEY} must be a positive integer, got {value!r}")
    return value


def _build_model(config: Mapping, config_file: str) -> AutoencoderKL:
    class_name = config.get("_class_name", "AutoencoderKL")
    if class_name != "AutoencoderKL":
        raise ValueError(f"{config_file}: describes a {class_name}, not an AutoencoderKL")
    try:
        return AutoencoderKL.from_config({k: v for k, v in config.items() if k != PATCH_SIZE_KEY})
    except Exception as e:
        raise ValueError(f"{config_file}: cannot build an AutoencoderKL from this config: {e}") from e


def _wrap(model: AutoencoderKL, config: Mapping, config_file: str, source: str, channels_last: bool) -> VAE:
    try:
        return VAE(model, source=source, channels_last=channels_last, patch_size=_patch_size(config, config_file))
    except ValueError as e:
        raise ValueError(f"{config_file}: {e}") from e


def create_vae(config: dict, *, channels_last: bool = True) -> VAE:
    """A VAE with fresh (random) weights built from an AutoencoderKL config dict (which may hold
    `deco_patch_size`)."""
    return _wrap(_build_model(config, "create_vae config"), config, "create_vae config", "new (random weights)",
                 channels_last)


def hf_hub_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The local Hugging Face hub cache folder, resolved like huggingface_hub does:
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
    else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    env = os.environ if environ is None else environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _is_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _vae_folder_in(folder: Path, looked: list[str]) -> Path | None:
    """`folder` itself or its `vae/` subfolder, whichever holds a config.json; records what it checked."""
    for candidate in (folder, folder / "vae"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
        looked.append(f"{candidate / CONFIG_NAME} (missing)")
    return None


def _snapshot_in_cache(repo_dir: Path, looked: list[str]) -> Path | None:
    """The snapshot that refs/main names, else the newest snapshot folder; None if there is none."""
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if commit and (snapshots / commit).is_dir():
            return snapshots / commit
        looked.append(f"{snapshots / commit} (named by {ref}, missing)")
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    if not found:
        looked.append(f"{snapshots} (no snapshot folders)")
        return None
    return found[-1]


def _fix_hint() -> str:
    return (
        "To fix: copy a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors, "
        "e.g. the stabilityai/sd-vae-ft-mse download) to one of these places, pass its folder path, "
        "point HF_HUB_CACHE at a Hugging Face cache that holds it, "
        "or train the compact VAE with `python -m training.train_vae`."
    )


def resolve_vae_folder(spec: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Path:
    """The local folder holding a VAE's config.json for `spec` (a folder, an HF repo id, or "ema"/"mse").

    Raises VAENotFoundError listing every place it looked. Never uses the network.
    """
    looked: list[str] = []
    text = os.fspath(spec)
    if not text.strip():
        raise VAENotFoundError(f"No VAE found: the VAE spec is empty. {_fix_hint()}")
    repo_id = VAE_SHORT_NAMES.get(text.strip().lower()) if isinstance(spec, str) else None
    label = f"{text!r} (= {repo_id})" if repo_id else repr(text)

    if repo_id is None:
        path = Path(text).expanduser()
        if path.is_dir():
            found = _vae_folder_in(path, looked)
            if found is not None:
                return found
        else:
            looked.append(f"{path.absolute()} (not a folder)")
        if isinstance(spec, str) and _is_repo_id(text) and not path.exists():
            repo_id = text

    if repo_id is not None:
        cache = hf_hub_cache_dir(environ)
        repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
        if repo_dir.is_dir():
            snapshot = _snapshot_in_cache(repo_dir, looked)
            if snapshot is not None:
                found = _vae_folder_in(snapshot, looked)
                if found is not None:
                    return found
        else:
            looked.append(f"{repo_dir} (missing; Hugging Face cache {cache})")

    places = "\n".join(f"  - {item}" for item in looked)
    raise VAENotFoundError(f"No VAE found for {label}. Looked in:\n{places}\n{_fix_hint()}")


def _read_config(folder: Path) -> dict:
    config_file = folder / CONFIG_NAME
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_file}: not a readable JSON config: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return config


def _read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Tensors from the folder's safetensors file, else from its .bin (weights_only, no pickled code)."""
    st_file = folder / SAFETENSORS_NAME
    bin_file = folder / BIN_NAME
    if st_file.is_file():
        try:
            return load_safetensors(str(st_file), device="cpu"), st_file
        except Exception as e:
            raise ValueError(f"{st_file}: cannot read the safetensors weights (truncated or corrupt?): {e}") from e
    if bin_file.is_file():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"{bin_file}: cannot load it as plain tensors with torch.load(weights_only=True) "
                f"(corrupt, or it holds pickled objects other than tensors): {e}. "
                f"Convert it to {SAFETENSORS_NAME} on a trusted machine."
            ) from e
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{bin_file}: expected a state dict of tensors, got {type(state).__name__}")
        return dict(state), bin_file
    raise VAENotFoundError(
        f"No VAE weights in {folder}: it has {CONFIG_NAME} but neither {SAFETENSORS_NAME} nor {BIN_NAME} "
        f"(an incomplete download or copy?). {_fix_hint()}"
    )


def _convert_legacy_keys(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old attention keys (query/key/value/proj_attn) and squeeze 1x1-conv attention weights."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, _, rest = key.rpartition(".")
        module_path, _, leaf = prefix.rpartition(".")
        if ".attentions." in f".{module_path}." and leaf in _LEGACY_ATTENTION_NAMES:
            key = f"{module_path}.{_LEGACY_ATTENTION_NAMES[leaf]}.{rest}"
        target = expected.get(key)
        if target is not None and value.ndim == 4 and target.ndim == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def _load_weights(model: AutoencoderKL, state: dict[str, torch.Tensor], weights_file: Path, config_file: Path) -> None:
    expected = model.state_dict()
    state = _convert_legacy_keys(state, expected)
    mismatch = compare_state_dict(expected, state)
    if mismatch:
        raise ValueError(f"{weights_file}: weights do not fit the model in {config_file}: {mismatch.describe()}")
    model.load_state_dict(state, strict=True)


def load_vae(
    spec: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    environ: Mapping[str, str] | None = None,
) -> VAE:
    """Load a VAE strictly offline, in eval mode.

    spec: a diffusers-layout folder (config.json + diffusion_pytorch_model.safetensors, or .bin),
    a Stable-Diffusion pipeline folder with a `vae/` subfolder, a Hugging Face repo id found in the
    local HF cache (see `hf_hub_cache_dir`; `environ` defaults to os.environ), or "ema"/"mse" for
    stabilityai/sd-vae-ft-ema / -mse. Raises VAENotFoundError when nothing is found, ValueError
    naming the file when a config or weights file is broken or does not fit.
    """
    folder = resolve_vae_folder(spec, environ)
    config_file = folder / CONFIG_NAME
    config = _read_config(folder)
    model = _build_model(config, str(config_file))
    state, weights_file = _read_state_dict(folder)
    _load_weights(model, state, weights_file, config_file)
    model.to(device=device)
    if dtype is not None and dtype != next(model.parameters()).dtype:
        model.to(dtype=dtype)  # (diffusers warns on any dtype cast, so only cast when it changes something)
    return _wrap(model, config, str(config_file), str(folder.absolute()), channels_last)


def save_vae(vae: VAE, folder: str | os.PathLike) -> Path:
    """Write `vae` as a diffusers folder (config.json + diffusion_pytorch_model.safetensors); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vae.model.save_pretrained(folder, safe_serialization=True)
    if vae.patch_size != 1:
        config_file = folder / CONFIG_NAME
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config[PATCH_SIZE_KEY] = vae.patch_size
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
