"""DiAD's anomaly maps: reconstruction error plus the weighted diffusion score, smoothed like
DeCo-Diff's maps, softly floored and scaled into [0, 1] (`compute_diad_maps`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..maps import gaussian_blur, resize_bilinear

__all__ = ["MAP_FLOOR", "MAP_SPAN", "MAP_SOFTNESS", "DiADMaps", "compute_diad_maps"]


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
