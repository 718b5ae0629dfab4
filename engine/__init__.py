"""DeCo Inspector engine: models and math only (no Qt). Runs on CUDA when present, else CPU."""

from .checkpoint import CheckpointError, load_unet
from .diffusion import dod_gate, make_schedule, reconstruct_latents
from .maps import AnomalyMaps, anomaly_maps, compute_anomaly_maps, gate_fused_maps
from .unet import UNET_SIZES, GatedUNet, UNetConfig, create_unet
from .version import __version__

__all__ = [
    "AnomalyMaps",
    "CheckpointError",
    "GatedUNet",
    "UNET_SIZES",
    "UNetConfig",
    "__version__",
    "anomaly_maps",
    "compute_anomaly_maps",
    "create_unet",
    "dod_gate",
    "gate_fused_maps",
    "load_unet",
    "make_schedule",
    "reconstruct_latents",
]

_LAZY = {"Detector": "detector", "DetectorSettings": "detector", "AnomalyResult": "runtime"}


def __getattr__(name):
    """The Detector pulls in diffusers (slow to import): load it on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
