"""DiAD's noise schedule (`NoiseScheduleConfig` / `NoiseSchedule`: linear or cosine betas over T
steps, q(x_t | x_0) in closed form), the timestep grids and the fixed seeded noise."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..configs import config_from_dict

__all__ = ["NoiseScheduleConfig", "NoiseSchedule", "linear_betas", "cosine_betas", "reconstruction_timesteps",
           "sampling_timesteps", "score_timesteps", "seeded_noise"]


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
        return config_from_dict(cls, d)


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
