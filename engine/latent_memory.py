"""A memory of good parts' latent patches: how far each latent position of a part is from the
nearest good one.

DeCo-Diff scores a part by how badly the UNet reconstructs it. On textured products (the grain of
polycrystalline solar cells) a good part's own texture reconstructs about as badly as a small
defect. A second, independent measure helps there: each latent vector of the part [C] (the VAE's
latent at one position of the L x L grid) against the same position's vectors of the good training
parts, shifted by up to `MEMORY_SHIFT` latent pixels either way (parts are aligned, but not to the
pixel). The distance to the nearest of them, blurred, is the memory discrepancy [L,L]; a defect
that no good part shows is far from all of them. (This is PatchCore's idea on the VAE's own
latents, restricted to nearby positions.)

The distances are normalized like the DeCo-Diff maps (`engine.normalization`): a category's mean
and std over held-out good parts, then a scale that puts the good parts' 99th-percentile score at
`GOOD_TAIL_SCORE`. The memory map is mixed into the fused DeCo-Diff map as

    final = clip(gain[c] * ((1 - w[c]) * fused + w[c] * memory_d), 0, 1)

with w[c] chosen on labelled validation parts (`training.normalize_maps.choose_memory_weights`)
and gain[c] putting the good parts' 99th-percentile score of the mix back at GOOD_TAIL_SCORE.
A category with w = 0 keeps the DeCo-Diff map unchanged.

Measured on ELPV's validation split (UNet_T fitted in 45 min): mono 0.878 -> 0.885 image AUROC,
poly 0.750 -> 0.843 (620 good training cells in the memory; 200 gave 0.814).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .maps import gaussian_blur, resize_bilinear

__all__ = ["LatentMemory", "MEMORY_FILE", "MEMORY_SHIFT", "MEMORY_SIGMA", "MEMORY_MAX_IMAGES",
           "MEMORY_WEIGHT_CHOICES", "DEFAULT_MEMORY_WEIGHT", "memory_distances", "fit_memory"]

MEMORY_FILE = "latent_memory.safetensors"
# Latent pixels a good patch may sit from the query's position, in each direction.
MEMORY_SHIFT = 1
# Blur (latent pixels) of the nearest-neighbour distance map: single latent vectors are noisy.
MEMORY_SIGMA = 3.0
# Good training images kept per category (drawn with a fixed seed above this); 1,000 latents of
# 8 x 32 x 32 are 33 MB of float32.
MEMORY_MAX_IMAGES = 1000
# Share of the memory map in the final map; the choices fit tries on validation parts.
MEMORY_WEIGHT_CHOICES = (0.0, 0.25, 0.5, 0.75)
# The share used when no labelled validation parts are there to choose on.
DEFAULT_MEMORY_WEIGHT = 0.5
# Queries per distance computation (bounds the [L,L,B,N] cross-product tensor).
QUERY_CHUNK = 4
# Padding value of the shifted memory: a latent no query comes near.
_FAR = 1e4


def memory_layout(memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Good latents [N,C,L,L] -> (vectors by position [L*L,C,N], their squared norms [L*L,1,N]),
    the layout `memory_distances` multiplies against (computed once per model load)."""
    n, c, h, w = memory.shape
    by_position = memory.float().permute(2, 3, 1, 0).reshape(h * w, c, n).contiguous()
    return by_position, by_position.pow(2).sum(dim=1, keepdim=True)


def memory_distances(memory: torch.Tensor | tuple[torch.Tensor, torch.Tensor], latents: torch.Tensor,
                     shift: int = MEMORY_SHIFT, sigma: float = MEMORY_SIGMA) -> torch.Tensor:
    """Nearest-neighbour distance map of each query latent.

    memory: good latents [N,C,L,L] (or their `memory_layout`); latents: queries [B,C,L,L] (same
    C and L). Returns [B,L,L]: at each position, the Euclidean distance to the closest memory
    vector at that position shifted by up to `shift` pixels (Chebyshev), blurred with `sigma`.

    Comparing query position p with memory position p + s is comparing the query shifted by -s
    with the memory in place, so the memory keeps one layout: per position, one batched matrix
    product of the (2*shift+1)^2 shifted query vectors with the N memory vectors, as
    |q|^2 + |m|^2 - 2 q.m, minimum over N, then each shift's map moved back and the minimum taken."""
    by_position, squared = memory_layout(memory) if isinstance(memory, torch.Tensor) else memory
    b, c, h, w = latents.shape
    if by_position.shape[:2] != (h * w, c):
        raise ValueError(f"latents {list(latents.shape)} do not match a memory of {by_position.shape[1]} "
                         f"channels on {by_position.shape[0]} positions")
    by_position, squared = by_position.to(latents.device), squared.to(latents.device)
    side = 2 * shift + 1
    padded = F.pad(latents.float(), (shift, shift, shift, shift), value=_FAR)
    out = []
    for q in padded.split(QUERY_CHUNK):
        # shifted[k, i, :, y, x] = query at (y - dy, x - dx), k = dy * side + dx (offsets from -shift)
        shifted = torch.stack([q[:, :, 2 * shift - dy:2 * shift - dy + h, 2 * shift - dx:2 * shift - dx + w]
                               for dy in range(side) for dx in range(side)])  # [S,b,C,L,L]
        vectors = shifted.permute(3, 4, 0, 1, 2).reshape(h * w, -1, c)  # [L*L, S*b, C]
        sq = torch.baddbmm(squared, vectors, by_position, alpha=-2).amin(dim=-1)  # [L*L, S*b]
        sq = (sq + vectors.pow(2).sum(dim=-1)).view(h, w, side, side, -1)
        far = torch.full((h + 2 * shift, w + 2 * shift, q.shape[0]), float("inf"), device=q.device)
        best = far[shift:shift + h, shift:shift + w].clone()
        for dy in range(side):
            for dx in range(side):
                moved = far.clone()
                moved[2 * shift - dy:2 * shift - dy + h, 2 * shift - dx:2 * shift - dx + w] = sq[:, :, dy, dx]
                best = torch.minimum(best, moved[shift:shift + h, shift:shift + w])
        out.append(best.clamp_min(0).sqrt().permute(2, 0, 1))
    distances = torch.cat(out)
    return gaussian_blur(distances, sigma) if sigma > 0 else distances


