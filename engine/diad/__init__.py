"""DiAD: a class-conditional noise-prediction diffusion model for multi-class anomaly detection.

The pieces are separate and take explicit arguments, in the manner of diffusers:
* model: `DiADConfig` (JSON beside the weights), the size registry `DIAD_SIZES`, `create_diad`,
  `DiADUNet` (eps prediction; sinusoidal time embedding + MLP, plus a learned class embedding
  added to it), in the VAE's latent space (default) or in pixel space;
* noise schedule: `NoiseScheduleConfig` / `NoiseSchedule` (linear or cosine betas over T steps,
  q(x_t | x_0) in closed form);
* training and sampling: `ddpm_loss`, `ddim_loop`, `ddim_reconstruct` (noise the input to a
  chosen step with fixed seeded noise, walk back with DDIM eta 0), `ddim_sample` and
  `ddpm_sample` (from pure noise, for comparison), `diffusion_error` (noise-prediction error);
* inspection: `DiADSettings`, `compute_diad_maps`, `DiADDetector` (the same public surface as
  `engine.detector.Detector`, see `engine.runtime.InspectionModel`) and `save_diad_folder`.

Anomaly map, per pixel of the S x S crop: reconstruction error (channel mean of |decode(z) -
decode(z_rec)|) plus `score_weight` (0.5) x the diffusion score (channel mean of the squared
noise-prediction error of the noised input, averaged over a fixed seeded set of timesteps),
smoothed like DeCo-Diff's maps, then softly shifted by MAP_FLOOR and scaled by MAP_SPAN into
[0, 1] so that one threshold works for both detectors.
Without a given category and without a classifier, each image is scored under every class the
model was trained on and the class with the smallest selection score (mean of the raw map) wins.

The modules, as DeCo-Diff's: `model` (network and sizes), `schedule` (noise schedule, timestep
grids, seeded noise), `sampling` (loss, DDIM / DDPM walks, diffusion error), `maps`, `detector`
(settings, detector, model folder). Import from `engine.diad`.
"""

from .detector import DETECTOR_KIND, UNET_WEIGHTS, DiADDetector, DiADSettings, save_diad_folder
from .maps import MAP_FLOOR, MAP_SOFTNESS, MAP_SPAN, DiADMaps, compute_diad_maps
from .model import DIAD_SIZES, DiADConfig, DiADUNet, create_diad
from .sampling import ddim_loop, ddim_reconstruct, ddim_sample, ddpm_loss, ddpm_sample, diffusion_error
from .schedule import (NoiseSchedule, NoiseScheduleConfig, cosine_betas, linear_betas, reconstruction_timesteps,
                       sampling_timesteps, score_timesteps, seeded_noise)

__all__ = [
    "DETECTOR_KIND",
    "UNET_WEIGHTS",
    "DIAD_SIZES",
    "DiADConfig",
    "DiADUNet",
    "create_diad",
    "NoiseScheduleConfig",
    "NoiseSchedule",
    "linear_betas",
    "cosine_betas",
    "seeded_noise",
    "ddpm_loss",
    "ddim_loop",
    "ddim_reconstruct",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_error",
    "reconstruction_timesteps",
    "sampling_timesteps",
    "score_timesteps",
    "DiADSettings",
    "DiADMaps",
    "compute_diad_maps",
    "DiADDetector",
    "save_diad_folder",
    "MAP_FLOOR",
    "MAP_SPAN",
    "MAP_SOFTNESS",
]
