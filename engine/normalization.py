"""Anomaly maps normalized by what good parts look like, learnt from held-out good images.

The reference clips its two discrepancy maps at constants tuned for the Stable-Diffusion VAE
(`maps.IMAGE_CLIP`, `maps.LATENT_CLIP`). A model trained here on another VAE, another product
and another amount of training deviates on good parts by very different amounts: the clip then
saturates (every part scores 1.0) or never bites, and a part's normal edges and texture light up.

A `MapNormalization` holds, per category, the mean and standard deviation of the good parts'
raw (blurred, unclipped) discrepancies, either per position (parts that are aligned: each
position's own typical deviation, so a busbar or an edge that always reconstructs badly does not
light up) or one global value. The normalized maps are

    image_d  = clip(((blur3(max_c |x_rec - x0|) - mean_img[c]) / std_img[c]) / scale[c], 0, 1)
    latent_d = resize(clip(((blur1(mean_c |z_rec - z|) - mean_lat[c]) / std_lat[c]) / scale[c], 0, 1))

then fused as a weighted geometric mean, image_d ** w[c] * latent_d ** (1 - w[c]): w = 0.5 is
the reference's fusion, sqrt(image_d * latent_d); a product whose decoded images do not reproduce
its own texture (the VAE loses the grain of polycrystalline cells, say) scores better on the
latent discrepancy alone, w = 0. `fit` chooses w per category on labelled validation parts when
the data has them (`training.normalize_maps.choose_image_weights`), and keeps 0.5 otherwise. `scale[c]` (z units) is chosen so that the
`SCALE_QUANTILE` quantile of good parts' scores lands at `GOOD_TAIL_SCORE` (0.4), on images that
were not used for the mean and std: a score means the same for every product, and a good part
reaches the top of the scale (1.0) only at 2.5 times the good parts' tail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .latent_memory import LatentMemory
from .maps import gaussian_blur, raw_discrepancies, resize_bilinear

__all__ = ["MapNormalization", "raw_discrepancies", "fit_normalization", "NORMALIZATION_FILE",
           "NORMALIZATION_MODES", "GOOD_TAIL_SCORE", "SCALE_QUANTILE", "MIN_FIT_IMAGES",
           "DEFAULT_IMAGE_WEIGHT", "IMAGE_WEIGHT_CHOICES", "MIN_FUSION_GAIN"]

NORMALIZATION_FILE = "normalization.safetensors"
NORMALIZATION_MODES = ("position", "global")
# Score a good part at the SCALE_QUANTILE quantile of held-out good scores gets.
GOOD_TAIL_SCORE = 0.4
SCALE_QUANTILE = 0.99
# Blur (pixels of each map's own grid) of the per-position statistics: few images give noisy ones.
STATS_SIGMA_IMAGE = 6.0
STATS_SIGMA_LATENT = 1.0
# A position's std never falls below this share of the category's median std.
STD_FLOOR_SHARE = 0.5
MIN_FIT_IMAGES = 2
# Exponent of the image discrepancy in the fused map (the latent's is 1 - w): 0.5 is the reference's
# geometric mean; the choices `choose_image_weights` tries, the reference's first.
DEFAULT_IMAGE_WEIGHT = 0.5
IMAGE_WEIGHT_CHOICES = (0.5, 0.25, 0.0)
# A weight other than the reference's must beat it by this much validation image AUROC.
MIN_FUSION_GAIN = 0.005


@dataclass
class MapNormalization:
    """Per-category statistics of good parts' raw discrepancies.

    image_mean / image_std: [C,S,S]; latent_mean / latent_std: [C,L,L] (constant over positions
    in 'global' mode); scale: [C] z-units mapped to a score of 1.0; mode: 'position' | 'global';
    images: {category: (images for mean/std, images for the scale)}; image_weight: [C] exponent
    of the image discrepancy in the fused map (DEFAULT_IMAGE_WEIGHT for every category if None)."""

    image_mean: torch.Tensor
    image_std: torch.Tensor
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    scale: torch.Tensor
    mode: str = "position"
    images: dict | None = None
    image_weight: torch.Tensor | None = None
    details: dict | None = None  # how it was fitted (training images used, fusion choice): model.json only
    memory: LatentMemory | None = None  # good latent patches mixed into the fused map (engine.latent_memory)

    def __post_init__(self) -> None:
        if self.image_weight is None:
            self.image_weight = torch.full_like(self.scale, DEFAULT_IMAGE_WEIGHT)
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {self.mode!r}")
        c = self.scale.shape[0]
        for name in ("image_mean", "image_std", "latent_mean", "latent_std"):
            t = getattr(self, name)
            if t.ndim != 3 or t.shape[0] != c:
                raise ValueError(f"{name} must be [{c},H,W], got {list(t.shape)}")
        if (self.image_std <= 0).any() or (self.latent_std <= 0).any() or (self.scale <= 0).any():
            raise ValueError("normalization std and scale must be positive")
        if self.image_weight.shape != self.scale.shape or ((self.image_weight < 0) | (self.image_weight > 1)).any():
            raise ValueError(f"image_weight must be [{c}] values in [0, 1], got {self.image_weight.tolist()}")
        if self.memory is not None and self.memory.num_classes != c:
            raise ValueError(f"the latent memory covers {self.memory.num_classes} categories, the statistics {c}")

    @property
    def num_classes(self) -> int:
        return int(self.scale.shape[0])

    def normalize(self, image_raw: torch.Tensor, latent_raw: torch.Tensor,
                  class_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw discrepancies [B,S,S] and [B,L,L] -> the two maps in [0,1] on their own grids."""
        ids = class_ids.long().to(self.scale.device)
        s = self.scale[ids].view(-1, 1, 1)

        def norm(raw, mean, std):
            if raw.shape[-2:] != mean.shape[-2:]:
                raise ValueError(f"maps of {list(raw.shape[-2:])} px, normalization fitted on {list(mean.shape[-2:])}")
            z = (raw - mean[ids].to(raw.device)) / std[ids].to(raw.device)
            return (z / s.to(raw.device)).clamp(0, 1)

        return norm(image_raw, self.image_mean, self.image_std), norm(latent_raw, self.latent_mean, self.latent_std)

    def fuse(self, image_d: torch.Tensor, latent_d: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """The two maps [B,S,S] (latent already on the image grid) -> the fused score map [B,S,S]:
        image_d ** w * latent_d ** (1 - w) with each sample's category weight (the geometric mean,
        computed as sqrt(image_d * latent_d), where every weight is 0.5)."""
        w = self.image_weight[class_ids.long().to(self.image_weight.device)].to(image_d.device, image_d.dtype)
        if bool((w == DEFAULT_IMAGE_WEIGHT).all()):
            return torch.sqrt(image_d * latent_d)
        w = w.view(-1, 1, 1)
        return image_d.pow(w) * latent_d.pow(1 - w)

    def maps(self, image_raw: torch.Tensor, latent_raw: torch.Tensor, latents: torch.Tensor | None,
             class_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Raw discrepancies (image [B,S,S], latent [B,L,L]) and the input latents [B,C,L,L] ->
        (image_d, latent_d on the image grid, final map, memory discrepancy or None), all [B,S,S]:
        normalized, fused, then mixed with the latent memory when there is one."""
        image_d, latent_small = self.normalize(image_raw, latent_raw, class_ids)
        latent_d = resize_bilinear(latent_small, tuple(image_d.shape[-2:]))
        final = self.fuse(image_d, latent_d, class_ids)
        memory_d = None
        if self.memory is not None:
            if latents is None:
                raise ValueError("a normalization with a latent memory needs the input latents")
            final, memory_d = self.memory.apply(final, latents, class_ids)
        return image_d, latent_d, final, memory_d

    def with_image_weights(self, weights: torch.Tensor) -> "MapNormalization":
        """A copy with other fusion weights [C] (statistics, scale and memory unchanged)."""
        return MapNormalization(self.image_mean, self.image_std, self.latent_mean, self.latent_std, self.scale,
                                mode=self.mode, images=self.images, image_weight=weights.float(), memory=self.memory)

    def with_memory(self, memory: LatentMemory | None) -> "MapNormalization":
        """A copy with another latent memory (or none)."""
        return MapNormalization(self.image_mean, self.image_std, self.latent_mean, self.latent_std, self.scale,
                                mode=self.mode, images=self.images, image_weight=self.image_weight,
                                details=self.details, memory=memory)

    def to(self, device) -> "MapNormalization":
        return MapNormalization(*(t.to(device) for t in (self.image_mean, self.image_std, self.latent_mean,
                                                          self.latent_std, self.scale)),
                                mode=self.mode, images=self.images, image_weight=self.image_weight.to(device),
                                memory=None if self.memory is None else self.memory.to(device))

    # ------------------------------------------------------------------ storage
    def save(self, folder: Path) -> dict:
        """Write NORMALIZATION_FILE into the model folder; returns the model.json entry."""
        from safetensors.torch import save_file

        tensors = {k: getattr(self, k).detach().cpu().float().contiguous()
                   for k in ("image_mean", "image_std", "latent_mean", "latent_std", "scale", "image_weight")}
        save_file(tensors, str(Path(folder) / NORMALIZATION_FILE))
        entry = {"file": NORMALIZATION_FILE, "mode": self.mode, "images": self.images,
                 "good_tail_score": GOOD_TAIL_SCORE, "scale_quantile": SCALE_QUANTILE}
        if self.memory is not None:
            entry["latent_memory"] = self.memory.save(folder)
        return entry

    @classmethod
    def load(cls, folder: Path, entry: dict) -> "MapNormalization":
        """Read it back as model.json's `normalization` entry describes; CheckpointError naming the
        file for a missing or malformed one."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .checkpoint import CheckpointError

        path = Path(folder) / str(entry.get("file", NORMALIZATION_FILE))
        if not path.is_file():
            raise CheckpointError(path, "model.json names map normalization statistics, but the file is missing")
        try:
            t = load_file(str(path))
            normalization = cls(t["image_mean"], t["image_std"], t["latent_mean"], t["latent_std"], t["scale"],
                                mode=entry.get("mode", "position"), images=entry.get("images"),
                                image_weight=t.get("image_weight"))
        except (SafetensorError, KeyError, ValueError, OSError) as e:
            raise CheckpointError(path, f"unreadable map normalization: {e}") from None
        if entry.get("latent_memory"):
            normalization.memory = LatentMemory.load(folder, entry["latent_memory"], normalization.num_classes)
        return normalization


def _stats(raw: torch.Tensor, mode: str, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [H,W] of one category's raw maps [N,H,W]."""
    if mode == "global":
        mean = torch.full(raw.shape[1:], float(raw.mean()))
        std = torch.full(raw.shape[1:], float(raw.std()) if raw.numel() > 1 else 1.0)
    else:
        mean = gaussian_blur(raw.mean(dim=0, keepdim=True), sigma)[0]
        var = raw.var(dim=0, keepdim=True) if raw.shape[0] > 1 else torch.zeros_like(raw[:1])
        std = gaussian_blur(var, sigma)[0].clamp_min(0).sqrt()
    floor = max(float(std.median()) * STD_FLOOR_SHARE, 1e-6)
    return mean, std.clamp_min(floor)


def fit_normalization(stats_maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      scale_maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      class_names: Sequence[str], mode: str = "position",
                      image_weight: dict[str, float] | None = None) -> MapNormalization:
    """Fit per-category statistics.

    stats_maps[c] = (image_raw [N,S,S], latent_raw [N,L,L]) of good images for the mean and std;
    scale_maps[c] = the same for other good images, whose normalized scores set scale[c] (the
    SCALE_QUANTILE quantile of their best fused z, see the module docstring); image_weight[c]: the
    category's fusion weight (DEFAULT_IMAGE_WEIGHT when not given). Categories without images keep
    mean 0, std 1, scale 1 (the class is unused)."""
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
    image_weight = image_weight or {}
    weights = torch.tensor([float(image_weight.get(c, DEFAULT_IMAGE_WEIGHT)) for c in class_names])
    fitted = [c for c in class_names if c in stats_maps]
    if not fitted:
        raise ValueError("no good images to fit the map normalization on")
    first_img, first_lat = stats_maps[fitted[0]]
    s_img, s_lat = tuple(first_img.shape[1:]), tuple(first_lat.shape[1:])
    n = len(class_names)
    image_mean, image_std = torch.zeros(n, *s_img), torch.ones(n, *s_img)
    latent_mean, latent_std = torch.zeros(n, *s_lat), torch.ones(n, *s_lat)
    scale = torch.ones(n)
    counts = {}
    for k, name in enumerate(class_names):
        if name not in stats_maps:
            continue
        img, lat = (t.float().cpu() for t in stats_maps[name])
        if img.shape[0] < MIN_FIT_IMAGES:
            raise ValueError(f"{name}: {img.shape[0]} good image(s) for the map statistics; need {MIN_FIT_IMAGES}")
        image_mean[k], image_std[k] = _stats(img, mode, STATS_SIGMA_IMAGE)
        latent_mean[k], latent_std[k] = _stats(lat, mode, STATS_SIGMA_LATENT)
        held = scale_maps.get(name)
        if held is None or held[0].shape[0] == 0:
            raise ValueError(f"{name}: no good images left to set the score scale on")
        z_img = (held[0].float().cpu() - image_mean[k]) / image_std[k]
        z_lat = (held[1].float().cpu() - latent_mean[k]) / latent_std[k]
        z_lat = resize_bilinear(z_lat.clamp_min(0), tuple(z_img.shape[-2:]))
        w = float(weights[k])
        best = (z_img.clamp_min(0).pow(w) * z_lat.pow(1 - w)).flatten(1).amax(dim=1)
        tail = float(np.quantile(best.numpy(), SCALE_QUANTILE))
        scale[k] = max(tail, 1e-3) / GOOD_TAIL_SCORE
        counts[name] = [int(img.shape[0]), int(held[0].shape[0])]
    return MapNormalization(image_mean, image_std, latent_mean, latent_std, scale, mode=mode, images=counts,
                            image_weight=weights)


def describe(entry: dict | None) -> str:
    """One line for logs: the mode, how many good images each category's statistics came from and,
    with a latent memory, its images and share in the score per category."""
    if not entry:
        return "reference maps (fixed clip constants)"
    counts = entry.get("images") or {}
    line = f"maps normalized per {entry.get('mode', 'position')} from held-out good images " + json.dumps(counts)
    memory = entry.get("latent_memory")
    if memory:
        line += (f"; latent memory of {memory['images']} good images, share in the score {memory['weight']}")
    return line
