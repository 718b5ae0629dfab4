"""Train a class-conditional DiAD noise-prediction model on good images.

    torchrun --nproc_per_node=2 -m training.train_diad --dataset mvtec --data-dir DATA \\
        --object-category all --model-size DiAD_S --vae VAE_DIR --epochs 800 --global-batch-size 32
    python main.py train-diad ...   (same arguments, one process)

Per step: x0 = VAE posterior sample x 0.18215 (latent space, the default) or the image in [-1, 1]
(--space pixel); t ~ U{0..T-1}; eps ~ N(0, I); the UNet predicts eps from
sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, the image's class embedding added to the time embedding;
MSE loss (DDPM). AdamW (weight decay 1e-4), warm-up + cosine learning rate stepped per epoch,
gradient accumulation.

The conventions are the DeCo-Diff trainer's (training.train_deco_diff): torchrun/gloo DDP,
JSON-line events (started, step, epoch, checkpoint, stopped, finished, error), atomic checkpoints
{model, opt, scheduler, epoch, args} plus last.pt, --resume auto, per-epoch seeding so a resumed run
ends exactly where an uninterrupted one does, SIGTERM/SIGINT stop at the next step with a
checkpoint, latent caching on the frozen VAE (one encode per augmentation variant), and an exported
model folder (model.json with "detector": "diad") that `engine.loading.load_model` opens.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from engine.diad import DIAD_SIZES, DiADSettings, NoiseSchedule, NoiseScheduleConfig, create_diad, ddpm_loss
from engine.version import __version__

from .common import (EpochMonitor, add_detector_training_arguments, detector_training_data, make_optimizer,
                     per_rank_batch, run_entry, run_monitored_epochs, save_training_checkpoint, seed_for,
                     start_training_run, wrap_ddp, write_args)
from .datasets import AnomalyDataset
from .train_deco_diff import (LatentCache, augmentation_variants, encode_latent_cache, epoch_loader,
                              random_latent_crops, resolve_vae)

__all__ = ["build_arg_parser", "main", "image_cache", "HeldOutNoiseLoss"]

# Fixed noise draws of every held-out sample per validation.
VALIDATION_DRAWS = 4


class HeldOutNoiseLoss:
    """The DDPM loss on held-out good samples [N,C,s,s] with fixed timesteps and noise (so that
    validations compare): the `measure` of an `EpochMonitor`."""

    def __init__(self, x0: torch.Tensor, class_ids: torch.Tensor, schedule: NoiseSchedule, seed: int = 0):
        self.x0, self.class_ids, self.schedule, self.seed = x0, class_ids, schedule, seed

    @torch.no_grad()
    def __call__(self, unet) -> dict:
        was_training = unet.training
        unet.eval()
        gen = torch.Generator().manual_seed(self.seed)
        total = 0.0
        for _ in range(VALIDATION_DRAWS):
            for start in range(0, self.x0.shape[0], 16):
                x0 = self.x0[start:start + 16]
                total += float(ddpm_loss(unet, x0, self.class_ids[start:start + 16], self.schedule, gen)) * x0.shape[0]
        unet.train(was_training)
        return {"loss": total / (VALIDATION_DRAWS * self.x0.shape[0]), "images": int(self.x0.shape[0])}


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_diad", description="Train a DiAD model on good images.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_detector_training_arguments(p, DIAD_SIZES, "DiAD_S", global_batch_size=64, accumulation_steps=1,
                                    results_name="DiAD")
    p.add_argument("--space", choices=["latent", "pixel"], default="latent",
                   help="diffuse the VAE latents (feature-space diffusion) or the pixels")
    p.add_argument("--noise-schedule", choices=["linear", "cosine"], default="linear")
    p.add_argument("--num-train-timesteps", type=int, default=1000)
    p.add_argument("--noise-t", type=int, default=DiADSettings.noise_t,
                   help="inference: timestep the input is noised to before the DDIM walk back (stored in the model)")
    p.add_argument("--reverse-steps", type=int, default=DiADSettings.reverse_steps,
                   help="inference: DDIM steps from --noise-t to the clean signal (stored in the model)")
    p.add_argument("--score-steps", type=int, default=DiADSettings.score_steps,
                   help="inference: seeded timesteps the diffusion score averages over (stored in the model)")
    return p


@torch.no_grad()
def image_cache(dataset, augmentation: bool) -> LatentCache:
    """Pixel-space counterpart of `encode_latent_cache`: the preprocessed images [N,V,3,S,S] of every
    augmentation variant as the means, zero std (each step then uses the image itself)."""
    variants, probs = augmentation_variants(dataset, augmentation)
    ids = torch.tensor([dataset.class_names.index(s.category) for s in dataset.samples], dtype=torch.long)
    images = torch.stack([torch.stack([dataset.load(i, shift=v[0], rotate=v[1])["image"] for v in variants])
                          for i in range(len(dataset))])
    return LatentCache(images, torch.zeros_like(images), ids, probs)


def _settings(args) -> DiADSettings:
    return DiADSettings(threshold=args.threshold, noise_t=args.noise_t, reverse_steps=args.reverse_steps,
                        start_t=args.reverse_steps, score_steps=args.score_steps)


def main(argv: list[str] | None = None) -> int:
    return run_entry("train_diad", argv, build_arg_parser, lambda args, ctx, events: _train(args, ctx),
                     user_errors_exit=False)


def _train(args, ctx) -> int:
    batch_per_rank = per_rank_batch(args.global_batch_size, ctx)
    schedule = NoiseSchedule(NoiseScheduleConfig(kind=args.noise_schedule,
                                                 num_train_timesteps=args.num_train_timesteps))
    settings = _settings(args)
    if max(settings.noise_t, settings.score_t_max) >= args.num_train_timesteps:
        raise ValueError(f"--noise-t {settings.noise_t} and the score timesteps (up to {settings.score_t_max}) "
                         f"must be below --num-train-timesteps {args.num_train_timesteps}")
    dataset, preprocess, category_label = detector_training_data(args)
    class_names = list(dataset.class_names)
    trained_classes = dataset.categories

    torch.manual_seed(seed_for(args.global_seed, ctx))
    vae, vae_ref = None, None
    if args.space == "latent":
        vae, vae_ref, _ = resolve_vae(args)
        vae = vae.to(ctx.device).eval()
        vae.requires_grad_(False)
        sample_size = args.center_size // vae.downsample_factor
    else:
        sample_size = args.center_size
    channels = {"in_channels": vae.latent_channels, "out_channels": vae.latent_channels} if vae is not None else {}
    unet = create_diad(args.model_size, ncls=len(class_names), sample_size=sample_size, space=args.space,
                       **channels).to(ctx.device)
    factor = 2 ** (len(unet.config.channel_mult) - 1)
    if args.latent_crop and (args.latent_crop % factor or args.latent_crop < 2 * factor):
        raise ValueError(f"--latent-crop must be a multiple of {factor} and at least {2 * factor}, "
                         f"got {args.latent_crop}")

    run = start_training_run(args, ctx, dataset, category_label, "DiAD")
    exp_dir, ckpt_dir, events, resume_path, held_out, clock_start = run

    model = wrap_ddp(unet, ctx)
    opt, scheduler, start_epoch = make_optimizer(args, model, unet, resume_path, args.epochs)
    validation = None
    if held_out is not None and ctx.is_main:
        held = AnomalyDataset(held_out, class_names, "train", preprocess)
        held_cache = (encode_latent_cache(held, vae, ctx.device, augmentation=False, progress=False)
                      if vae is not None else image_cache(held, augmentation=False))
        validation = HeldOutNoiseLoss(held_cache.mean[:, 0].to(ctx.device), held_cache.class_ids.to(ctx.device),
                                      schedule, seed=args.global_seed)
    monitor = EpochMonitor(args, ctx, events, unet, opt, scheduler, ckpt_dir, resume_path, clock_start,
                           measure=validation,
                           export=lambda net, epoch, selected: _checkpoint(
                               args, net, opt, scheduler, epoch, numbered=False, exported_only=True,
                               selected=selected, exp_dir=exp_dir, ckpt_dir=ckpt_dir, class_names=class_names,
                               trained_classes=trained_classes, preprocess=preprocess, schedule=schedule,
                               settings=settings, vae=vae, vae_ref=vae_ref, events=events))
    if ctx.is_main:
        write_args(exp_dir, args)

    if not args.cache_latents:
        cache = None
    elif vae is not None:
        cache = encode_latent_cache(dataset, vae, ctx.device, args.augmentation, progress=ctx.is_main)
    else:
        cache = image_cache(dataset, args.augmentation)
    loader, sampler = epoch_loader(dataset, cache, args, ctx, batch_per_rank)
    steps_per_epoch = math.ceil(len(loader) / args.accumulation_steps)
    events.emit("started", experiment_dir=str(exp_dir), detector="diad", model_size=args.model_size,
                space=args.space, noise_schedule=args.noise_schedule, classes=class_names, images=len(dataset),
                epochs=args.epochs, start_epoch=start_epoch, world_size=ctx.world_size, device=str(ctx.device),
                per_rank_batch=batch_per_rank, steps_per_epoch=steps_per_epoch, parameters=unet.num_parameters,
                version=__version__)

    export = dict(exp_dir=exp_dir, ckpt_dir=ckpt_dir, class_names=class_names, trained_classes=trained_classes,
                  preprocess=preprocess, schedule=schedule, settings=settings, vae=vae, vae_ref=vae_ref,
                  events=events)

    def batch_loss(batch, gen):
        if cache is not None:
            x0, ids = cache.sample(batch, gen, ctx.device)
        else:
            images = batch["image"].to(ctx.device)
            with torch.no_grad():
                x0 = vae.encode_sample(images) if vae is not None else images
            ids = batch["class_id"].to(ctx.device)
        if args.latent_crop:
            x0 = random_latent_crops(x0, args.latent_crop, gen)
        return ddpm_loss(model, x0, ids, schedule, gen), x0.shape[0]

    def save_checkpoint(epoch: int, numbered: bool) -> None:
        _checkpoint(args, unet, opt, scheduler, epoch, numbered=numbered, extra=monitor.state(), **export)

    return run_monitored_epochs(args, ctx, model, opt, scheduler, loader, sampler, start_epoch, run, monitor,
                                batch_loss, save_checkpoint)


def _checkpoint(args, unet, opt, scheduler, epoch, *, numbered: bool, exp_dir, ckpt_dir, class_names,
                trained_classes, preprocess, schedule, settings, vae, vae_ref, events, extra: dict | None = None,
                exported_only: bool = False, selected: dict | None = None) -> None:
    """last.pt (+ epoch-N.pt when numbered) and the model folder; exported_only: the folder alone
    (the best epoch's weights at the end of a run with held-out validation)."""
    from engine.classifier import load_classifier
    from engine.diad import save_diad_folder

    if numbered and not exported_only:
        save_training_checkpoint(ckpt_dir / f"epoch-{epoch}.pt", unet.state_dict(), opt, scheduler, epoch, args,
                                 extra=extra)
    if not exported_only:
        save_training_checkpoint(ckpt_dir / "last.pt", unet.state_dict(), opt, scheduler, epoch, args, extra=extra)
    classifier = load_classifier(args.classifier) if args.classifier else None
    was_training = unet.training
    unet.eval()
    save_diad_folder(exp_dir / "model", unet, class_names, preprocess, schedule.config,
                     vae=vae if vae_ref is None else None, vae_ref=vae_ref, classifier=classifier,
                     settings=settings, model_id=f"{exp_dir.name}-epoch{epoch}", trained_classes=trained_classes,
                     extra={"training": {"epoch": epoch, "epochs": args.epochs, "dataset": args.dataset,
                                         "categories": trained_classes, "trainer": "training.train_diad",
                                         **({"selected": selected} if selected else {})}})
    unet.train(was_training)
    if not exported_only:
        events.emit("checkpoint", epoch=epoch, path=str(ckpt_dir / "last.pt"), model_dir=str(exp_dir / "model"))


if __name__ == "__main__":
    sys.exit(main())
