"""What both detectors share at run time: the per-frame result, the model description, the
detector protocol, batching with the out-of-memory fallback, the stage clock and small helpers.

`engine.detector` (DeCo-Diff) and `engine.diad` (DiAD) build on this module; it imports neither.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .preprocess import PreprocessConfig, map_to_frame

__all__ = ["STAGES", "AnomalyResult", "ModelInfo", "ModelSettings", "InspectionModel", "PreparedFrames", "StagedModel",
           "StageClock", "default_device", "categories_for", "class_id_in", "autocast_for", "build_results",
           "is_out_of_memory", "move_detector", "notify", "predict_in_batches"]

log = logging.getLogger(__name__)

STAGES = ("preprocess", "classify", "encode", "unet", "decode", "maps", "postprocess")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class AnomalyResult:
    """The verdict on one frame.

    anomaly_map: [H,W] float32 on the frame's own pixel grid (0 outside the inspected crop);
    crop_map: [S,S] float32 in crop space (S = center_size); reconstruction / crop: [S,S,3]
    uint8 RGB; timings: milliseconds per stage, this frame's share of its batch."""

    score: float
    is_anomalous: bool
    threshold: float
    anomaly_map: np.ndarray
    crop_map: np.ndarray
    category: str
    category_id: int
    category_confidence: float | None
    category_source: str
    reconstruction: np.ndarray
    crop: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return float(sum(self.timings.values()))


# ModelInfo fields that only one detector kind fills; `to_dict` leaves them out when unset.
KIND_SPECIFIC_FIELDS = ("detector", "maps", "space", "schedule", "category_selection", "trained_classes")


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the UI, the results log and metrics.json show about a loaded model (`describe()`).

    detector: 'diad' for DiAD models (None for DeCo-Diff, the default kind); size: the UNet size
    name ('' for a custom one); classes: the category names, in class-id order; device: 'CPU' or
    the CUDA device's name; vae: where the VAE came from ('' for none); classifier: a category
    classifier is loaded; preprocess: `PreprocessConfig.to_dict()`. DeCo-Diff only: maps, one line
    on the map normalization. DiAD only: space ('latent' | 'pixel'), schedule (the noise schedule
    config), category_selection ('classifier' | 'single' | 'min-score'), trained_classes."""

    detector: str | None = None
    model_id: str
    source: str
    size: str
    ncls: int
    gating: bool
    classes: list[str]
    device: str
    unet_parameters: int
    vae: str
    classifier: bool
    preprocess: dict
    maps: str | None = None
    space: str | None = None
    schedule: dict | None = None
    category_selection: str | None = None
    trained_classes: list[str] | None = None

    def to_dict(self) -> dict:
        """The plain dict `describe()` gave before ModelInfo (JSON-ready; unset kind-specific fields left out)."""
        return {k: v for k, v in asdict(self).items() if not (k in KIND_SPECIFIC_FIELDS and v is None)}


class ModelSettings(Protocol):
    """The run-time settings every detector kind has (a frozen dataclass: `DetectorSettings`,
    `DiADSettings`), changed only through `InspectionModel.with_settings`."""

    threshold: float
    reverse_steps: int
    start_t: int
    gate_fusion: bool
    batch_size: int


@runtime_checkable
class InspectionModel(Protocol):
    """What the app and the training tools need from a detector (DeCo-Diff `engine.detector.Detector`,
    DiAD `engine.diad.DiADDetector`); `engine.loading.load_model` gives one for any model folder.

    model_id / source: the model's name and where it was loaded from; on_notice: called with a
    line of text when the engine changes how it runs (out of memory: a smaller batch, the CPU);
    prefers_lanes: the lanes setting is automatic and CPU lanes would split this model's batches."""

    settings: ModelSettings
    class_names: list[str]
    device: torch.device
    preprocess: PreprocessConfig
    model_id: str
    source: str
    on_notice: Callable[[str], None] | None
    prefers_lanes: bool

    def with_settings(self, **changes) -> "InspectionModel":
        """Replace `settings` by a checked copy with `changes`; a bad value raises ValueError /
        TypeError and leaves the model as it was."""

    def lane_count(self, batch: int) -> int:
        """CPU lanes a batch of `batch` frames is split over (1: not split)."""

    def predict(self, frames: Sequence[np.ndarray], category=None,
                channel_order: str = "rgb") -> list[AnomalyResult]:
        """One AnomalyResult per HxWxC frame, in order."""

    def describe(self) -> ModelInfo:
        """What the UI and the results log show about the loaded model."""


