"""The DiAD detector (`DiADSettings`, `DiADDetector`, the same public surface as
`engine.detector.Detector`, see `engine.runtime.InspectionModel`) and its model folder
(`save_diad_folder`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import (CheckpointError, check_state_dict, read_folder_weights, read_model_json, read_model_parts,
                          model_json_header, write_model_json, write_model_parts)
from ..defaults import DEFAULT_THRESHOLD
from ..openvino_runtime import NetworkSpec, autocast_precision, check_runtime_setting, select_networks
from ..preprocess import PreprocessConfig, preprocess_frames, to_rgb_uint8
from ..runtime import (AnomalyResult, ModelInfo, StageClock, autocast_for, build_results, class_id_in, default_device,
                       predict_in_batches)
from .model import DiADConfig, DiADUNet
from .maps import DiADMaps, compute_diad_maps
from .sampling import ddim_reconstruct, diffusion_error
from .schedule import NoiseSchedule, NoiseScheduleConfig, reconstruction_timesteps, score_timesteps, seeded_noise

__all__ = ["DETECTOR_KIND", "UNET_WEIGHTS", "DiADSettings", "DiADDetector", "save_diad_folder"]


DETECTOR_KIND = "diad"
UNET_WEIGHTS = "unet.safetensors"


@dataclass(frozen=True)
class DiADSettings:
    """Run-time choices that do not change the weights.

    threshold: score above which a part is anomalous; noise_t: the timestep (of T) the input is
    noised to; reverse_steps / start_t: the DDIM grid round(k noise_t / reverse_steps),
    k = 1..reverse_steps, walked from k = start_t; score_steps timesteps drawn with `seed` from
    score_t_min..score_t_max give the diffusion score, weighted by score_weight; `seed` also fixes
    the reconstruction noise. gate_fusion is a DeCo-Diff feature and must stay off; batch_size:
    frames per forward; precision 'fp32', or 'fp16'/'bf16' autocast for the networks; runtime
    'torch' or 'openvino' (precision fp32, bf16 or int8; see engine.openvino_runtime)."""

    threshold: float = DEFAULT_THRESHOLD
    noise_t: int = 100
    reverse_steps: int = 5
    start_t: int = 5
    score_steps: int = 4
    score_t_min: int = 20
    score_t_max: int = 150
    score_weight: float = 0.5
    seed: int = 0
    gate_fusion: bool = False
    batch_size: int = 8
    precision: str = "fp32"
    runtime: str = "torch"

    def __post_init__(self) -> None:
        check_runtime_setting(self.runtime, self.precision)
        if not 1 <= self.start_t <= self.reverse_steps:
            raise ValueError(f"start_t must be in 1..reverse_steps ({self.reverse_steps}), got {self.start_t}")
        if self.noise_t < self.reverse_steps:
            raise ValueError(f"noise_t {self.noise_t} must be at least reverse_steps {self.reverse_steps}")
        if self.score_steps < 1 or not 0 <= self.score_t_min <= self.score_t_max:
            raise ValueError("need score_steps >= 1 and 0 <= score_t_min <= score_t_max, got "
                             f"{self.score_steps}, {self.score_t_min}, {self.score_t_max}")
        if self.score_weight < 0:
            raise ValueError(f"score_weight must be >= 0, got {self.score_weight}")
        if self.gate_fusion:
            raise ValueError("gate fusion needs a DeCo-Diff model with gating; DiAD has no DoD gate")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def _load_strict(path: Path, model: nn.Module, sd: dict) -> None:
    check_state_dict(path, model.state_dict(), sd, "its DiAD config")
    model.load_state_dict(sd)


class DiADDetector:
    """DiAD detector for a batch of frames, with the public surface of `engine.detector.Detector`
    (predict, score_latents, settings / with_settings, class_names, class_id, model_id, source,
    preprocess, classifier, device, describe, save). Owns its networks; not thread-safe.

    trained_classes: the class names the model saw in training (default: all), the candidates of
    the min-score category choice (MVTec/VisA models keep every category's id, trained or not)."""

    kind = DETECTOR_KIND

    def __init__(self, unet: DiADUNet, vae, class_names: Sequence[str], preprocess: PreprocessConfig | None = None,
                 classifier=None, settings: DiADSettings | None = None, device: torch.device | str | None = None,
                 schedule: NoiseSchedule | NoiseScheduleConfig | None = None, model_id: str = "", source: str = "",
                 trained_classes: Sequence[str] | None = None):
        cfg = unet.config
        if len(class_names) != cfg.ncls:
            raise ValueError(f"{len(class_names)} class names for a DiAD model with {cfg.ncls} classes")
        unknown = sorted(set(trained_classes or []) - set(class_names))
        if unknown or (trained_classes is not None and not trained_classes):
            raise ValueError(f"trained_classes must be a non-empty subset of the class names, got {trained_classes}")
        self.preprocess = preprocess or PreprocessConfig()
        if cfg.space == "latent":
            if vae is None:
                raise ValueError("a latent-space DiAD model needs its VAE")
            if vae.latent_channels != cfg.in_channels:
                raise ValueError(f"the VAE has {vae.latent_channels} latent channels, "
                                 f"the model expects {cfg.in_channels}")
            expected = self.preprocess.center_size // vae.downsample_factor
        else:
            if vae is not None:
                raise ValueError("a pixel-space DiAD model takes no VAE")
            expected = self.preprocess.center_size
        if expected != cfg.sample_size:
            raise ValueError(f"crop size {self.preprocess.center_size} gives {expected}px model inputs, "
                             f"but the DiAD model was built for {cfg.sample_size}px")
        self.device = torch.device(device) if device is not None else default_device()
        self.unet = unet.eval().to(self.device)
        self.vae = vae.eval().to(self.device) if vae is not None else None
        self.class_names = list(class_names)
        self.trained_classes = [c for c in self.class_names if trained_classes is None or c in trained_classes]
        self.classifier = classifier.to(self.device) if classifier is not None else None
        self.schedule = schedule if isinstance(schedule, NoiseSchedule) else NoiseSchedule(schedule)
        self.model_id = model_id
        self.source = source
        self.on_notice: Callable[[str], None] | None = None
        self.settings = settings or DiADSettings()
        self._check_settings(self.settings)
        self._select_networks()

    def _select_networks(self) -> None:
        """The callables `_score` runs for the settings' runtime (see engine.openvino_runtime)."""
        torch_nets = {"unet": self.unet}
        if self.vae is not None:
            torch_nets.update(encode=self.vae.encode, decode=self.vae.decode)
        nets = select_networks(self, torch_nets)
        self._unet_fn, self._encode, self._decode = nets["unet"], nets.get("encode"), nets.get("decode")

    def network_specs(self) -> list[NetworkSpec]:
        """The networks another runtime replaces: the UNet (x [B,C,s,s], t [B], class ids [B]) and,
        in latent space, the VAE encoder [B,3,S,S] -> [B,C,s,s] and decoder."""
        from ..detector import _Method

        c, n, s = self.unet.config.in_channels, self.unet.config.sample_size, self.preprocess.center_size
        x = torch.zeros(2, c, n, n)
        specs = [NetworkSpec("unet", self.unet, (x, torch.ones(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)),
                             ((-1, c, n, n), (-1,), (-1,)), ("f32", "i64", "i64"))]
        if self.vae is not None:
            specs += [NetworkSpec("encode", _Method(self.vae, "encode"), (torch.zeros(2, 3, s, s),),
                                  ((-1, 3, s, s),), ("f32",)),
                      NetworkSpec("decode", _Method(self.vae, "decode"), (x,), ((-1, c, n, n),), ("f32",))]
        return specs

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def load(cls, path, vae=None, device: torch.device | str | None = None, classifier=None,
             settings: DiADSettings | None = None, **overrides) -> "DiADDetector":
        """From a DiAD model folder (or its model.json / unet.safetensors). `vae` replaces the
        folder's VAE (a VAE, a folder, or a cached Hugging Face id); `overrides` are DiADSettings
        fields (threshold, noise_t, reverse_steps, ...)."""
        folder = Path(path)
        if folder.is_file() and folder.suffix in (".json", ".safetensors"):
            folder = folder.parent
        if not folder.is_dir():
            raise CheckpointError(folder, "no such DiAD model folder")
        meta = read_model_json(folder)
        if meta.get("detector") != DETECTOR_KIND:
            raise CheckpointError(folder / "model.json",
                                  f"is a {meta.get('detector', 'deco-diff')!r} model, not a DiAD model")
        try:
            config = DiADConfig.from_dict(meta["unet"])
            schedule = NoiseScheduleConfig.from_dict(meta.get("schedule", {}))
            pre = PreprocessConfig.from_dict(meta.get("preprocess", {}))
        except (TypeError, ValueError) as e:
            raise CheckpointError(folder / "model.json", f"bad DiAD config: {e}") from None
        weights, sd = read_folder_weights(folder)
        unet = DiADUNet(config)
        _load_strict(weights, unet, sd)
        vae_model, classifier = read_model_parts(folder, meta, vae, classifier, latent=config.space == "latent")
        names = meta.get("class_names") or [f"class_{i}" for i in range(config.ncls)]
        try:
            base = DiADSettings(**{k: v for k, v in meta.get("settings", {}).items()
                                   if k in DiADSettings.__dataclass_fields__})
            chosen = replace(settings or base, **overrides)
            return cls(unet, vae_model, names, pre, classifier, chosen, device, schedule,
                       model_id=meta.get("model_id") or folder.name, source=str(folder),
                       trained_classes=meta.get("trained_classes"))
        except ValueError as e:
            raise CheckpointError(folder, str(e)) from None

    def save(self, folder, extra: dict | None = None) -> Path:
        """Write this detector as a DiAD model folder (see `save_diad_folder`)."""
        return save_diad_folder(folder, self.unet, self.class_names, self.preprocess, self.schedule.config,
                                vae=self.vae, classifier=self.classifier, settings=self.settings,
                                model_id=self.model_id, trained_classes=self.trained_classes, extra=extra)

    # ----------------------------------------------------------------- settings
    def _check_settings(self, s: DiADSettings) -> None:
        t_last = self.schedule.num_train_timesteps - 1
        if s.noise_t > t_last or s.score_t_max > t_last:
            raise ValueError(f"noise_t ({s.noise_t}) and score_t_max ({s.score_t_max}) must be at most {t_last}")

    def with_settings(self, **changes) -> "DiADDetector":
        """Replace the settings by a copy with `changes` (threshold, noise_t, reverse_steps, start_t, ...),
        checked first: a bad value raises ValueError / TypeError and leaves the detector as it was."""
        new = replace(self.settings, **changes)
        self._check_settings(new)
        self.settings = new
        self._select_networks()
        return self

    # DiAD runs each batch whole: no CPU lanes (see engine.detector.Detector.lane_count)
    prefers_lanes = False

    def lane_count(self, batch: int) -> int:
        """Lanes a batch is split over: always 1."""
        return 1

    def class_id(self, category) -> int:
        """A category name or id -> class id, with a clear error for unknown ones."""
        return class_id_in(self.class_names, category)

    def _autocast(self):
        return autocast_for(self.device, autocast_precision(self.settings))

    # ----------------------------------------------------------------- inference
    def _noises(self, shape: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fixed reconstruction noise and one fixed noise per score timestep, [C,s,s] each."""
        s = self.settings
        return seeded_noise(shape, s.seed), [seeded_noise(shape, s.seed + 1 + k) for k in range(s.score_steps)]

    @torch.inference_mode()
    def _score(self, images: torch.Tensor, candidates: list[list[int]], clock=None):
        """Score image k under each class of candidates[k]. Returns (DiADMaps over all rows,
        reconstructions [N,3,S,S], row -> image index list)."""
        clock = clock or StageClock(self.device)
        s = self.settings
        x = images.to(self.device, non_blocking=True).float()
        rows = [k for k, cands in enumerate(candidates) for _ in cands]
        ids = torch.tensor([c for cands in candidates for c in cands], dtype=torch.long, device=self.device)
        with self._autocast():
            z = self._encode(x).float() if self.vae is not None else x
            clock.lap("encode")
            z_rows = z[rows]
            rec_noise, score_noises = self._noises(z.shape[1:])
            steps = reconstruction_timesteps(s.noise_t, s.reverse_steps, s.start_t)
            clip = 1.0 if self.unet.config.space == "pixel" else None
            z_rec = ddim_reconstruct(self._unet_fn, z_rows, ids, self.schedule, steps, rec_noise, clip).float()
            t_score = score_timesteps(s.score_steps, s.score_t_min, s.score_t_max, s.seed)
            err = diffusion_error(self._unet_fn, z_rows, ids, self.schedule, t_score, score_noises).float()
            clock.lap("unet")
            if self.vae is not None:
                decoded = self._decode(torch.cat([z, z_rec])).float()
                x0, xr = decoded[:z.shape[0]][rows], decoded[z.shape[0]:]
            else:
                x0, xr = z_rows, z_rec
            clock.lap("decode")
        maps = compute_diad_maps(x0, xr, err, s.score_weight)
        clock.lap("maps")
        return maps, xr, rows

    def score_latents(self, images: torch.Tensor, class_ids: torch.Tensor | None = None, clock=None):
        """Core math on a preprocessed batch: images [B,3,S,S] in [-1,1] on any device, class_ids
        [B] (None: each image under the class with the smallest score). Returns (DiADMaps with
        .final [B,S,S], reconstructions [B,3,S,S])."""
        maps, recons, _, _ = self._score_and_select(images, None if class_ids is None else
                                                    [int(i) for i in torch.as_tensor(class_ids).reshape(-1)], clock)
        return maps, recons

    def select_category(self, images: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Classifier-free category choice: (class ids [B], selection scores [B, ncls], NaN for
        classes not trained on), the trained class with the smallest selection score (mean of the
        raw map) for each image."""
        _, _, ids, scores = self._score_and_select(images, None)
        return ids, scores

    def _score_and_select(self, images, ids: list[int | None] | None, clock=None):
        b = images.shape[0]
        ids = list(ids) if ids is not None else [None] * b
        if len(ids) != b:
            raise ValueError(f"{len(ids)} class ids for {b} images")
        everything = [self.class_names.index(c) for c in self.trained_classes]
        candidates = [everything if i is None else [self.class_id(i)] for i in ids]
        maps, recons, rows = self._score(images, candidates, clock)
        sel = maps.selection_scores.cpu()
        pick, chosen, all_scores = [], [], torch.full((b, len(self.class_names)), float("nan"))
        start = 0
        for k, cands in enumerate(candidates):
            block = sel[start:start + len(cands)]
            all_scores[k, cands] = block
            j = int(torch.argmin(block))
            pick.append(start + j)
            chosen.append(cands[j])
            start += len(cands)
        if len(pick) != len(rows):
            idx = torch.tensor(pick, device=maps.final.device)
            maps = DiADMaps(*(getattr(maps, f.name)[idx] for f in fields(DiADMaps)))
            recons = recons[idx]
        return maps, recons, chosen, all_scores

    def predict(self, frames: Sequence[np.ndarray], category=None, channel_order: str = "rgb") -> list[AnomalyResult]:
        """Inspect HxWx{1,3,4} frames (uint8, uint16 or float in [0,1]). `category`: a name or id
        for all frames, a list with one per frame, or None: the classifier's answer, the only class
        the model was trained on, else the trained class under which the frame scores lowest
        ('min-score').
        Returns one `engine.runtime.AnomalyResult` per frame, in order. Out of memory: smaller
        batches, then the CPU (see `engine.runtime.predict_in_batches`)."""
        return predict_in_batches(self, frames, category, channel_order)

    def _predict_batch(self, frames: list[np.ndarray], cats: list, channel_order: str) -> list[AnomalyResult]:
        clock = StageClock(self.device)
        rgb = [to_rgb_uint8(f, channel_order) for f in frames]
        images = preprocess_frames(rgb, self.preprocess, channel_order="rgb")
        clock.lap("preprocess")
        ids: list[int | None] = [None if c is None else self.class_id(c) for c in cats]
        conf: list[float | None] = [None] * len(ids)
        source = ["given" if i is not None else "" for i in ids]
        todo = [k for k, i in enumerate(ids) if i is None]
        if todo and self.classifier is not None:
            for k, (name, p) in zip(todo, self.classifier.predict([rgb[k] for k in todo])):
                if name not in self.class_names:
                    raise ValueError(f"the classifier answered {name!r}, which this model does not know")
                ids[k], conf[k], source[k] = self.class_names.index(name), float(p), "classifier"
        elif todo and len(self.trained_classes) == 1:
            for k in todo:
                ids[k], source[k] = self.class_names.index(self.trained_classes[0]), "single"
        else:
            for k in todo:
                source[k] = "min-score"
        clock.lap("classify")
        maps, recons, chosen, _ = self._score_and_select(images, ids, clock)
        return build_results(rgb, images, maps.final, recons, chosen, conf, source, self.class_names,
                             self.preprocess, self.settings.threshold, clock)

    def describe(self) -> ModelInfo:
        """What the UI and the results log show about the loaded model."""
        c = self.unet.config
        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        selection = ("classifier" if self.classifier is not None
                     else "single" if len(self.trained_classes) == 1 else "min-score")
        return ModelInfo(
            detector=DETECTOR_KIND, model_id=self.model_id, source=self.source, size=c.size,
            ncls=c.ncls, gating=False, classes=self.class_names, device=dev,
            unet_parameters=self.unet.num_parameters,
            vae=self.vae.source if self.vae is not None else "",
            classifier=self.classifier is not None, preprocess=self.preprocess.to_dict(),
            space=c.space, schedule=self.schedule.config.to_dict(), category_selection=selection,
            trained_classes=list(self.trained_classes),
        )


def save_diad_folder(folder, unet: DiADUNet, class_names: Sequence[str], preprocess: PreprocessConfig,
                     schedule: NoiseScheduleConfig | None = None, *, vae=None, vae_ref: str | None = None,
                     classifier=None, settings: DiADSettings | None = None, model_id: str = "",
                     trained_classes: Sequence[str] | None = None, extra: dict | None = None) -> Path:
    """Write a DiAD model folder that `engine.loading.load_model` opens as a `DiADDetector`:
    unet.safetensors, model.json ("detector": "diad", the DiADConfig under "unet", the noise
    schedule, settings) and, for a latent-space model, either a copy of the VAE in vae/ (`vae`)
    or a reference to one (`vae_ref`), exactly like DeCo-Diff folders; `trained_classes` (default
    all) are the min-score category candidates. model.json is written last."""
    folder = write_model_parts(folder, unet, vae, vae_ref, classifier, uses_vae=unet.config.space == "latent")
    meta = {
        **model_json_header(DETECTOR_KIND, folder, model_id, unet),
        "schedule": (schedule or NoiseScheduleConfig()).to_dict(),
        "vae": "vae" if vae is not None else (str(vae_ref) if vae_ref is not None else None),
        "classifier": "classifier" if classifier is not None else None,
        "class_names": list(class_names),
        "trained_classes": list(trained_classes) if trained_classes is not None else list(class_names),
        "preprocess": preprocess.to_dict(),
        "settings": {k: v for k, v in (settings or DiADSettings()).to_dict().items()
                     if k not in ("batch_size", "precision", "gate_fusion")},
        **(extra or {}),
    }
    write_model_json(folder, meta)
    return folder
