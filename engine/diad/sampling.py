"""DiAD training and sampling: `ddpm_loss`, `ddim_loop`, `ddim_reconstruct` (noise the input to a
chosen step with fixed seeded noise, walk back with DDIM eta 0), `ddim_sample` and `ddpm_sample`
(from pure noise, for comparison), `diffusion_error` (noise-prediction error)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .schedule import NoiseSchedule, sampling_timesteps

__all__ = ["ddpm_loss", "ddim_loop", "ddim_reconstruct", "ddim_sample", "ddpm_sample", "diffusion_error"]


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