def _to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """[B,3,S,S] in [-1,1] -> [B,S,S,3] uint8."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def class_id_in(class_names: Sequence[str], category) -> int:
    """A category name or id -> its class id in `class_names`, with a clear error for unknown ones."""
    if isinstance(category, (int, np.integer)):
        if not 0 <= int(category) < len(class_names):
            raise ValueError(f"category id {category} out of range 0..{len(class_names) - 1}")
        return int(category)
    if category in class_names:
        return list(class_names).index(category)
    raise ValueError(f"unknown category {category!r}; this model knows {', '.join(class_names)}")


def autocast_for(device: torch.device, precision: str):
    """Autocast context for 'fp32' (off), 'fp16' or 'bf16' on `device`."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


class StageClock:
    """Milliseconds per pipeline stage (see STAGES) of one batch; waits for CUDA at each lap."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def restart(self) -> None:
        """Start timing the next stage now: the time since the last lap (a staged batch waiting
        for another thread) is booked to no stage."""
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._t) * 1000.0
        self._t = now

    def add_parallel(self, lanes: list["StageClock"]) -> None:
        """Book the wall time since the last lap over the stages of clocks that ran side by side,
        in proportion to their summed stage times."""
        now = time.perf_counter()
        total = {}
        for lane in lanes:
            for stage, ms in lane.ms.items():
                total[stage] = total.get(stage, 0.0) + ms
        wall, spent = (now - self._t) * 1000.0, sum(total.values()) or 1.0
        for stage, ms in total.items():
            self.ms[stage] = self.ms.get(stage, 0.0) + wall * ms / spent
        self._t = now


def build_results(rgb: list[np.ndarray], images: torch.Tensor, final_maps: torch.Tensor, recons: torch.Tensor,
                  ids: Sequence[int], conf: Sequence[float | None], source: Sequence[str],
                  class_names: Sequence[str], preprocess: PreprocessConfig, threshold: float,
                  clock: StageClock) -> list[AnomalyResult]:
    """One AnomalyResult per frame from a scored batch: final maps [B,S,S], reconstructions and
    preprocessed crops [B,3,S,S] in [-1,1]; maps are also put back on each frame's pixel grid."""
    final = final_maps.float().cpu().numpy()
    scores = final.reshape(len(rgb), -1).max(axis=1)
    recon_u8 = _to_uint8_rgb(recons)
    crops_u8 = _to_uint8_rgb(images)
    frame_maps = [map_to_frame(final[k], f.shape[:2], preprocess) for k, f in enumerate(rgb)]
    clock.lap("postprocess")
    share = {k: v / len(rgb) for k, v in clock.ms.items()}
    return [
        AnomalyResult(
            score=float(scores[k]), is_anomalous=bool(scores[k] > threshold), threshold=threshold,
            anomaly_map=frame_maps[k], crop_map=final[k], category=class_names[ids[k]],
            category_id=int(ids[k]), category_confidence=conf[k], category_source=source[k],
            reconstruction=recon_u8[k], crop=crops_u8[k], timings=dict(share),
        )
        for k in range(len(rgb))
    ]


