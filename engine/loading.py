"""Load any model by its kind: one place that knows which detector opens which folder.

A model folder's model.json names its detector ("deco-diff", the default, or "diad"); a reference
`.pt` checkpoint file is always DeCo-Diff.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import detector, diad
from .checkpoint import CheckpointError, read_model_json
from .runtime import InspectionModel

__all__ = ["LOADERS", "load_model", "model_kind"]

# model.json "detector" -> the classmethod that loads such a folder
LOADERS = {detector.DETECTOR_KIND: detector.Detector.load, diad.DETECTOR_KIND: diad.DiADDetector.load}


def model_kind(path) -> str:
    """'diad' or 'deco-diff' for a model folder (its model.json 'detector', default 'deco-diff'),
    'deco-diff' for a reference checkpoint file; CheckpointError when there is nothing at `path`."""
    path = Path(path)
    if path.is_file() and path.suffix in (".json", ".safetensors"):
        path = path.parent
    if path.is_dir():
        return str(read_model_json(path).get("detector", detector.DETECTOR_KIND))
    if not path.exists():
        raise CheckpointError(path, "no such model folder or checkpoint")
    return detector.DETECTOR_KIND


def load_model(path, vae=None, device: torch.device | str | None = None, classifier=None, settings=None,
               **overrides) -> InspectionModel:
    """The detector for a model folder (or its model.json / unet.safetensors) of any kind, or for a
    reference `.pt` checkpoint. `vae`, `classifier`: replacements for the folder's own; `settings`
    and `overrides`: that detector's settings (threshold, batch_size, ...)."""
    kind = model_kind(path)
    if kind not in LOADERS:
        where = Path(path) / "model.json" if Path(path).is_dir() else Path(path)
        raise CheckpointError(where, f"unknown detector {kind!r}; this app runs {' and '.join(map(repr, LOADERS))}")
    return LOADERS[kind](path, vae=vae, device=device, classifier=classifier, settings=settings, **overrides)
