"""DiAD: a class-conditional noise-prediction diffusion model for multi-class anomaly detection.

The pieces are separate and take explicit arguments, in the manner of diffusers:
* model: `DiADConfig` (JSON beside the weights), the size registry `DIAD_SIZES`, `create_diad`,
  `DiADUNet` (eps prediction; sinusoidal time embedding + MLP, plus a learned class embedding
  added to it), in the VAE's latent space (default) or in pixel space;
* noise schedule: `NoiseScheduleConfig` / `NoiseSchedule` (linear or cosine betas over T steps,
  q(x_t | x_0) in closed form);
* training and sampling: `ddpm_loss`, `ddim_loop`, `ddim_reconstruct` (noise the input to a
  chosen step with fixed seeded noise, walk back with DDIM eta 0), `ddim_sample` and
  `ddpm_sample` (from pure noise, for comparison), `diffusion_error` (noise-prediction error);
* inspection: `DiADSettings`, `compute_diad_maps`, `DiADDetector` (the same public surface as
  `engine.detector.Detector`, see `engine.runtime.InspectionModel`) and `save_diad_folder`.

Anomaly map, per pixel of the S x S crop: reconstruction error (channel mean of |decode(z) -
decode(z_rec)|) plus `score_weight` (0.5) x the diffusion score (channel mean of the squared
noise-prediction error of the noised input, averaged over a fixed seeded set of timesteps),
smoothed like DeCo-Diff's maps, then softly shifted by MAP_FLOOR and scaled by MAP_SPAN into
[0, 1] so that one threshold works for both detectors.
Without a given category and without a classifier, each image is scored under every class the
model was trained on and the class with the smallest selection score (mean of the raw map) wins.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (CheckpointError, check_state_dict, read_folder_weights, read_model_json, save_unet_weights,
                         write_model_json)
from .maps import gaussian_blur, resize_bilinear
from .preprocess import PreprocessConfig, preprocess_frames, to_rgb_uint8
from .runtime import (AnomalyResult, ModelInfo, StageClock, autocast_for, build_results, class_id_in, default_device,
                      predict_in_batches)
from .unet import timestep_embedding
from .version import __version__

__all__ = [
    "DETECTOR_KIND",
    "DIAD_SIZES",
    "DiADConfig",
    "DiADUNet",
    "create_diad",
    "NoiseScheduleConfig",
    "NoiseSchedule",
    "linear_betas",
    "cosine_betas",
    "seeded_noise",
    "ddpm_loss",
    "ddim_loop",
    "ddim_reconstruct",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_error",
    "reconstruction_timesteps",
    "sampling_timesteps",
    "score_timesteps",
    "DiADSettings",
    "DiADMaps",
    "compute_diad_maps",
    "DiADDetector",
    "save_diad_folder",
    "MAP_FLOOR",
    "MAP_SPAN",
    "MAP_SOFTNESS",
]

DETECTOR_KIND = "diad"
UNET_WEIGHTS = "unet.safetensors"

# Map scaling (see `compute_diad_maps`), the counterpart of DeCo-Diff's IMAGE_CLIP / LATENT_CLIP.
# The noise-prediction error of a good part is not 0 (about 0.4-0.9 at t = 25..150, in units of
# the unit-variance noise), so the combined map starts counting at MAP_FLOOR, through a softplus
# of width MAP_SOFTNESS (a hard clamp would tie every pixel below the floor and lower P-AUROC),
# and reaches 1 at about MAP_FLOOR + MAP_SPAN. Chosen on the demo data (DiAD_T on the compact VAE):
# the maxima of good test parts' maps land at about 0.1-0.25 (99th percentile <= 0.4), of
# defective ones at about 0.25-1.
MAP_FLOOR = 0.3
MAP_SPAN = 0.9
MAP_SOFTNESS = 0.05
REC_SIGMA = 3.0
DIFF_SIGMA = 1.0


# ====================================================================== model
@dataclass(frozen=True)
class DiADConfig:
    """Everything needed to build a `DiADUNet`; saved as JSON ('unet' in model.json).

    space 'latent': inputs are VAE latents [B,4,S/8,S/8]; 'pixel': images [B,3,S,S] in [-1,1].
    sample_size: side of the model's input in its own space (latent or image pixels).
    attention_levels: indices into channel_mult that get self-attention after each ResBlock."""

    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 32
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    head_channels: int = 32
    norm_groups: int = 32
    dropout: float = 0.0
    ncls: int = 1
    space: str = "latent"
    size: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        problems = []
        if self.space not in ("latent", "pixel"):
            problems.append(f"space must be 'latent' or 'pixel', got {self.space!r}")
        if self.ncls < 1:
            problems.append(f"ncls must be at least 1, got {self.ncls}")
        if self.in_channels != self.out_channels:
            problems.append(f"a noise predictor has out_channels = in_channels, got {self.out_channels} "
                            f"and {self.in_channels}")
        if self.space == "pixel" and self.in_channels != 3:
            problems.append(f"a pixel-space model takes 3 (RGB) channels, got {self.in_channels}")
        if self.model_channels <= 0 or not self.channel_mult or self.num_res_blocks < 1:
            problems.append("model_channels, channel_mult and num_res_blocks must be positive")
        for m in self.channel_mult:
            if (self.model_channels * m) % self.norm_groups:
                problems.append(f"channels {self.model_channels * m} are not divisible by "
                                f"norm_groups {self.norm_groups}")
        for a in self.attention_levels:
            if not 0 <= a < len(self.channel_mult):
                problems.append(f"attention level {a} is outside 0..{len(self.channel_mult) - 1}")
            elif (self.model_channels * self.channel_mult[a]) % self.head_channels:
                problems.append(f"channels {self.model_channels * self.channel_mult[a]} at attention level {a} "
                                f"are not divisible by head_channels {self.head_channels}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.sample_size % factor:
            problems.append(f"sample_size {self.sample_size} must be divisible by {factor}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid DiADConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiADConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DiADConfig fields: {unknown}")
        return cls(**d)


# name -> architecture; DiAD_T is sized for live CPU inspection.
_DIAD_SIZE_TABLE: dict[str, dict] = {
    "DiAD_T": dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,), dropout=0.0),
    "DiAD_S": dict(model_channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention_levels=(1, 2), dropout=0.1),
    "DiAD_M": dict(model_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2, attention_levels=(1, 2),
                   dropout=0.1),
}
DIAD_SIZES: tuple[str, ...] = tuple(_DIAD_SIZE_TABLE)


def create_diad(size: str = "DiAD_T", ncls: int = 1, sample_size: int = 32, space: str = "latent",
                **overrides) -> "DiADUNet":
    """Build a registered size (`DiAD_T`, `DiAD_S`, `DiAD_M`) with fresh weights. `sample_size` is
    the latent side (crop / 8) in latent space, the crop side in pixel space."""
    if size not in _DIAD_SIZE_TABLE:
        raise ValueError(f"unknown DiAD size {size!r}; choose one of {', '.join(DIAD_SIZES)}")
    channels = 4 if space == "latent" else 3
    spec = {**_DIAD_SIZE_TABLE[size], "in_channels": channels, "out_channels": channels, **overrides}
    return DiADUNet(DiADConfig(sample_size=sample_size, ncls=ncls, space=space, size=size, **spec))


def _zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between; channels cin -> cout."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zeroed(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the H x W positions, residual."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zeroed(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """Layers run in order; ResBlocks also get the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _ResBlock) else layer(x)
        return x


