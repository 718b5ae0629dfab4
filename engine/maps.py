"""Anomaly maps and scores, computed in torch on the engine's device.

Matches the reference's numpy/scipy/skimage pipeline (spec section 3.3), including the
library conventions at the borders:
* `gaussian_blur` = scipy.ndimage.gaussian_filter(mode='reflect', truncate=4.0): half-sample
  symmetric padding (the edge pixel is repeated), radius int(4 sigma + 0.5);
* `resize_bilinear` = skimage.transform.resize(order=1) when upsampling: source coordinate
  (i + 0.5) n_in / n_out - 0.5, mirrored without edge repeat, linear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AnomalyMaps",
    "gaussian_blur",
    "resize_bilinear",
    "compute_anomaly_maps",
    "raw_discrepancies",
    "concat_maps",
    "anomaly_maps",
    "gate_map",
    "gate_fused_maps",
    "IMAGE_CLIP",
    "LATENT_CLIP",
    "GATE_FUSION_WEIGHT",
]

IMAGE_CLIP = 0.4
IMAGE_SIGMA = 3.0
LATENT_CLIP = 0.2
LATENT_SIGMA = 1.0
GATE_SIGMA = 2.0
GATE_FUSION_WEIGHT = 0.4


def _symmetric_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by `radius` on both sides, half-sample symmetric."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _gaussian_kernel(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable gaussian blur of [B,H,W] maps, scipy 'reflect' borders."""
    kernel = _gaussian_kernel(sigma, truncate, maps.dtype, maps.device)
    r = (kernel.numel() - 1) // 2
    b, h, w = maps.shape
    x = maps[:, None]
    x = x.index_select(2, _symmetric_index(h, r, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = x.index_select(3, _symmetric_index(w, r, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


def _linear_weights(n_in: int, n_out: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        c = torch.remainder(c, period)
        c = torch.where(c > n_in - 1, period - c, c)
    else:
        c = torch.zeros_like(c)
    i0 = torch.clamp(torch.floor(c).long(), 0, n_in - 1)
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    w = (c - i0).to(dtype)
    return i0.to(device), i1.to(device), w.to(device)


def resize_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [B,H,W] maps to `size` like skimage resize(order=1, anti_aliasing off)."""
    _, h, w = maps.shape
    i0, i1, wy = _linear_weights(h, size[0], maps.device, maps.dtype)
    rows = maps[:, i0] * (1 - wy)[None, :, None] + maps[:, i1] * wy[None, :, None]
    j0, j1, wx = _linear_weights(w, size[1], maps.device, maps.dtype)
    return rows[:, :, j0] * (1 - wx)[None, None] + rows[:, :, j1] * wx[None, None]


@dataclass
class AnomalyMaps:
    """Per-image maps [B,S,S] (S = crop size, 256 by default) and scores [B] (max of the map
    used for decisions: `gate_fused` when present, else `geometric`)."""

    geometric: torch.Tensor
    arithmetic: torch.Tensor
    image_discrepancy: torch.Tensor
    latent_discrepancy: torch.Tensor
    gate_map: torch.Tensor | None = None
    gate_fused: torch.Tensor | None = None
    memory_discrepancy: torch.Tensor | None = None

    @property
    def final(self) -> torch.Tensor:
        return self.gate_fused if self.gate_fused is not None else self.geometric

    @property
    def scores(self) -> torch.Tensor:
        return self.final.amax(dim=(1, 2))

    def scaled(self, factors: torch.Tensor) -> "AnomalyMaps":
        """The score maps (geometric, arithmetic, gate-fused) of sample b multiplied by
        factors[b] ([B]); the discrepancy and gate maps they are made of stay as they are."""
        f = factors.to(self.geometric.dtype).view(-1, 1, 1)
        return AnomalyMaps(geometric=self.geometric * f, arithmetic=self.arithmetic * f,
                           image_discrepancy=self.image_discrepancy, latent_discrepancy=self.latent_discrepancy,
                           gate_map=self.gate_map,
                           gate_fused=None if self.gate_fused is None else self.gate_fused * f,
                           memory_discrepancy=self.memory_discrepancy)


def concat_maps(parts: list[AnomalyMaps]) -> AnomalyMaps:
    """The AnomalyMaps of consecutive sub-batches joined into one (batch order kept)."""
    def cat(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return AnomalyMaps(**{f: cat(f) for f in ("geometric", "arithmetic", "image_discrepancy",
                                              "latent_discrepancy", "gate_map", "gate_fused",
                                              "memory_discrepancy")})


def _as_tensor(x, device=None) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)


def raw_discrepancies(images: torch.Tensor, recons: torch.Tensor, latents: torch.Tensor,
                      latent_recons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two discrepancies before any clipping: image [B,S,S] = blur_3(max over channels of
    |recon - image|), latent [B,L,L] = blur_1(mean over channels of |z_rec - z|)."""
    image_raw = gaussian_blur((recons.float() - images.float()).abs().amax(dim=1), IMAGE_SIGMA)
    latent_raw = gaussian_blur((latent_recons.float() - latents.float()).abs().mean(dim=1), LATENT_SIGMA)
    return image_raw, latent_raw


def gate_map(gates, size: tuple[int, int]) -> torch.Tensor:
    """DoD gate [B,4,L,L] -> [B,*size]: channel mean, resized, then blurred with sigma 2."""
    g = _as_tensor(gates)
    return gaussian_blur(resize_bilinear(g.mean(dim=1), size), GATE_SIGMA)


def compute_anomaly_maps(images, recons, latents, latent_recons, gates=None, normalization=None,
                         class_ids=None) -> AnomalyMaps:
    """Anomaly maps, in torch.

    images: x0 = VAE decode of the input latents [B,3,S,S]; recons: decode of the
    reconstructed latents [B,3,S,S]; latents / latent_recons: [B,C,L,L] (scaled by the VAE's
    latent factor); gates: optional DoD gate [B,C,L,L] for gate fusion. Without
    `normalization` these are the reference maps (fixed clip constants); with an
    `engine.normalization.MapNormalization` and the class ids [B] the two discrepancies are
    normalized by the good parts' statistics of each sample's category instead, and `geometric`
    is the category's weighted geometric mean (`MapNormalization.fuse`), mixed with the distance
    to good latent patches when the normalization holds a latent memory (`engine.latent_memory`)."""
    x0 = _as_tensor(images)
    device = x0.device
    xr = _as_tensor(recons, device)
    z = _as_tensor(latents, device)
    zr = _as_tensor(latent_recons, device)
    size = tuple(x0.shape[-2:])
    if normalization is None:
        image_d = (xr - x0).abs().amax(dim=1).clamp(0, IMAGE_CLIP) * (1 / IMAGE_CLIP)
        image_d = gaussian_blur(image_d, IMAGE_SIGMA)
        latent_d = (zr - z).abs().mean(dim=1).clamp(0, LATENT_CLIP) * (1 / LATENT_CLIP)
        latent_d = resize_bilinear(gaussian_blur(latent_d, LATENT_SIGMA), size)
        geometric, memory_d = torch.sqrt(image_d * latent_d), None
    else:
        if class_ids is None:
            raise ValueError("normalized maps need the class id of every sample")
        image_d, latent_d, geometric, memory_d = normalization.maps(*raw_discrepancies(x0, xr, z, zr), z, class_ids)
    maps = AnomalyMaps(
        geometric=geometric,
        arithmetic=(image_d + latent_d) / 2,
        image_discrepancy=image_d,
        latent_discrepancy=latent_d,
        memory_discrepancy=memory_d,
    )
    if gates is not None:
        maps.gate_map = gate_map(_as_tensor(gates, device), size)
        maps.gate_fused = gate_fused_maps(maps.geometric, maps.gate_map)
    return maps


def gate_fused_maps(maps, gates):
    """0.6 * geometric map + 0.4 * gate map. `gates` is either the gate map [B,S,S] or the raw
    DoD gate [B,4,L,L] (then turned into the gate map first). Numpy in, numpy out."""
    as_numpy = not isinstance(maps, torch.Tensor)
    m = _as_tensor(maps)
    g = _as_tensor(gates, m.device)
    if g.ndim == 4:
        g = gate_map(g, tuple(m.shape[-2:]))
    fused = (1 - GATE_FUSION_WEIGHT) * m + GATE_FUSION_WEIGHT * g
    return fused.cpu().numpy() if as_numpy else fused


def anomaly_maps(images, recons, latents, latent_recons) -> tuple[np.ndarray, np.ndarray]:
    """Geometric anomaly maps [B,S,S] and scores [B] (max of each map) as float32 numpy."""
    with torch.inference_mode():
        m = compute_anomaly_maps(images, recons, latents, latent_recons)
        return m.geometric.cpu().numpy(), m.scores.cpu().numpy()