@dataclass
class LatentMemory:
    """Per-category good latents and the statistics that turn their distances into a map.

    memories: one [N_c,C,L,L] tensor per category (None for a category without one); mean / std /
    scale: [K] (z units mapped to 1.0); weight: [K] share of the memory map in the final map;
    gain: [K] factor of the mixed map; shift / sigma: see `memory_distances`."""

    memories: list[torch.Tensor | None]
    mean: torch.Tensor
    std: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    gain: torch.Tensor
    shift: int = MEMORY_SHIFT
    sigma: float = MEMORY_SIGMA

    def __post_init__(self) -> None:
        k = len(self.memories)
        for name in ("mean", "std", "scale", "weight", "gain"):
            t = getattr(self, name)
            if t.shape != (k,):
                raise ValueError(f"latent memory {name} must be [{k}], got {list(t.shape)}")
        if (self.std <= 0).any() or (self.scale <= 0).any() or (self.gain <= 0).any():
            raise ValueError("latent memory std, scale and gain must be positive")
        if ((self.weight < 0) | (self.weight > 1)).any():
            raise ValueError(f"latent memory weights must lie in [0, 1], got {self.weight.tolist()}")
        shapes = {tuple(m.shape[1:]) for m in self.memories if m is not None}
        if len(shapes) > 1:
            raise ValueError(f"latent memories of different shapes: {sorted(shapes)}")
        self._layouts: list | None = None  # memory_layout of each memory, made on first use

    def _layout(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._layouts is None:
            self._layouts = [None if m is None else memory_layout(m) for m in self.memories]
        return self._layouts[k]

    @property
    def num_classes(self) -> int:
        return len(self.memories)

    def raw(self, latents: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Latents [B,C,L,L] -> unnormalized distance maps [B,L,L] (0 for a category without memory)."""
        out = torch.zeros(latents.shape[0], *latents.shape[-2:], device=latents.device)
        ids = class_ids.long().cpu()
        for k in ids.unique().tolist():
            if self.memories[k] is None:
                continue
            rows = (ids == k).nonzero().flatten().to(latents.device)
            out[rows] = memory_distances(self._layout(k), latents[rows], self.shift, self.sigma)
        return out

    def normalize(self, raw: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Distance maps [B,L,L] -> the memory discrepancy in [0,1]."""
        ids = class_ids.long().to(self.mean.device)
        mean, std, scale = (t[ids].to(raw.device).view(-1, 1, 1) for t in (self.mean, self.std, self.scale))
        return ((raw - mean) / std / scale).clamp(0, 1)

    def mix(self, fused: torch.Tensor, memory_d: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """The fused DeCo-Diff map [B,S,S] and the memory discrepancy on the same grid -> final map."""
        ids = class_ids.long().to(self.weight.device)
        w = self.weight[ids].to(fused.device, fused.dtype).view(-1, 1, 1)
        g = self.gain[ids].to(fused.device, fused.dtype).view(-1, 1, 1)
        return (g * ((1 - w) * fused + w * memory_d)).clamp(0, 1)

    def apply(self, fused: torch.Tensor, latents: torch.Tensor, class_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final map [B,S,S], memory discrepancy on the map's grid [B,S,S]). Samples whose category
        has weight 0 skip the distance computation."""
        ids = class_ids.long().cpu()
        memory_d = torch.zeros_like(fused)
        active = (self.weight.cpu()[ids] > 0).nonzero().flatten()
        if len(active):
            rows = active.to(fused.device)
            small = self.normalize(self.raw(latents[rows], ids[active]), ids[active])
            memory_d[rows] = resize_bilinear(small, tuple(fused.shape[-2:]))
        return self.mix(fused, memory_d, class_ids), memory_d

    def with_weights(self, weight: torch.Tensor, gain: torch.Tensor) -> "LatentMemory":
        """A copy with other shares and gains [K]; it shares the memories and their layout."""
        copy = LatentMemory(self.memories, self.mean, self.std, self.scale, weight.float(), gain.float(),
                            self.shift, self.sigma)
        copy._layouts = self._layouts
        return copy

    def to(self, device) -> "LatentMemory":
        return LatentMemory([None if m is None else m.to(device) for m in self.memories],
                            *(t.to(device) for t in (self.mean, self.std, self.scale, self.weight, self.gain)),
                            shift=self.shift, sigma=self.sigma)

    def describe(self) -> dict:
        return {"images": [0 if m is None else int(m.shape[0]) for m in self.memories],
                "weight": [round(float(w), 3) for w in self.weight]}

    # ------------------------------------------------------------------ storage
    def save(self, folder: Path) -> dict:
        """Write MEMORY_FILE (memories as float16) into the model folder; returns the model.json entry."""
        from safetensors.torch import save_file

        tensors = {k: getattr(self, k).detach().cpu().float().contiguous()
                   for k in ("mean", "std", "scale", "weight", "gain")}
        for k, m in enumerate(self.memories):
            if m is not None:
                tensors[f"memory.{k}"] = m.detach().cpu().half().contiguous()
        save_file(tensors, str(Path(folder) / MEMORY_FILE))
        return {"file": MEMORY_FILE, "shift": self.shift, "sigma": self.sigma,
                "images": [0 if m is None else int(m.shape[0]) for m in self.memories]}

    @classmethod
    def load(cls, folder: Path, entry: dict, num_classes: int) -> "LatentMemory":
        """Read it back as the model.json entry describes; CheckpointError naming the file when it
        is missing or malformed."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .checkpoint import CheckpointError

        path = Path(folder) / str(entry.get("file", MEMORY_FILE))
        if not path.is_file():
            raise CheckpointError(path, "model.json names a latent memory, but the file is missing")
        try:
            t = load_file(str(path))
            memories = [t[f"memory.{k}"].float() if f"memory.{k}" in t else None for k in range(num_classes)]
            return cls(memories, t["mean"], t["std"], t["scale"], t["weight"], t["gain"],
                       shift=int(entry.get("shift", MEMORY_SHIFT)), sigma=float(entry.get("sigma", MEMORY_SIGMA)))
        except (SafetensorError, KeyError, ValueError, TypeError, OSError) as e:
            raise CheckpointError(path, f"unreadable latent memory: {e}") from None


def _tail_scale(best: torch.Tensor, quantile: float, tail_score: float) -> float:
    return max(float(np.quantile(best.numpy(), quantile)), 1e-3) / tail_score


def fit_memory(memories: dict[str, torch.Tensor], stats_latents: dict[str, torch.Tensor],
               scale_latents: dict[str, torch.Tensor], class_names: Sequence[str], quantile: float,
               tail_score: float, shift: int = MEMORY_SHIFT, sigma: float = MEMORY_SIGMA) -> LatentMemory:
    """A LatentMemory from good latents per category: memories[c] [N,C,L,L] (training images),
    stats_latents[c] (held-out images: mean and std of the distances), scale_latents[c] (other
    held-out images: the scale that puts their `quantile` best score at `tail_score`). Weights
    start at DEFAULT_MEMORY_WEIGHT and gains at 1 (`with_weights` sets the chosen ones)."""
    k = len(class_names)
    mean, std, scale = torch.zeros(k), torch.ones(k), torch.ones(k)
    stored: list[torch.Tensor | None] = [None] * k
    for i, name in enumerate(class_names):
        if name not in memories:
            continue
        if name not in stats_latents or name not in scale_latents:
            raise ValueError(f"{name}: held-out good images are needed to fit the latent memory")
        stored[i] = memories[name].float().cpu()
        d_stats = memory_distances(stored[i], stats_latents[name].float().cpu(), shift, sigma)
        mean[i] = d_stats.mean()
        std[i] = max(float(d_stats.std()), 1e-6)
        d_scale = memory_distances(stored[i], scale_latents[name].float().cpu(), shift, sigma)
        scale[i] = _tail_scale(((d_scale - mean[i]) / std[i]).flatten(1).amax(dim=1), quantile, tail_score)
    weight = torch.tensor([DEFAULT_MEMORY_WEIGHT if m is not None else 0.0 for m in stored])
    return LatentMemory(stored, mean, std, scale, weight, torch.ones(k), shift=shift, sigma=sigma)