@dataclass
class PreparedFrames:
    """A batch between the stages of a staged prediction (`StagedModel`): the frames as HxWx3
    uint8 RGB, the preprocessed images [B,3,S,S] in [-1,1], one class id, classifier confidence
    (or None) and id source per frame, the batch's stage clock, and what the network stage made
    of it (`networks`: the detector's own; None until `run_networks`)."""

    rgb: list[np.ndarray]
    images: torch.Tensor
    ids: list[int]
    conf: list[float | None]
    source: list[str]
    clock: StageClock
    networks: object = None


@runtime_checkable
class StagedModel(Protocol):
    """A detector whose prediction of a batch splits into three stages, called one after the other
    on the same batch, each possibly on another thread: `prepare` (preprocess and classify: light
    CPU work), `run_networks` (the networks: most of the time) and `finish` (maps and results).
    `finish(run_networks(prepare(frames, category)))` gives what `predict(frames, category)` does
    for a batch it runs whole (no out-of-memory retries: the live path runs one frame at a time)."""

    def prepare(self, frames: Sequence[np.ndarray], category=None, channel_order: str = "rgb") -> PreparedFrames:
        """Preprocess and classify the frames (categories as `predict` takes them)."""

    def run_networks(self, prepared: PreparedFrames) -> PreparedFrames:
        """Run the networks on a prepared batch; returns it, with `networks` filled."""

    def finish(self, prepared: PreparedFrames) -> list[AnomalyResult]:
        """Maps, scores and results of a batch the networks ran on: one AnomalyResult per frame."""


def categories_for(category, count: int) -> list:
    """`predict`'s category argument (one name or id for all frames, a list with one per frame, or
    None) as a list of `count` entries."""
    cats = list(category) if isinstance(category, (list, tuple)) else [category] * count
    if len(cats) != count:
        raise ValueError(f"{len(cats)} categories for {count} frames")
    return cats


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors and failed CPU allocations."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def move_detector(detector, device: torch.device | str) -> None:
    """Move a detector's networks (UNet, VAE, classifier) to `device`; works for both detector kinds."""
    device = torch.device(device)
    detector.unet.to(device)
    if detector.vae is not None:
        detector.vae.to(device)
    if detector.classifier is not None:
        detector.classifier.to(device)
    detector.device = device


def notify(detector, text: str) -> None:
    """Log a notice and pass it to `detector.on_notice(text)` when that is set."""
    log.warning("%s", text)
    if detector.on_notice is not None:
        detector.on_notice(text)


def predict_in_batches(detector, frames: Sequence[np.ndarray], category, channel_order: str) -> list[AnomalyResult]:
    """`predict` of both detector kinds: frames in chunks of `settings.batch_size` through
    `detector._predict_batch(chunk, categories, channel_order)`.

    Out of memory: the chunk is retried at half the batch size, which is kept for later calls,
    down to batch 1; out of memory at batch 1 on a GPU moves the networks to the CPU and
    carries on there. Each step is logged and passed to `detector.on_notice(text)` when set."""
    frames = list(frames)
    if not frames:
        return []
    cats = categories_for(category, len(frames))
    results: list[AnomalyResult] = []
    start = 0
    while start < len(frames):
        size = detector.settings.batch_size
        chunk = frames[start:start + size]
        try:
            results.extend(detector._predict_batch(chunk, cats[start:start + len(chunk)], channel_order))
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are handled here
            if not is_out_of_memory(e):
                raise
            where = "CUDA" if detector.device.type == "cuda" else str(detector.device).upper()
            if detector.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(chunk) > 1:
                smaller = max(1, len(chunk) // 2)
                detector.with_settings(batch_size=smaller)
                notify(detector, f"{where} out of memory at batch {len(chunk)}: continuing with batch {smaller}")
            elif detector.device.type != "cpu":
                move_detector(detector, "cpu")
                notify(detector, f"{where} out of memory even at batch 1: the engine continues on the CPU "
                                 "(slower); free GPU memory and reload the model to go back")
            else:
                raise RuntimeError(f"out of memory at batch 1 on the {where}: {e}") from e
            continue
        start += len(chunk)
    return results
