"""The batched DeCo-Diff inspection pipeline: frames in, one `AnomalyResult` per frame out.

frame (HxWx3 uint8, RGB or BGR) -> resize + center crop -> VAE encode (mean x 0.18215)
-> DDIM deviation reconstruction of the latents -> VAE decode of input and reconstruction
(one batched call) -> anomaly maps (torch, on the engine's device) -> score = max of map
-> map mapped back onto the frame for overlays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .acceleration import (CPU_COMPILE_OPTIONS, CompiledOrEager, CpuLanes, autocast_networks, in_chunks,
                           set_memory_format)
from .categories import dataset_categories
from .checkpoint import (CheckpointError, _load_strict, model_json_header, read_model_json, read_reference_checkpoint,
                         write_model_json, write_model_parts)
from .defaults import DEFAULT_THRESHOLD
from .diffusion import dod_gate, make_schedule, reconstruct_latents
from .maps import compute_anomaly_maps, concat_maps
from .normalization import MapNormalization, raw_discrepancies
from .normalization import describe as describe_normalization
from .openvino_runtime import NetworkSpec, autocast_precision, check_runtime_setting, select_networks
from .preprocess import PreprocessConfig, preprocess_frames, to_rgb_uint8
from .runtime import (AnomalyResult, ModelInfo, PreparedFrames, StageClock, autocast_for, build_results, categories_for,
                      class_id_in, default_device, notify, predict_in_batches)
from .unet import GatedUNet
from .vae import VAE, load_vae

__all__ = ["DETECTOR_KIND", "DetectorSettings", "Detector", "save_model_folder"]

# model.json's "detector" for DeCo-Diff folders (also the default when the key is missing).
DETECTOR_KIND = "deco-diff"

# Automatic lanes only for UNets with at most this many base channels (see DetectorSettings.lanes).
LANE_MAX_CHANNELS = 32

# Images per VAE call on a CPU (None: the whole batch at once, as on CUDA); see `in_chunks`.
CPU_VAE_CHUNK = 1


@dataclass(frozen=True)
class DetectorSettings:
    """Run-time choices that do not change the weights.

    threshold: score above which a part is anomalous (default DEFAULT_THRESHOLD, the reference's single-image default);
    start_t / reverse_steps: DDIM deviation reconstruction ('ddim{reverse_steps}', walked from
    start_t); gate_fusion: 0.6 geometric + 0.4 DoD-gate map; batch_size: frames per forward;
    precision: 'fp32', or 'fp16'/'bf16' autocast for the networks (maps stay float32); with
    runtime 'openvino': 'fp32', 'bf16' or 'int8' (NNCF-quantized, see engine.openvino_runtime);
    runtime: 'torch' (eager PyTorch) or 'openvino' (the VAE and the UNet step as OpenVINO compiled
    models; falls back to torch with a notice when OpenVINO cannot run them);
    channels_last: UNet convolutions in NHWC layout (same results, faster on CPU);
    compile: run the UNet and the VAE through torch.compile (same results within float32
    rounding; on a CPU with frozen weights, see engine.acceleration.CPU_COMPILE_OPTIONS; the first
    batch of each size compiles, which takes a minute or more on a small CPU; falls back to
    uncompiled code with a notice if compiling fails);
    lanes: on a CPU, split each batch over this many threads that each run the whole pipeline
    (encode, UNet steps, decode, maps) on their share with one intra-op thread; 1 = no split;
    0 (default) = automatic: one lane per intra-op thread of the calling thread
    (`torch.get_num_threads()`) for UNets of up to `LANE_MAX_CHANNELS` base channels, whose small
    operators split badly over cores (UNet_T batch 8 on 2 cores: 5.4 vs 4.3 images/s), one lane
    for larger ones (UNet_XS: 1.77 vs 1.92). Same results (every sample is computed on its own);
    see `engine.acceleration.CpuLanes`;
    score_scale: optional {category name: factor} multiplying the score maps (and so the scores)
    of that category's parts, so that one threshold fits products whose normal scores differ
    (written by `python -m training.calibrate_scores`; None = raw scores, as the reference)."""

    threshold: float = DEFAULT_THRESHOLD
    start_t: int = 5
    reverse_steps: int = 5
    gate_fusion: bool = False
    batch_size: int = 8
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    lanes: int = 0
    score_scale: dict[str, float] | None = None
    runtime: str = "torch"

    def __post_init__(self) -> None:
        check_runtime_setting(self.runtime, self.precision)
        if not 1 <= self.start_t <= self.reverse_steps:
            raise ValueError(f"start_t must be in 1..reverse_steps ({self.reverse_steps}), got {self.start_t}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.lanes < 0:
            raise ValueError(f"lanes must be 0 (automatic) or more, got {self.lanes}")
        if self.score_scale is not None:
            if not isinstance(self.score_scale, dict):
                raise ValueError(f"score_scale must map category names to factors, got {self.score_scale!r}")
            bad = {k: v for k, v in self.score_scale.items()
                   if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0}
            if bad:
                raise ValueError(f"score_scale factors must be positive numbers, got {bad}")


class Detector:
    """Gated DeCo-Diff detector for a batch of frames. Owns its networks; not thread-safe
    (one thread, e.g. the inspector's engine worker, should own it)."""

    def __init__(self, unet: GatedUNet, vae: VAE, class_names: Sequence[str],
                 preprocess: PreprocessConfig | None = None, classifier=None,
                 settings: DetectorSettings | None = None, device: torch.device | str | None = None,
                 model_id: str = "", source: str = "", normalization: MapNormalization | None = None):
        if len(class_names) != unet.config.ncls:
            raise ValueError(f"{len(class_names)} class names for a UNet with {unet.config.ncls} classes")
        self.device = torch.device(device) if device is not None else default_device()
        self.unet = unet.eval().to(self.device)
        self.vae = vae.eval().to(self.device)
        self.class_names = list(class_names)
        self.preprocess = preprocess or PreprocessConfig()
        if vae.latent_channels != unet.config.in_channels:
            raise ValueError(f"the VAE has {vae.latent_channels} latent channels, "
                             f"the UNet expects {unet.config.in_channels}")
        expected_latent = self.preprocess.center_size // 8
        if expected_latent != unet.config.latent_size:
            raise ValueError(f"crop size {self.preprocess.center_size} gives {expected_latent}px latents, "
                             f"but the UNet was built for {unet.config.latent_size}px")
        self.classifier = classifier.to(self.device) if classifier is not None else None
        if normalization is not None and normalization.num_classes != len(self.class_names):
            raise ValueError(f"the map normalization covers {normalization.num_classes} categories, "
                             f"the model has {len(self.class_names)}")
        self.normalization = normalization
        self.settings = settings or DetectorSettings()
        self.model_id = model_id
        self.source = source
        self.on_notice: Callable[[str], None] | None = None
        self._schedule = make_schedule(10, f"ddim{self.settings.reverse_steps}")
        self._lanes: CpuLanes | None = None
        self._score_factors = self._resolve_score_scale(self.settings.score_scale)
        self._configure_speed()

    def _resolve_score_scale(self, scale: dict[str, float] | None) -> torch.Tensor | None:
        """A score_scale setting as a [ncls] float32 tensor (1 for categories it leaves out)."""
        if not scale:
            return None
        unknown = sorted(set(scale) - set(self.class_names))
        if unknown:
            raise ValueError(f"score_scale names categories this model does not know: {unknown} "
                             f"(it knows {self.class_names})")
        return torch.tensor([float(scale.get(name, 1.0)) for name in self.class_names], dtype=torch.float32)

    def _configure_speed(self) -> None:
        """Apply the channels_last, precision and compile settings: the UNet's weight layout and the
        callables `score_latents` runs (compiled wrappers are rebuilt only when compile is switched
        on or the precision or device changes)."""
        set_memory_format(self.unet, self.settings.channels_last)
        if not self.settings.compile:
            self._unet_fn, self._encode, self._decode = autocast_networks(self.unet, self.vae, self.settings,
                                                                          self.device)
        else:
            key = (self.settings.precision, self.device)
            if getattr(self, "_compiled", (None,))[0] != key:
                notice = partial(notify, self)
                options = CPU_COMPILE_OPTIONS if self.device.type == "cpu" else None
                nets = autocast_networks(self.unet, self.vae, self.settings, self.device)
                self._compiled = (key, tuple(CompiledOrEager(fn, name, notice, options) for fn, name in
                                             zip(nets, ("UNet", "VAE encoder", "VAE decoder"))))
            self._unet_fn, self._encode, self._decode = self._compiled[1]
        nets = select_networks(self, {"encode": self._encode, "unet": self._unet_fn, "decode": self._decode})
        self._encode, self._unet_fn, self._decode = nets["encode"], nets["unet"], nets["decode"]

    def network_specs(self) -> list[NetworkSpec]:
        """The networks another runtime replaces (see engine.openvino_runtime): the VAE encoder
        [B,3,S,S] -> [B,C,L,L], the UNet step (x [B,C,L,L], t [B], class ids [B,1]) and the decoder."""
        c, s, lat = self.unet.config.in_channels, self.preprocess.center_size, self.unet.config.latent_size
        x = torch.zeros(2, c, lat, lat)
        return [NetworkSpec("encode", _Method(self.vae, "encode"), (torch.zeros(2, 3, s, s),), ((-1, 3, s, s),), ("f32",)),
                NetworkSpec("unet", self.unet, (x, torch.ones(2, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)),
                            ((-1, c, lat, lat), (-1,), (-1, 1)), ("f32", "i64", "i64")),
                NetworkSpec("decode", _Method(self.vae, "decode"), (x,), ((-1, c, lat, lat),), ("f32",))]

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def load(cls, path, vae=None, device: torch.device | str | None = None, classifier=None,
             settings: DetectorSettings | None = None, **overrides) -> "Detector":
        """From our model folder, or from a reference `.pt` plus a VAE (`vae`: a folder, a
        Hugging Face id in the local cache, or 'ema'/'mse'; default the reference's 'ema').
        `overrides` are DetectorSettings fields (threshold, gate_fusion, ...). Models of any kind
        (DiAD too) load through `engine.loading.load_model`."""
        path = Path(path)
        if path.is_file() and path.suffix in (".json", ".safetensors"):
            path = path.parent
        if path.is_dir():
            kind = read_model_json(path).get("detector", DETECTOR_KIND)
            if kind != DETECTOR_KIND:
                raise CheckpointError(path / "model.json", f"is a {kind!r} model, not a DeCo-Diff model "
                                      "(engine.loading.load_model opens every kind)")
            return cls._load_folder(path, vae, device, classifier, settings, overrides)
        if not path.exists():
            raise CheckpointError(path, "no such model folder or checkpoint")
        ref = read_reference_checkpoint(path)
        unet = GatedUNet(ref.config)
        _load_strict(path, unet, ref.state_dict, allow_missing_gating=not ref.has_gating)
        vae_model = vae if isinstance(vae, VAE) else load_vae(vae or ref.args.get("vae_type", "ema"))
        dataset = ref.args.get("dataset", "mvtec")
        names = list(dataset_categories(dataset)) if dataset in ("mvtec", "visa") else [
            f"class_{i}" for i in range(ref.config.ncls)]
        if len(names) != ref.config.ncls:
            names = [f"class_{i}" for i in range(ref.config.ncls)]
        pre = PreprocessConfig(image_size=int(ref.args.get("image_size", 288)),
                               center_size=int(ref.args.get("center_size", 256)), resize_filter="bicubic")
        if classifier is not None and not hasattr(classifier, "predict"):
            from .classifier import load_classifier
            classifier = load_classifier(classifier)
        settings = replace(settings or DetectorSettings(), **overrides)
        return cls(unet, vae_model, names, pre, classifier, settings, device,
                   model_id=f"{path.stem}@epoch{ref.epoch}", source=str(path))

    @classmethod
    def _load_folder(cls, folder: Path, vae, device, classifier, settings, overrides) -> "Detector":
        from .checkpoint import _load_folder_unet, read_model_parts

        meta = read_model_json(folder)
        unet = _load_folder_unet(folder, None, None)
        vae_model, classifier = read_model_parts(folder, meta, vae, classifier)
        class_names = meta.get("class_names") or [f"class_{i}" for i in range(unet.config.ncls)]
        normalization = MapNormalization.load(folder, meta["normalization"]) if meta.get("normalization") else None
        try:
            pre = PreprocessConfig.from_dict(meta.get("preprocess", {}))
        except (TypeError, ValueError) as e:
            raise CheckpointError(folder / "model.json", f"bad 'preprocess' config: {e}") from None
        base = DetectorSettings(**{k: v for k, v in meta.get("settings", {}).items()
                                   if k in DetectorSettings.__dataclass_fields__})
        settings = replace(settings or base, **overrides)
        model_id = meta.get("model_id") or folder.name
        try:
            return cls(unet, vae_model, class_names, pre, classifier, settings, device, model_id=model_id,
                       source=str(folder), normalization=normalization)
        except ValueError as e:
            raise CheckpointError(folder, str(e)) from None

    def save(self, folder, extra: dict | None = None) -> Path:
        """Write this detector as a model folder (see `save_model_folder`)."""
        return save_model_folder(folder, self.unet, self.class_names, self.preprocess, vae=self.vae,
                                 classifier=self.classifier, settings=self.settings,
                                 model_id=self.model_id, extra=extra, normalization=self.normalization)

    # ----------------------------------------------------------------- inference
    def with_settings(self, **changes) -> "Detector":
        """Replace the settings by a copy with `changes` (threshold, gate_fusion, start_t, ...),
        checked first: a bad value raises ValueError / TypeError and leaves the detector as it was."""
        new = replace(self.settings, **changes)
        if new.gate_fusion and not self.unet.config.use_gating:
            raise ValueError("gate fusion needs a model trained with gating")
        factors = self._resolve_score_scale(new.score_scale)
        self.settings = new
        self._schedule = make_schedule(10, f"ddim{new.reverse_steps}")
        self._configure_speed()
        self._score_factors = factors
        return self

    def class_id(self, category) -> int:
        """A category name or id -> class id, with a clear error for unknown ones."""
        return class_id_in(self.class_names, category)

    def _autocast(self):
        return autocast_for(self.device, autocast_precision(self.settings))

    @property
    def _can_split(self) -> bool:
        """Lanes are possible: on a CPU (compiled networks too: each input shape compiles once)."""
        return self.device.type == "cpu"

    @property
    def _small_for_lanes(self) -> bool:
        """Lanes are possible and the UNet has at most LANE_MAX_CHANNELS base channels."""
        return self._can_split and self.unet.config.model_channels <= LANE_MAX_CHANNELS

    @property
    def prefers_lanes(self) -> bool:
        """True when the lanes setting is automatic (0) and lanes would split batches: lanes are
        possible and the UNet has at most LANE_MAX_CHANNELS base channels."""
        return self.settings.lanes == 0 and self._small_for_lanes

    def lane_count(self, batch: int) -> int:
        """Lanes a batch of `batch` frames is split over (1 on CUDA or for one frame)."""
        if batch < 2 or not self._can_split:
            return 1
        lanes = self.settings.lanes or (torch.get_num_threads() if self._small_for_lanes else 1)
        return max(1, min(lanes, batch))

    def score_latents(self, images: torch.Tensor, class_ids: torch.Tensor, clock: StageClock | None = None):
        """Core math on a preprocessed batch: images [B,3,S,S] in [-1,1] on any device,
        class_ids [B]. Returns (AnomalyMaps, reconstructions [B,3,S,S])."""
        maps, recons = self._score_unscaled(images, class_ids, clock or StageClock(self.device))
        return self._scaled(maps, class_ids), recons

    def _scaled(self, maps, class_ids: torch.Tensor):
        """`maps` with the per-category score_scale setting applied (unchanged without one)."""
        if self._score_factors is None:
            return maps
        # the maps' device, not a cached one: the detector may have moved to the CPU after an OOM
        factors = self._score_factors.to(maps.geometric.device)
        return maps.scaled(factors[class_ids.long().to(factors.device)])

    def _score_unscaled(self, images: torch.Tensor, class_ids: torch.Tensor, clock: StageClock):
        lanes = self.lane_count(images.shape[0])
        if lanes == 1:
            return self._score_lane(images, class_ids, clock)
        if self._lanes is None or self._lanes.size != lanes:
            if self._lanes is not None:
                self._lanes.close()
            self._lanes = CpuLanes(lanes)
        parts = list(zip(images.tensor_split(lanes), class_ids.tensor_split(lanes)))
        clocks = [StageClock(self.device) for _ in parts]
        outputs = self._lanes.map(lambda k: self._score_lane(*parts[k], clocks[k]), range(len(parts)))
        clock.add_parallel(clocks)
        return concat_maps([m for m, _ in outputs]), torch.cat([r for _, r in outputs])

    @torch.inference_mode()
    def _reconstruct(self, images: torch.Tensor, ids: torch.Tensor, clock: StageClock):
        """Encode, reconstruct the latents, decode both: (decoded inputs, decoded reconstructions
        [B,3,S,S], latents, reconstructed latents [B,C,L,L], DoD gates or None), float32."""
        x = images.to(self.device, non_blocking=True)
        chunk = CPU_VAE_CHUNK if self.device.type == "cpu" else None
        with self._autocast():
            latents = in_chunks(self._encode, x, chunk).float()
            clock.lap("encode")
            recon_latents = reconstruct_latents(self._unet_fn, latents, ids, start_t=self.settings.start_t,
                                                schedule=self._schedule).float()
            gates = dod_gate(self.unet, latents, ids).float() if self.settings.gate_fusion else None
            clock.lap("unet")
            decoded = in_chunks(self._decode, torch.cat([latents, recon_latents]), chunk).float()
            clock.lap("decode")
        b = x.shape[0]
        return decoded[:b], decoded[b:], latents, recon_latents, gates

    @torch.inference_mode()
    def _score_lane(self, images: torch.Tensor, class_ids: torch.Tensor, clock: StageClock):
        ids = class_ids.to(self.device).long()
        return self._maps(self._reconstruct(images, ids, clock), ids, clock)

    @torch.inference_mode()
    def _maps(self, reconstruction: tuple, ids: torch.Tensor, clock: StageClock):
        """(AnomalyMaps, reconstructions) from what `_reconstruct` gave for class ids `ids`."""
        inputs, recons, latents, recon_latents, gates = reconstruction
        maps = compute_anomaly_maps(inputs, recons, latents, recon_latents, gates=gates,
                                    normalization=self.normalization, class_ids=ids)
        clock.lap("maps")
        return maps, recons

    @torch.inference_mode()
    def raw_discrepancies(self, images: torch.Tensor, class_ids: torch.Tensor, with_latents: bool = False):
        """The unclipped discrepancies of a preprocessed batch [B,3,S,S]: image [B,S,S] and latent
        [B,L,L] on the CPU (what `engine.normalization.fit_normalization` learns from); with
        `with_latents` also the input latents [B,C,L,L] (what `engine.latent_memory` compares)."""
        ids = class_ids.to(self.device).long()
        inputs, recons, latents, recon_latents, _ = self._reconstruct(images, ids, StageClock(self.device))
        image_raw, latent_raw = raw_discrepancies(inputs, recons, latents, recon_latents)
        if with_latents:
            return image_raw.cpu(), latent_raw.cpu(), latents.float().cpu()
        return image_raw.cpu(), latent_raw.cpu()

    @torch.inference_mode()
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """A preprocessed batch [B,3,S,S] -> its VAE latents [B,C,L,L] (float32, CPU), the way
        inspection encodes them."""
        x = images.to(self.device)
        with self._autocast():
            latents = in_chunks(self._encode, x, CPU_VAE_CHUNK if self.device.type == "cpu" else None)
        return latents.float().cpu()

    def predict(self, frames: Sequence[np.ndarray], category=None, channel_order: str = "rgb") -> list[AnomalyResult]:
        """Inspect HxWx{1,3,4} frames (uint8, uint16 or float in [0,1]). `category`: a name or id
        for all frames, a list with one per frame, or None to ask the classifier (or the only
        class of a one-class model). Returns one AnomalyResult per frame, in order. Out of memory:
        smaller batches, then the CPU (see `predict_in_batches`)."""
        return predict_in_batches(self, frames, category, channel_order)

    def _resolve_categories(self, rgb: list[np.ndarray], cats: list, clock: StageClock):
        ids: list[int | None] = [None if c is None else self.class_id(c) for c in cats]
        conf: list[float | None] = [None] * len(ids)
        source = ["given" if i is not None else "" for i in ids]
        todo = [k for k, i in enumerate(ids) if i is None]
        if todo:
            if self.classifier is not None:
                predictions = self.classifier.predict([rgb[k] for k in todo])
                for k, (name, p) in zip(todo, predictions):
                    if name not in self.class_names:
                        raise ValueError(f"the classifier answered {name!r}, which this model does not know")
                    ids[k], conf[k], source[k] = self.class_names.index(name), float(p), "classifier"
            elif len(self.class_names) == 1:
                for k in todo:
                    ids[k], source[k] = 0, "single"
            else:
                raise ValueError("no category given and this model has no classifier: pick one of "
                                 + ", ".join(self.class_names))
        clock.lap("classify")
        return ids, conf, source

    def _predict_batch(self, frames: list[np.ndarray], cats: list, channel_order: str) -> list[AnomalyResult]:
        prepared = self.prepare(frames, cats, channel_order)
        maps, recons = self.score_latents(prepared.images, torch.tensor(prepared.ids), prepared.clock)
        return self._results(prepared, maps, recons)

    # ----------------------------------------------------------------- staged prediction (StagedModel)
    def prepare(self, frames: Sequence[np.ndarray], category=None, channel_order: str = "rgb") -> PreparedFrames:
        """The first stage of a staged prediction (see engine.runtime.StagedModel): preprocess the
        frames and find their categories (as `predict` takes them)."""
        frames = list(frames)
        cats = categories_for(category, len(frames))
        clock = StageClock(self.device)
        rgb = [to_rgb_uint8(f, channel_order) for f in frames]
        images = preprocess_frames(rgb, self.preprocess, channel_order="rgb")
        if self.device.type == "cuda":
            images = images.pin_memory()
        clock.lap("preprocess")
        ids, conf, source = self._resolve_categories(rgb, cats, clock)
        return PreparedFrames(rgb, images, ids, conf, source, clock)

    def run_networks(self, prepared: PreparedFrames) -> PreparedFrames:
        """The second stage: encode, reconstruct and decode the prepared batch (whole, in this thread)."""
        prepared.clock.restart()
        ids = torch.tensor(prepared.ids, device=self.device).long()
        prepared.networks = (ids, self._reconstruct(prepared.images, ids, prepared.clock))
        return prepared

    def finish(self, prepared: PreparedFrames) -> list[AnomalyResult]:
        """The last stage: maps, scores and one AnomalyResult per frame of a batch `run_networks` ran on."""
        if prepared.networks is None:
            raise ValueError("finish() needs a batch that run_networks() has run on")
        prepared.clock.restart()
        ids, reconstruction = prepared.networks
        maps, recons = self._maps(reconstruction, ids, prepared.clock)
        return self._results(prepared, self._scaled(maps, ids), recons)

    def _results(self, prepared: PreparedFrames, maps, recons: torch.Tensor) -> list[AnomalyResult]:
        return build_results(prepared.rgb, prepared.images, maps.final, recons, prepared.ids, prepared.conf,
                             prepared.source, self.class_names, self.preprocess, self.settings.threshold,
                             prepared.clock)

    def describe(self) -> ModelInfo:
        """What the UI and the results log show about the loaded model."""
        c = self.unet.config
        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return ModelInfo(
            model_id=self.model_id, source=self.source, size=c.size, ncls=c.ncls,
            gating=self.unet.use_gating, classes=self.class_names, device=dev,
            unet_parameters=self.unet.num_parameters, vae=self.vae.source,
            classifier=self.classifier is not None, preprocess=self.preprocess.to_dict(),
            maps=describe_normalization(None if self.normalization is None else
                                        {"mode": self.normalization.mode, "images": self.normalization.images,
                                         "latent_memory": None if self.normalization.memory is None
                                         else self.normalization.memory.describe()}),
        )


class _Method(nn.Module):
    """`module.<method>(*inputs)` as a module of its own (what tracing for another runtime needs)."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner, self.method)(*inputs)


def save_model_folder(folder, unet: GatedUNet, class_names: Sequence[str], preprocess: PreprocessConfig, *,
                      vae: VAE | None = None, vae_ref: str | None = None, classifier=None,
                      settings: DetectorSettings | None = None, model_id: str = "",
                      extra: dict | None = None, normalization: MapNormalization | None = None) -> Path:
    """Write a model folder that `Detector.load` reads: unet.safetensors, model.json and either
    a copy of the VAE in vae/ (`vae`) or a reference to one on disk or in the Hugging Face
    cache (`vae_ref`, for large Stable-Diffusion VAEs). model.json is written last, so a
    half-written folder never loads."""
    folder = write_model_parts(folder, unet, vae, vae_ref, classifier)
    normalization_entry = normalization.save(folder) if normalization is not None else None
    s = settings or DetectorSettings()
    meta = {
        **model_json_header(DETECTOR_KIND, folder, model_id, unet),
        "vae": "vae" if vae is not None else str(vae_ref),
        "classifier": "classifier" if classifier is not None else None,
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "settings": {"threshold": s.threshold, "start_t": s.start_t, "reverse_steps": s.reverse_steps,
                     "gate_fusion": s.gate_fusion,
                     **({"score_scale": dict(s.score_scale)} if s.score_scale else {})},
        **({"normalization": normalization_entry} if normalization_entry else {}),
        **(extra or {}),
    }
    write_model_json(folder, meta)
    return folder