class DiADUNet(nn.Module):
    """eps-prediction UNet: (x_t [B,C,s,s], t [B] (timesteps 0..T-1), class_ids [B]) -> eps [B,C,s,s].

    Conditioning: emb = MLP(sinusoidal(t)) + class_embedding(class_id), added in every ResBlock."""

    def __init__(self, config: DiADConfig):
        super().__init__()
        self.config = config
        mc, groups = config.model_channels, config.norm_groups
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(config.ncls, emb_dim)
        self.conv_in = nn.Conv2d(config.in_channels, mc, 3, padding=1)

        def res(cin: int, cout: int) -> _ResBlock:
            return _ResBlock(cin, cout, emb_dim, groups, config.dropout)

        def attn(ch: int) -> _SelfAttention:
            return _SelfAttention(ch, config.head_channels, groups)

        last = len(config.channel_mult) - 1
        self.down = nn.ModuleList()
        skips, ch = [mc], mc
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                self.down.append(_Stage(layers))
                skips.append(ch)
            if level != last:
                self.down.append(_Stage([_Downsample(ch)]))
                skips.append(ch)
        self.mid = _Stage([res(ch, ch), attn(ch), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                if level != 0 and i == config.num_res_blocks:
                    layers.append(_Upsample(ch))
                self.up.append(_Stage(layers))
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = _zeroed(nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        ids = torch.as_tensor(class_ids, device=x.device).long().reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels)) + self.class_embed(ids)
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ====================================================================== noise schedule
@dataclass(frozen=True)
class NoiseScheduleConfig:
    """kind 'linear' (betas evenly from beta_start to beta_end) or 'cosine' (Nichol & Dhariwal,
    offset cosine_s, betas clamped to [1e-4, 0.9999]); num_train_timesteps T."""

    kind: str = "linear"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"noise schedule kind must be 'linear' or 'cosine', got {self.kind!r}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseScheduleConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown NoiseScheduleConfig fields: {unknown}")
        return cls(**d)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """beta_t = beta_start + (beta_end - beta_start) t / (T - 1), t = 0..T-1; float64 [T]."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, min_beta: float = 1e-4, max_beta: float = 0.9999) -> np.ndarray:
    """beta_t = 1 - f(t+1) / f(t), f(u) = cos^2(((u / T) + s) / (1 + s) * pi / 2), clamped to
    [min_beta, max_beta]; float64 [T]."""
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.clip(1.0 - f[1:] / f[:-1], min_beta, max_beta)


class NoiseSchedule:
    """Betas and cumulative alphas (float64 numpy, one entry per timestep 0..T-1) and the closed
    forms that use them. Coefficients are cast to the tensor's dtype only when applied."""

    def __init__(self, config: NoiseScheduleConfig | None = None):
        self.config = config or NoiseScheduleConfig()
        c = self.config
        if c.kind == "linear":
            self.betas = linear_betas(c.num_train_timesteps, c.beta_start, c.beta_end)
        else:
            self.betas = cosine_betas(c.num_train_timesteps, c.cosine_s)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def alpha_bar(self, t: int) -> float:
        """abar_t for one timestep; t = -1 means the clean signal (abar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def _per_sample(self, values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(values, dtype=torch.float64)[torch.as_tensor(t).long().cpu().reshape(-1)]
        v = v.to(device=like.device, dtype=like.dtype)
        return v.reshape(-1, *([1] * (like.ndim - 1))).expand(like.shape[0], *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """q(x_t | x_0) sampled: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t an int or [B] tensor."""
        t = torch.as_tensor(t)
        return (self._per_sample(np.sqrt(self.alphas_cumprod), t, x0) * x0
                + self._per_sample(np.sqrt(1.0 - self.alphas_cumprod), t, x0) * noise)

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        t = torch.as_tensor(t)
        return ((x_t - self._per_sample(np.sqrt(1.0 - self.alphas_cumprod), t, x_t) * eps)
                / self._per_sample(np.sqrt(self.alphas_cumprod), t, x_t))


# ====================================================================== timesteps and noise
def reconstruction_timesteps(noise_t: int, reverse_steps: int, start_t: int | None = None) -> list[int]:
    """The DDIM grid t_k = round(k * noise_t / reverse_steps), k = 1..reverse_steps, walked down
    from k = start_t (default reverse_steps, i.e. from noise_t): [t_start, ..., t_1], descending."""
    start_t = reverse_steps if start_t is None else start_t
    if not 1 <= start_t <= reverse_steps:
        raise ValueError(f"start_t must be in 1..reverse_steps ({reverse_steps}), got {start_t}")
    if noise_t < reverse_steps:
        raise ValueError(f"noise_t {noise_t} must be at least reverse_steps {reverse_steps}")
    return [int(round(k * noise_t / reverse_steps)) for k in range(start_t, 0, -1)]


def sampling_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """num_steps timesteps evenly spread over T-1 .. 0, descending (T of them: every step)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    steps = np.linspace(num_train_timesteps - 1, 0, num_steps).round().astype(int)
    return [int(t) for t in steps]


