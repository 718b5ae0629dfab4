"""Camera frames -> model inputs, and crop-space anomaly maps -> maps over the original frame.

The forward path reproduces the DeCo-Diff reference datasets (../shared/reference/spec.md,
section 3.2): RGB uint8, PIL resize to `image_size`^2 (BICUBIC in training and evaluation;
the reference single-image tool used BILINEAR, hence `resize_filter`), center crop
`center_size` at offset (image_size - center_size) // 2, then /255 and (x - 0.5) / 0.5 -> [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from .configs import config_from_dict

__all__ = [
    "RESIZE_FILTERS",
    "PreprocessConfig",
    "crop_offset",
    "to_rgb_uint8",
    "preprocess_frames",
    "preprocess_mask",
    "map_to_frame",
]

RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

VAE_DOWNSAMPLING = 8


@dataclass(frozen=True)
class PreprocessConfig:
    """Sizes in pixels: frames are resized to image_size x image_size, then the central
    center_size x center_size square is what the model sees."""

    image_size: int = 288
    center_size: int = 256
    resize_filter: str = "bicubic"

    def __post_init__(self) -> None:
        problems = []
        for name in ("image_size", "center_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                problems.append(f"{name} must be an integer, got {value!r}")
        if not problems:
            object.__setattr__(self, "image_size", int(self.image_size))
            object.__setattr__(self, "center_size", int(self.center_size))
            if self.center_size <= 0:
                problems.append(f"center_size must be positive, got {self.center_size}")
            elif self.center_size % VAE_DOWNSAMPLING:
                problems.append(
                    f"center_size {self.center_size} must be divisible by {VAE_DOWNSAMPLING} (the VAE downsampling)"
                )
            if self.image_size < self.center_size:
                problems.append(f"image_size {self.image_size} must be at least center_size {self.center_size}")
        if not isinstance(self.resize_filter, str) or self.resize_filter.lower() not in RESIZE_FILTERS:
            problems.append(f"resize_filter must be one of {sorted(RESIZE_FILTERS)}, got {self.resize_filter!r}")
        else:
            object.__setattr__(self, "resize_filter", self.resize_filter.lower())
        if problems:
            raise ValueError("invalid PreprocessConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return config_from_dict(cls, d)


def crop_offset(cfg: PreprocessConfig) -> int:
    """Pixels between the resized image's edge and the center crop (16 for 288/256)."""
    return (cfg.image_size - cfg.center_size) // 2


def to_rgb_uint8(frame: np.ndarray, channel_order: str) -> np.ndarray:
    """Any supported frame -> a new HxWx3 uint8 RGB array (the input is never modified).

    channel_order: "rgb", or "bgr" for OpenCV frames (also means BGRA for 4 channels).
    Accepted: HxW or HxWx1 gray (replicated to 3 channels); HxWx3; HxWx4 with alpha, which is
    dropped (colour kept as stored, no compositing; what PIL's convert("RGB") does, so PNGs with
    alpha match the reference); dtypes uint8, uint16 (round(x / 257)), float in [0, 1]
    (round(x * 255)). Anything else raises ValueError.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3:
        raise ValueError(f"frame must be HxW or HxWxC, got shape {frame.shape}")
    channels = frame.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(
            f"frame has {channels} channels (shape {frame.shape}); expected 1 (gray), 3 (RGB/BGR) or 4 (RGBA/BGRA)"
        )

    if frame.dtype == np.uint8:
        data = frame
    elif frame.dtype == np.uint16:
        data = ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(frame.dtype, np.floating):
        lo, hi = float(np.min(frame)), float(np.max(frame))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float frames must hold finite values in [0, 1], got range [{lo}, {hi}]; "
                "convert 0..255 data to uint8 first"
            )
        data = np.rint(frame.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"frame dtype {frame.dtype} is not supported; use uint8, uint16 or float in [0, 1]")

    if channels == 1:
        rgb = np.repeat(data, 3, axis=2)
    elif channel_order == "bgr":
        rgb = data[:, :, 2::-1]
    else:
        rgb = data[:, :, :3]
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def _resize_and_crop(rgb: np.ndarray, cfg: PreprocessConfig, resample: Image.Resampling) -> np.ndarray:
    size, o, c = cfg.image_size, crop_offset(cfg), cfg.center_size
    resized = np.asarray(Image.fromarray(rgb).resize((size, size), resample=resample))
    return resized[o : o + c, o : o + c]


def preprocess_frames(
    frames: Sequence[np.ndarray], cfg: PreprocessConfig, channel_order: str = "rgb"
) -> torch.Tensor:
    """Frames of any sizes -> `[B, 3, center_size, center_size]` float32 in [-1, 1].

    Each frame goes through `to_rgb_uint8`, a PIL resize to image_size^2 with cfg.resize_filter,
    and the center crop.
    """
    if isinstance(frames, np.ndarray):
        raise ValueError("frames must be a list of HxW[xC] arrays, not one array; wrap a single frame as [frame]")
    if len(frames) == 0:
        raise ValueError("frames is empty; pass at least one frame")
    resample = RESIZE_FILTERS[cfg.resize_filter]
    crops = []
    for i, frame in enumerate(frames):
        try:
            rgb = to_rgb_uint8(frame, channel_order)
        except ValueError as e:
            raise ValueError(f"frame {i}: {e}") from e
        crops.append(_resize_and_crop(rgb, cfg, resample))
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return ((batch - 0.5) / 0.5).contiguous()


def preprocess_mask(mask: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Ground-truth mask HxW (uint8 as PIL 'L' loads it, or bool) -> `[center_size, center_size]` uint8 {0, 1}.

    As in the reference: PIL BICUBIC resize to image_size^2 (always bicubic, whatever
    cfg.resize_filter says), then > 0, then the center crop.
    """
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty HxW array, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    elif mask.dtype != np.uint8:
        raise ValueError(f"mask dtype {mask.dtype} is not supported; use uint8 (as PIL 'L' loads it) or bool")
    size, o, c = cfg.image_size, crop_offset(cfg), cfg.center_size
    image = Image.fromarray(np.ascontiguousarray(mask))
    resized = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))
    return (resized[o : o + c, o : o + c] > 0).astype(np.uint8)


def map_to_frame(amap: np.ndarray, frame_shape: Sequence[int], cfg: PreprocessConfig) -> np.ndarray:
    """Crop-space map `[center_size, center_size]` -> `[H, W]` float32 overlaying the original frame.

    The map is placed at the crop offset in an image_size^2 canvas whose border (the part of the
    resized frame the model never saw) is 0, i.e. "no anomaly evidence" there, then the canvas is
    resized bilinearly (cv2 INTER_LINEAR, pixel-centre aligned like PIL) to the frame's H x W.
    frame_shape: (H, W) or a frame's full shape (H, W, C).
    """
    amap = np.asarray(amap)
    c = cfg.center_size
    if amap.shape != (c, c):
        raise ValueError(f"anomaly map must have shape ({c}, {c}) (cfg.center_size), got {amap.shape}")
    if len(frame_shape) not in (2, 3) or any(int(s) <= 0 for s in frame_shape[:2]):
        raise ValueError(f"frame_shape must be (H, W) or (H, W, C) with positive sizes, got {tuple(frame_shape)}")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    o = crop_offset(cfg)
    canvas = np.zeros((cfg.image_size, cfg.image_size), dtype=np.float32)
    canvas[o : o + c, o : o + c] = amap
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