def score_timesteps(count: int, t_min: int, t_max: int, seed: int) -> list[int]:
    """`count` timesteps drawn once, uniformly from t_min..t_max, with a seeded generator; sorted."""
    if count < 1 or not 0 <= t_min <= t_max:
        raise ValueError(f"need count >= 1 and 0 <= t_min <= t_max, got {count}, {t_min}, {t_max}")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(int(t) for t in torch.randint(t_min, t_max + 1, (count,), generator=g))


def seeded_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Standard normal noise of `shape` (e.g. [C,H,W]) from its own CPU generator: the same
    numbers every call, whatever else runs."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


# ====================================================================== training and sampling
def ddpm_loss(model, x0: torch.Tensor, class_ids: torch.Tensor, schedule: NoiseSchedule,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM loss on clean inputs x0 [B,C,s,s]: t ~ U{0..T-1}, eps ~ N(0, I),
    MSE(model(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, class), eps) over all elements."""
    t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
    x_t = schedule.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t.to(x0.device), class_ids), noise)


@torch.no_grad()
def ddim_loop(model, x: torch.Tensor, class_ids: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int],
              eta: float = 0.0, generator: torch.Generator | None = None,
              clip_sample: float | None = None) -> torch.Tensor:
    """DDIM from x at timesteps[0] down the descending `timesteps`, ending on the clean signal.

    Per step t -> t_prev (t_prev = -1 after the last, abar = 1): x0_hat = predict_x0, optionally
    clamped to +-clip_sample (pixel space); x = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev -
    sigma^2) eps + sigma z with sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
    eta = 0 is deterministic."""
    ids = torch.as_tensor(class_ids, device=x.device).long()
    steps = list(timesteps)
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        a_t, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), ids).to(x.dtype)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(max(0.0, 1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma ** 2)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def ddim_reconstruct(model, x0: torch.Tensor, class_ids: torch.Tensor, schedule: NoiseSchedule,
                     timesteps: Sequence[int], noise: torch.Tensor, clip_sample: float | None = None) -> torch.Tensor:
    """Partial-noise reconstruction: x_t = q(x_t | x0) at timesteps[0] with the given `noise`
    ([C,s,s] shared by the batch, or [B,C,s,s]), then deterministic DDIM (eta 0) to the clean
    signal. Same input, same noise -> same output, whatever the batch holds."""
    noise = noise.to(device=x0.device, dtype=x0.dtype).expand_as(x0)
    x = schedule.add_noise(x0, noise, int(timesteps[0]))
    return ddim_loop(model, x, class_ids, schedule, timesteps, eta=0.0, clip_sample=clip_sample)


@torch.no_grad()
def ddim_sample(model, shape: Sequence[int], class_ids: torch.Tensor, schedule: NoiseSchedule, num_steps: int = 50,
                eta: float = 0.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                clip_sample: float | None = None) -> torch.Tensor:
    """Generate from pure noise [B,C,s,s] with `num_steps` DDIM steps spread over T-1..0."""
    x = torch.randn(tuple(shape), generator=generator).to(device)
    return ddim_loop(model, x, class_ids, schedule, sampling_timesteps(schedule.num_train_timesteps, num_steps),
                     eta=eta, generator=generator, clip_sample=clip_sample)


@torch.no_grad()
def ddpm_sample(model, shape: Sequence[int], class_ids: torch.Tensor, schedule: NoiseSchedule,
                num_steps: int | None = None, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", clip_sample: float | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling from pure noise [B,C,s,s]: every one of the T steps by default,
    or `num_steps` respaced ones (betas recomputed from abar of the kept steps). Per step:
    mean = sqrt(abar_prev) beta / (1 - abar_t) x0_hat + sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t) x_t,
    variance = beta (1 - abar_prev) / (1 - abar_t), no noise on the last step."""
    steps = sampling_timesteps(schedule.num_train_timesteps, num_steps or schedule.num_train_timesteps)
    x = torch.randn(tuple(shape), generator=generator).to(device)
    ids = torch.as_tensor(class_ids, device=x.device).long()
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        a_t, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        beta = 1.0 - a_t / a_prev
        eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), ids).to(x.dtype)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
        x = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
        if t_prev >= 0:
            std = math.sqrt(beta * (1 - a_prev) / (1 - a_t))
            x = x + std * torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def diffusion_error(model, x0: torch.Tensor, class_ids: torch.Tensor, schedule: NoiseSchedule,
                    timesteps: Sequence[int], noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Diffusion score per position: mean over channels and over `timesteps` of
    (model(q(x_t | x0; noise_k), t_k) - noise_k)^2. noises: one [C,s,s] per timestep. -> [B,s,s]."""
    if len(noises) != len(timesteps):
        raise ValueError(f"{len(noises)} noise tensors for {len(timesteps)} timesteps")
    b = x0.shape[0]
    ids = torch.as_tensor(class_ids, device=x0.device).long().reshape(-1).expand(b)
    eps = torch.cat([n.to(device=x0.device, dtype=x0.dtype).expand_as(x0) for n in noises])
    t = torch.tensor(list(timesteps), dtype=torch.long).repeat_interleave(b)
    x_t = schedule.add_noise(x0.repeat(len(timesteps), 1, 1, 1), eps, t)
    pred = model(x_t, t.to(x0.device), ids.repeat(len(timesteps))).to(x0.dtype)
    err = ((pred - eps) ** 2).mean(dim=1)
    return err.reshape(len(timesteps), b, *err.shape[1:]).mean(dim=0)


# ====================================================================== maps
@dataclass
class DiADMaps:
    """Maps [B,S,S] in crop space. reconstruction: smoothed reconstruction error (image units);
    diffusion: smoothed noise-prediction error (noise units); raw: reconstruction + w * diffusion
    (its mean is the category-selection score); final: raw softly floored and scaled into [0, 1],
    what decisions use."""

    reconstruction: torch.Tensor
    diffusion: torch.Tensor
    final: torch.Tensor
    raw: torch.Tensor

    @property
    def scores(self) -> torch.Tensor:
        return self.final.amax(dim=(1, 2))

    @property
    def selection_scores(self) -> torch.Tensor:
        return self.raw.mean(dim=(1, 2))


def compute_diad_maps(images: torch.Tensor, recons: torch.Tensor, diffusion_score: torch.Tensor,
                      score_weight: float = 0.5) -> DiADMaps:
    """images / recons: [B,3,S,S] in [-1,1] (decoded input latents and decoded reconstruction, or
    the pixel-space input and its reconstruction); diffusion_score [B,s,s] (s = S/8 in latent space).

    reconstruction = blur_3(mean_c |recons - images|); diffusion = resize_S(blur_1(score));
    raw = reconstruction + w * diffusion;
    final = clip(softplus_tau(raw - MAP_FLOOR) / MAP_SPAN, 0, 1), softplus_tau(u) = tau log(1 + e^(u / tau)),
    tau = MAP_SOFTNESS: strictly increasing in raw below the top clip, so pixel rankings survive."""
    x0, xr = images.float(), recons.float()
    size = tuple(x0.shape[-2:])
    rec = gaussian_blur((xr - x0).abs().mean(dim=1), REC_SIGMA)
    diff = gaussian_blur(diffusion_score.float(), DIFF_SIGMA)
    if tuple(diff.shape[-2:]) != size:
        diff = resize_bilinear(diff, size)
    raw = rec + score_weight * diff
    final = (F.softplus(raw - MAP_FLOOR, beta=1 / MAP_SOFTNESS) * (1 / MAP_SPAN)).clamp(0, 1)
    return DiADMaps(reconstruction=rec, diffusion=diff, final=final, raw=raw)


# ====================================================================== settings and detector
@dataclass(frozen=True)
class DiADSettings:
    """Run-time choices that do not change the weights.

    threshold: score above which a part is anomalous; noise_t: the timestep (of T) the input is
    noised to; reverse_steps / start_t: the DDIM grid round(k noise_t / reverse_steps),
    k = 1..reverse_steps, walked from k = start_t; score_steps timesteps drawn with `seed` from
    score_t_min..score_t_max give the diffusion score, weighted by score_weight; `seed` also fixes
    the reconstruction noise. gate_fusion is a DeCo-Diff feature and must stay off; batch_size:
    frames per forward; precision 'fp32', or 'fp16'/'bf16' autocast for the networks."""

    threshold: float = 0.3
    noise_t: int = 100
    reverse_steps: int = 5
    start_t: int = 5
    score_steps: int = 4
    score_t_min: int = 20
    score_t_max: int = 150
    score_weight: float = 0.5
    seed: int = 0
    gate_fusion: bool = False
    batch_size: int = 8
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if not 1 <= self.start_t <= self.reverse_steps:
            raise ValueError(f"start_t must be in 1..reverse_steps ({self.reverse_steps}), got {self.start_t}")
        if self.noise_t < self.reverse_steps:
            raise ValueError(f"noise_t {self.noise_t} must be at least reverse_steps {self.reverse_steps}")
        if self.score_steps < 1 or not 0 <= self.score_t_min <= self.score_t_max:
            raise ValueError("need score_steps >= 1 and 0 <= score_t_min <= score_t_max, got "
                             f"{self.score_steps}, {self.score_t_min}, {self.score_t_max}")
        if self.score_weight < 0:
            raise ValueError(f"score_weight must be >= 0, got {self.score_weight}")
        if self.gate_fusion:
            raise ValueError("gate fusion needs a DeCo-Diff model with gating; DiAD has no DoD gate")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def _load_strict(path: Path, model: nn.Module, sd: dict) -> None:
    check_state_dict(path, model.state_dict(), sd, "its DiAD config")
    model.load_state_dict(sd)


class DiADDetector:
    """DiAD detector for a batch of frames, with the public surface of `engine.detector.Detector`
    (predict, score_latents, settings / with_settings, class_names, class_id, model_id, source,
    preprocess, classifier, device, describe, save). Owns its networks; not thread-safe.

    trained_classes: the class names the model saw in training (default: all), the candidates of
    the min-score category choice (MVTec/VisA models keep every category's id, trained or not)."""

    kind = DETECTOR_KIND

    def __init__(self, unet: DiADUNet, vae, class_names: Sequence[str], preprocess: PreprocessConfig | None = None,
                 classifier=None, settings: DiADSettings | None = None, device: torch.device | str | None = None,
                 schedule: NoiseSchedule | NoiseScheduleConfig | None = None, model_id: str = "", source: str = "",
                 trained_classes: Sequence[str] | None = None):
        cfg = unet.config
        if len(class_names) != cfg.ncls:
            raise ValueError(f"{len(class_names)} class names for a DiAD model with {cfg.ncls} classes")
        unknown = sorted(set(trained_classes or []) - set(class_names))
        if unknown or (trained_classes is not None and not trained_classes):
            raise ValueError(f"trained_classes must be a non-empty subset of the class names, got {trained_classes}")
        self.preprocess = preprocess or PreprocessConfig()
        if cfg.space == "latent":
            if vae is None:
                raise ValueError("a latent-space DiAD model needs its VAE")
            if vae.latent_channels != cfg.in_channels:
                raise ValueError(f"the VAE has {vae.latent_channels} latent channels, "
                                 f"the model expects {cfg.in_channels}")
            expected = self.preprocess.center_size // vae.downsample_factor
        else:
            if vae is not None:
                raise ValueError("a pixel-space DiAD model takes no VAE")
            expected = self.preprocess.center_size
        if expected != cfg.sample_size:
            raise ValueError(f"crop size {self.preprocess.center_size} gives {expected}px model inputs, "
                             f"but the DiAD model was built for {cfg.sample_size}px")
        self.device = torch.device(device) if device is not None else default_device()
        self.unet = unet.eval().to(self.device)
        self.vae = vae.eval().to(self.device) if vae is not None else None
        self.class_names = list(class_names)
        self.trained_classes = [c for c in self.class_names if trained_classes is None or c in trained_classes]
        self.classifier = classifier.to(self.device) if classifier is not None else None
        self.schedule = schedule if isinstance(schedule, NoiseSchedule) else NoiseSchedule(schedule)
        self.model_id = model_id
        self.source = source
        self.on_notice: Callable[[str], None] | None = None
        self.settings = settings or DiADSettings()
        self._check_settings(self.settings)

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def load(cls, path, vae=None, device: torch.device | str | None = None, classifier=None,
             settings: DiADSettings | None = None, **overrides) -> "DiADDetector":
        """From a DiAD model folder (or its model.json / unet.safetensors). `vae` replaces the
        folder's VAE (a VAE, a folder, or a cached Hugging Face id); `overrides` are DiADSettings
        fields (threshold, noise_t, reverse_steps, ...)."""
        from .classifier import load_classifier
        from .vae import VAE, load_vae

        folder = Path(path)
        if folder.is_file() and folder.suffix in (".json", ".safetensors"):
            folder = folder.parent
        if not folder.is_dir():
            raise CheckpointError(folder, "no such DiAD model folder")
        meta = read_model_json(folder)
        if meta.get("detector") != DETECTOR_KIND:
            raise CheckpointError(folder / "model.json",
                                  f"is a {meta.get('detector', 'deco-diff')!r} model, not a DiAD model")
        try:
            config = DiADConfig.from_dict(meta["unet"])
            schedule = NoiseScheduleConfig.from_dict(meta.get("schedule", {}))
            pre = PreprocessConfig.from_dict(meta.get("preprocess", {}))
        except (TypeError, ValueError) as e:
            raise CheckpointError(folder / "model.json", f"bad DiAD config: {e}") from None
        weights, sd = read_folder_weights(folder)
        unet = DiADUNet(config)
        _load_strict(weights, unet, sd)
        vae_model = None
        if isinstance(vae, VAE):
            vae_model = vae
        elif config.space == "latent":
            spec = vae or meta.get("vae") or "vae"
            local = folder / spec if isinstance(spec, str) else None
            vae_model = load_vae(local if local is not None and local.is_dir() else spec)
        if classifier is None and meta.get("classifier") and (folder / meta["classifier"]).exists():
            classifier = load_classifier(folder / meta["classifier"])
        elif classifier is not None and not hasattr(classifier, "predict"):
            classifier = load_classifier(classifier)
        names = meta.get("class_names") or [f"class_{i}" for i in range(config.ncls)]
        try:
            base = DiADSettings(**{k: v for k, v in meta.get("settings", {}).items()
                                   if k in DiADSettings.__dataclass_fields__})
            chosen = replace(settings or base, **overrides)
            return cls(unet, vae_model, names, pre, classifier, chosen, device, schedule,
                       model_id=meta.get("model_id") or folder.name, source=str(folder),
                       trained_classes=meta.get("trained_classes"))
        except ValueError as e:
            raise CheckpointError(folder, str(e)) from None

    def save(self, folder, extra: dict | None = None) -> Path:
        """Write this detector as a DiAD model folder (see `save_diad_folder`)."""
        return save_diad_folder(folder, self.unet, self.class_names, self.preprocess, self.schedule.config,
                                vae=self.vae, classifier=self.classifier, settings=self.settings,
                                model_id=self.model_id, trained_classes=self.trained_classes, extra=extra)

    # ----------------------------------------------------------------- settings
    def _check_settings(self, s: DiADSettings) -> None:
        t_last = self.schedule.num_train_timesteps - 1
        if s.noise_t > t_last or s.score_t_max > t_last:
            raise ValueError(f"noise_t ({s.noise_t}) and score_t_max ({s.score_t_max}) must be at most {t_last}")

    def with_settings(self, **changes) -> "DiADDetector":
        """Change run-time settings in place (threshold, noise_t, reverse_steps, start_t, ...)."""
        new = replace(self.settings, **changes)
        self._check_settings(new)
        self.settings = new
        return self

    def class_id(self, category) -> int:
        """A category name or id -> class id, with a clear error for unknown ones."""
        return class_id_in(self.class_names, category)

    def _autocast(self):
        return autocast_for(self.device, self.settings.precision)

    # ----------------------------------------------------------------- inference
    def _noises(self, shape: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fixed reconstruction noise and one fixed noise per score timestep, [C,s,s] each."""
        s = self.settings
        return seeded_noise(shape, s.seed), [seeded_noise(shape, s.seed + 1 + k) for k in range(s.score_steps)]

    @torch.inference_mode()
    def _score(self, images: torch.Tensor, candidates: list[list[int]], clock=None):
        """Score image k under each class of candidates[k]. Returns (DiADMaps over all rows,
        reconstructions [N,3,S,S], row -> image index list)."""
        clock = clock or StageClock(self.device)
        s = self.settings
        x = images.to(self.device, non_blocking=True).float()
        rows = [k for k, cands in enumerate(candidates) for _ in cands]
        ids = torch.tensor([c for cands in candidates for c in cands], dtype=torch.long, device=self.device)
        with self._autocast():
            z = self.vae.encode(x).float() if self.vae is not None else x
            clock.lap("encode")
            z_rows = z[rows]
            rec_noise, score_noises = self._noises(z.shape[1:])
            steps = reconstruction_timesteps(s.noise_t, s.reverse_steps, s.start_t)
            clip = 1.0 if self.unet.config.space == "pixel" else None
            z_rec = ddim_reconstruct(self.unet, z_rows, ids, self.schedule, steps, rec_noise, clip).float()
            t_score = score_timesteps(s.score_steps, s.score_t_min, s.score_t_max, s.seed)
            err = diffusion_error(self.unet, z_rows, ids, self.schedule, t_score, score_noises).float()
            clock.lap("unet")
            if self.vae is not None:
                decoded = self.vae.decode(torch.cat([z, z_rec])).float()
                x0, xr = decoded[:z.shape[0]][rows], decoded[z.shape[0]:]
            else:
                x0, xr = z_rows, z_rec
            clock.lap("decode")
        maps = compute_diad_maps(x0, xr, err, s.score_weight)
        clock.lap("maps")
        return maps, xr, rows

    def score_latents(self, images: torch.Tensor, class_ids: torch.Tensor | None = None, clock=None):
        """Core math on a preprocessed batch: images [B,3,S,S] in [-1,1] on any device, class_ids
        [B] (None: each image under the class with the smallest score). Returns (DiADMaps with
        .final [B,S,S], reconstructions [B,3,S,S])."""
        maps, recons, _, _ = self._score_and_select(images, None if class_ids is None else
                                                    [int(i) for i in torch.as_tensor(class_ids).reshape(-1)], clock)
        return maps, recons

    def select_category(self, images: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Classifier-free category choice: (class ids [B], selection scores [B, ncls], NaN for
        classes not trained on), the trained class with the smallest selection score (mean of the
        raw map) for each image."""
        _, _, ids, scores = self._score_and_select(images, None)
        return ids, scores

    def _score_and_select(self, images, ids: list[int | None] | None, clock=None):
        b = images.shape[0]
        ids = list(ids) if ids is not None else [None] * b
        if len(ids) != b:
            raise ValueError(f"{len(ids)} class ids for {b} images")
        everything = [self.class_names.index(c) for c in self.trained_classes]
        candidates = [everything if i is None else [self.class_id(i)] for i in ids]
        maps, recons, rows = self._score(images, candidates, clock)
        sel = maps.selection_scores.cpu()
        pick, chosen, all_scores = [], [], torch.full((b, len(self.class_names)), float("nan"))
        start = 0
        for k, cands in enumerate(candidates):
            block = sel[start:start + len(cands)]
            all_scores[k, cands] = block
            j = int(torch.argmin(block))
            pick.append(start + j)
            chosen.append(cands[j])
            start += len(cands)
        if len(pick) != len(rows):
            idx = torch.tensor(pick, device=maps.final.device)
            maps = DiADMaps(*(getattr(maps, f.name)[idx] for f in fields(DiADMaps)))
            recons = recons[idx]
        return maps, recons, chosen, all_scores

    def predict(self, frames: Sequence[np.ndarray], category=None, channel_order: str = "rgb") -> list[AnomalyResult]:
        """Inspect HxWx{1,3,4} frames (uint8, uint16 or float in [0,1]). `category`: a name or id
        for all frames, a list with one per frame, or None: the classifier's answer, the only class
        the model was trained on, else the trained class under which the frame scores lowest
        ('min-score').
        Returns one `engine.runtime.AnomalyResult` per frame, in order. Out of memory: smaller
        batches, then the CPU (see `engine.runtime.predict_in_batches`)."""
        return predict_in_batches(self, frames, category, channel_order)

    def _predict_batch(self, frames: list[np.ndarray], cats: list, channel_order: str) -> list[AnomalyResult]:
        clock = StageClock(self.device)
        rgb = [to_rgb_uint8(f, channel_order) for f in frames]
        images = preprocess_frames(rgb, self.preprocess, channel_order="rgb")
        clock.lap("preprocess")
        ids: list[int | None] = [None if c is None else self.class_id(c) for c in cats]
        conf: list[float | None] = [None] * len(ids)
        source = ["given" if i is not None else "" for i in ids]
        todo = [k for k, i in enumerate(ids) if i is None]
        if todo and self.classifier is not None:
            for k, (name, p) in zip(todo, self.classifier.predict([rgb[k] for k in todo])):
                if name not in self.class_names:
                    raise ValueError(f"the classifier answered {name!r}, which this model does not know")
                ids[k], conf[k], source[k] = self.class_names.index(name), float(p), "classifier"
        elif todo and len(self.trained_classes) == 1:
            for k in todo:
                ids[k], source[k] = self.class_names.index(self.trained_classes[0]), "single"
        else:
            for k in todo:
                source[k] = "min-score"
        clock.lap("classify")
        maps, recons, chosen, _ = self._score_and_select(images, ids, clock)
        return build_results(rgb, images, maps.final, recons, chosen, conf, source, self.class_names,
                             self.preprocess, self.settings.threshold, clock)

    def describe(self) -> ModelInfo:
        """What the UI and the results log show about the loaded model."""
        c = self.unet.config
        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        selection = ("classifier" if self.classifier is not None
                     else "single" if len(self.trained_classes) == 1 else "min-score")
        return ModelInfo(
            detector=DETECTOR_KIND, model_id=self.model_id, source=self.source, size=c.size,
            ncls=c.ncls, gating=False, classes=self.class_names, device=dev,
            unet_parameters=self.unet.num_parameters,
            vae=getattr(self.vae, "source", "") if self.vae is not None else "",
            classifier=self.classifier is not None, preprocess=self.preprocess.to_dict(),
            space=c.space, schedule=self.schedule.config.to_dict(), category_selection=selection,
            trained_classes=list(self.trained_classes),
        )


def save_diad_folder(folder, unet: DiADUNet, class_names: Sequence[str], preprocess: PreprocessConfig,
                     schedule: NoiseScheduleConfig | None = None, *, vae=None, vae_ref: str | None = None,
                     classifier=None, settings: DiADSettings | None = None, model_id: str = "",
                     trained_classes: Sequence[str] | None = None, extra: dict | None = None) -> Path:
    """Write a DiAD model folder that `engine.loading.load_model` opens as a `DiADDetector`:
    unet.safetensors, model.json ("detector": "diad", the DiADConfig under "unet", the noise
    schedule, settings) and, for a latent-space model, either a copy of the VAE in vae/ (`vae`)
    or a reference to one (`vae_ref`), exactly like DeCo-Diff folders; `trained_classes` (default
    all) are the min-score category candidates. model.json is written last."""
    from .classifier import save_classifier
    from .vae import save_vae

    if unet.config.space == "latent" and (vae is None) == (vae_ref is None):
        raise ValueError("give exactly one of vae (copied into the folder) or vae_ref (referenced)")
    if unet.config.space == "pixel" and (vae is not None or vae_ref is not None):
        raise ValueError("a pixel-space DiAD model takes no VAE")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_unet_weights(unet, folder)
    if vae is not None:
        save_vae(vae, folder / "vae")
    if classifier is not None:
        save_classifier(classifier, folder / "classifier")
    meta = {
        "detector": DETECTOR_KIND,
        "model_id": model_id or folder.name,
        "app_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "unet": unet.config.to_dict(),
        "schedule": (schedule or NoiseScheduleConfig()).to_dict(),
        "vae": "vae" if vae is not None else (str(vae_ref) if vae_ref is not None else None),
        "classifier": "classifier" if classifier is not None else None,
        "class_names": list(class_names),
        "trained_classes": list(trained_classes) if trained_classes is not None else list(class_names),
        "preprocess": preprocess.to_dict(),
        "settings": {k: v for k, v in (settings or DiADSettings()).to_dict().items()
                     if k not in ("batch_size", "precision", "gate_fusion")},
        **(extra or {}),
    }
    write_model_json(folder, meta)
    return folder
