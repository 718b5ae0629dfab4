"""Train a gated DeCo-Diff UNet on good images.

    torchrun --nproc_per_node=2 -m training.train_deco_diff --dataset mvtec --data-dir DATA \\
        --object-category all --model-size UNet_T --vae VAE_DIR --epochs 200 --global-batch-size 32
    python main.py train ...   (same arguments, one process)

Per step (../shared/reference/spec.md 2.3): latents z0 = VAE posterior sample x 0.18215;
t ~ U{0..9}; a patch mask keeps a random 30-100% of the latent patches clean; the noise is
Gaussian with up to 30% of its patches replaced by shuffled latent content from the batch;
the UNet predicts the deviation target; MSE loss. AdamW (weight decay 1e-4), warm-up + cosine
learning rate stepped per epoch (without the reference's lr-0 first epoch), gradient
accumulation.

On a frozen VAE the latents are cached: each training image is encoded once per augmentation
variant (the reference's augmentation is a constant +4 px shift with p = 0.5, and a 180-degree
turn for VisA, so the variants are few and exact) and every step samples z0 = mean + std * eps
from the cached posterior, as the reference does from a fresh encode.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from engine.diffusion import corrupt_for_training, deviation_loss, make_schedule
from engine.unet import UNET_SIZES, create_unet
from engine.vae import LATENT_SCALE, VAE, load_vae
from engine.version import __version__

from .common import (EpochMonitor, add_detector_training_arguments, detector_training_data, make_optimizer,
                     per_rank_batch, run_entry, run_monitored_epochs, save_training_checkpoint, seed_for,
                     start_training_run, str2bool, wrap_ddp, write_args)
from .datasets import AnomalyDataset

__all__ = ["build_arg_parser", "main", "LatentCache", "encode_latent_cache", "HeldOutValidation"]

# Fixed corruptions of every held-out latent per validation.
VALIDATION_DRAWS = 2
# The cosine learning-rate schedule spans this many times the epochs (the reference's choice).
SCHEDULE_STRETCH = 1.5


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_deco_diff", description="Train a gated DeCo-Diff model on good images.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_detector_training_arguments(p, UNET_SIZES, "UNet_L", global_batch_size=128, accumulation_steps=2,
                                    results_name="DeCo-Diff")
    p.add_argument("--mask-ratio", type=float, default=0.7)
    p.add_argument("--patch-shuffle-ratio", type=float, default=0.3)
    p.add_argument("--mask-random-ratio", type=str2bool, default=True)
    p.add_argument("--use-gating", type=str2bool, default=True)
    p.add_argument("--init", type=Path, default=None,
                   help="start from this UNet's weights (our model folder or a reference .pt; same size, classes "
                        "and latent channels) with a new optimizer and schedule: longer training or new data")
    p.add_argument("--reverse-steps", type=int, default=5,
                   help="DDIM steps stored in the exported model (and used by the held-out validation)")
    return p


class LatentCache(Dataset):
    """Cached posteriors: mean/std [N, V, 4, L, L] per image and augmentation variant."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, class_ids: torch.Tensor, variant_probs: list[float]):
        self.mean, self.std, self.class_ids = mean, std, class_ids
        self.variant_probs = torch.tensor(variant_probs)

    def __len__(self) -> int:
        return self.mean.shape[0]

    def __getitem__(self, i: int):
        return i

    def sample(self, indices: torch.Tensor, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents [B,4,L,L] drawn from the cached posteriors of `indices` (one augmentation
        variant each, chosen with its odds) and their class ids [B], on `device`."""
        v = torch.multinomial(self.variant_probs, indices.shape[0], replacement=True, generator=generator)
        mean, std = self.mean[indices, v], self.std[indices, v]
        x0 = mean + std * torch.randn(mean.shape, generator=generator)
        return x0.to(device), self.class_ids[indices].to(device)


def augmentation_variants(dataset, augmentation: bool) -> tuple[list[tuple[bool, bool]], list[float]]:
    """The (shift, rotate180) variants the reference augmentation produces, with their odds (no
    shift variant when the shift is 0 px, i.e. the image is not cropped: it would be the same image)."""
    if not augmentation:
        return [(False, False)], [1.0]
    shifts = (False, True) if dataset.translate_px else (False,)
    turns = (False, True) if dataset.rotate180 else (False,)
    variants = [(s, r) for r in turns for s in shifts]
    return variants, [1.0 / len(variants)] * len(variants)


@torch.no_grad()
def encode_latent_cache(dataset, vae: VAE, device, augmentation: bool, batch_size: int = 16,
                        progress: bool = True) -> LatentCache:
    """Encode every image of `dataset` under each augmentation variant."""
    from tqdm import tqdm

    variants, probs = augmentation_variants(dataset, augmentation)
    means, stds = [], []
    ids = torch.tensor([dataset.class_names.index(s.category) for s in dataset.samples], dtype=torch.long)
    total = len(dataset) * len(variants)
    with tqdm(total=total, desc="encoding latents", unit="img", disable=not progress, file=sys.stderr) as bar:
        for variant in variants:
            vm, vs = [], []
            for start in range(0, len(dataset), batch_size):
                images = torch.stack([dataset.load(i, shift=variant[0], rotate=variant[1])["image"]
                                      for i in range(start, min(len(dataset), start + batch_size))])
                dist = vae.posterior(images.to(device))
                vm.append((dist.mean * LATENT_SCALE).cpu())
                vs.append((dist.std * LATENT_SCALE).cpu())
                bar.update(images.shape[0])
            means.append(torch.cat(vm))
            stds.append(torch.cat(vs))
    return LatentCache(torch.stack(means, 1), torch.stack(stds, 1), ids, probs)


def random_latent_crops(latents: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """An independent random size x size window of each latent [B,C,L,L] -> [B,C,size,size]."""
    b, _, h, w = latents.shape
    if size >= min(h, w):
        return latents
    ys = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return torch.stack([latents[k, :, y:y + size, x:x + size] for k, (y, x) in enumerate(zip(ys, xs))])


class HeldOutValidation:
    """Scores the UNet on held-out good latents after an epoch (the `measure` of an
    `EpochMonitor`).

    The selection measure is the training objective on images the UNet never trained on (the
    deviation loss of corrupted held-out latents, with fixed corruptions so that rounds compare):
    it falls while the UNet learns to restore good parts and rises when it memorizes. How far the
    deviation reconstruction moves a clean good part (mean |z_rec - z|, the false-alarm signal) is
    reported beside it; it is no measure to select on, since an untrained UNet, which returns
    its input, moves nothing."""

    def __init__(self, latents: torch.Tensor, class_ids: torch.Tensor, reverse_steps: int, corruption: dict,
                 seed: int = 0):
        self.latents, self.class_ids = latents, class_ids
        self.schedule = make_schedule(10, f"ddim{reverse_steps}")
        self.train_schedule = make_schedule(10)
        self.reverse_steps, self.corruption, self.seed = reverse_steps, corruption, seed

    @torch.no_grad()
    def __call__(self, unet) -> dict:
        """{loss: held-out deviation loss (VALIDATION_DRAWS fixed corruptions), deviation: mean
        |z_rec - z| of clean held-out parts, its quantiles, and the 99th percentile of each part's
        largest (1-px blurred) deviation}."""
        from engine.diffusion import reconstruct_latents
        from engine.maps import LATENT_SIGMA, gaussian_blur

        was_training = unet.training
        unet.eval()
        per_image, peaks, losses = [], [], []
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.latents.shape[0], 16):
            z = self.latents[start:start + 16]
            ids = self.class_ids[start:start + 16]
            zr = reconstruct_latents(unet, z, ids, start_t=self.reverse_steps, schedule=self.schedule)
            d = (zr - z).abs().mean(dim=1)
            per_image.append(d.flatten(1).mean(dim=1))
            peaks.append(gaussian_blur(d, LATENT_SIGMA).flatten(1).amax(dim=1))
            for _ in range(VALIDATION_DRAWS):
                x_t, t, target = corrupt_for_training(z.cpu(), self.train_schedule, z.shape[-1] * 8,
                                                      self.corruption["mask_ratio"],
                                                      self.corruption["patch_shuffle_ratio"],
                                                      self.corruption["mask_random_ratio"], gen)
                loss = deviation_loss(unet(x_t.to(z.device), t.to(z.device), ids), target.to(z.device))
                losses.append(float(loss) * z.shape[0])
        unet.train(was_training)
        dev, peak = torch.cat(per_image), torch.cat(peaks)
        return {"loss": sum(losses) / (VALIDATION_DRAWS * dev.numel()),
                "deviation": float(dev.mean()), "deviation_p50": float(dev.quantile(0.5)),
                "deviation_p90": float(dev.quantile(0.9)), "peak_p99": float(peak.quantile(0.99)),
                "images": int(dev.numel())}


def collate_indices(batch):
    """A DataLoader batch of dataset indices as one long tensor (latent-cache batches)."""
    return torch.tensor(batch, dtype=torch.long)


def epoch_loader(dataset, cache, args, ctx, batch_per_rank: int) -> tuple[DataLoader, DistributedSampler]:
    """(loader, its sampler) over the cache (batches of indices into it) or, without one, the dataset:
    shuffled per epoch with --global-seed, this process's share of every epoch."""
    source = cache if cache is not None else dataset
    sampler = DistributedSampler(source, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=args.global_seed, drop_last=False)
    loader = DataLoader(source, batch_size=batch_per_rank, sampler=sampler, num_workers=args.num_workers,
                        collate_fn=collate_indices if cache is not None else None,
                        pin_memory=ctx.device.type == "cuda", drop_last=False)
    return loader, sampler


def init_unet_weights(unet, source: Path, size: str, class_names: list[str]) -> None:
    """Copy the weights of the UNet at `source` (model folder or reference .pt) into `unet`.
    Size, class count, latent channels and (for our folders) class names must match."""
    from engine.checkpoint import CheckpointError, MODEL_JSON, load_unet, read_model_json

    loaded = load_unet(source, size=size, ncls=len(class_names))
    if loaded.config.in_channels != unet.config.in_channels:
        raise CheckpointError(source, f"its UNet takes {loaded.config.in_channels} latent channels, "
                                      f"this VAE gives {unet.config.in_channels}")
    folder = source if source.is_dir() else source.parent
    if (folder / MODEL_JSON).is_file():
        names = read_model_json(folder).get("class_names")
        if names and list(names) != list(class_names):
            raise CheckpointError(source, f"it was trained on the classes {names}, this data has {class_names}")
    try:
        unet.load_state_dict(loaded.state_dict())
    except RuntimeError as e:
        raise CheckpointError(source, f"its weights do not fit this UNet (gating on one side only?): {e}") from None


def resolve_vae(args) -> tuple[VAE, str | None, bool]:
    """(vae, reference string for the exported model or None to copy it, is_compact)."""
    spec = args.vae if args.vae else args.vae_type
    vae = load_vae(spec)
    small = vae.num_parameters < 20_000_000
    return vae, (None if small else str(spec)), small


def main(argv: list[str] | None = None) -> int:
    return run_entry("train_deco_diff", argv, build_arg_parser, lambda args, ctx, events: _train(args, ctx),
                     user_errors_exit=False)


def _train(args, ctx) -> int:
    batch_per_rank = per_rank_batch(args.global_batch_size, ctx)
    if args.latent_crop and (args.latent_crop % 4 or args.latent_crop < 8):
        raise ValueError(f"--latent-crop must be a multiple of 4 and at least 8, got {args.latent_crop}")
    dataset, preprocess, category_label = detector_training_data(args)
    class_names = list(dataset.class_names)

    run = start_training_run(args, ctx, dataset, category_label, "DeCo-Diff")
    exp_dir, ckpt_dir, events, resume_path, held_out, clock_start = run

    torch.manual_seed(seed_for(args.global_seed, ctx))
    vae, vae_ref, _ = resolve_vae(args)
    vae = vae.to(ctx.device).eval()
    vae.requires_grad_(False)
    unet = create_unet(args.model_size, ncls=len(class_names), latent_size=args.center_size // 8,
                       use_gating=args.use_gating, in_channels=vae.latent_channels,
                       out_channels=vae.latent_channels).to(ctx.device)
    if args.init is not None and resume_path is None:
        init_unet_weights(unet, args.init, args.model_size, class_names)
    model = wrap_ddp(unet, ctx)
    opt, scheduler, start_epoch = make_optimizer(args, model, unet, resume_path, int(args.epochs * SCHEDULE_STRETCH))
    validation = None
    if held_out is not None and ctx.is_main:
        held = AnomalyDataset(held_out, class_names, "train", preprocess)
        held_cache = encode_latent_cache(held, vae, ctx.device, augmentation=False, progress=False)
        validation = HeldOutValidation(held_cache.mean[:, 0].to(ctx.device), held_cache.class_ids.to(ctx.device),
                                       args.reverse_steps, seed=args.global_seed,
                                       corruption={"mask_ratio": args.mask_ratio,
                                                   "patch_shuffle_ratio": args.patch_shuffle_ratio,
                                                   "mask_random_ratio": args.mask_random_ratio})
    monitor = EpochMonitor(args, ctx, events, unet, opt, scheduler, ckpt_dir, resume_path, clock_start,
                           measure=validation, schedule_stretch=SCHEDULE_STRETCH,
                           export=lambda net, epoch, selected: _export_model(
                               args, net, epoch, exp_dir, class_names, preprocess, vae, vae_ref, selected),
                           describe=lambda stats: f"good-part deviation {stats['deviation']:.4f}")
    if ctx.is_main:
        write_args(exp_dir, args)

    cache = encode_latent_cache(dataset, vae, ctx.device, args.augmentation, progress=ctx.is_main) \
        if args.cache_latents else None
    loader, sampler = epoch_loader(dataset, cache, args, ctx, batch_per_rank)
    schedule = make_schedule(10)
    steps_per_epoch = math.ceil(len(loader) / args.accumulation_steps)
    events.emit("started", experiment_dir=str(exp_dir), model_size=args.model_size, classes=class_names,
                images=len(dataset), epochs=args.epochs, start_epoch=start_epoch, world_size=ctx.world_size,
                device=str(ctx.device), per_rank_batch=batch_per_rank, steps_per_epoch=steps_per_epoch,
                parameters=unet.num_parameters, version=__version__)

    def batch_loss(batch, gen):
        if cache is not None:
            x0, ids = cache.sample(batch, gen, ctx.device)
        else:
            with torch.no_grad():
                x0 = vae.encode_sample(batch["image"].to(ctx.device), generator=None)
            ids = batch["class_id"].to(ctx.device)
        if args.latent_crop:
            x0 = random_latent_crops(x0, args.latent_crop, gen)
        x_t, t, target = corrupt_for_training(x0, schedule, x0.shape[-1] * 8, args.mask_ratio,
                                              args.patch_shuffle_ratio, args.mask_random_ratio, gen)
        return deviation_loss(model(x_t, t.to(ctx.device), ids), target), x0.shape[0]

    def save_checkpoint(epoch: int, numbered: bool) -> None:
        _checkpoint(args, unet, opt, scheduler, epoch, ckpt_dir, exp_dir, class_names, preprocess, vae, vae_ref,
                    events, numbered=numbered, extra=monitor.state())

    return run_monitored_epochs(args, ctx, model, opt, scheduler, loader, sampler, start_epoch, run, monitor,
                                batch_loss, save_checkpoint)


def _checkpoint(args, unet, opt, scheduler, epoch, ckpt_dir, exp_dir, class_names, preprocess, vae, vae_ref,
                events, numbered: bool, extra: dict | None = None) -> None:
    if numbered:
        save_training_checkpoint(ckpt_dir / f"epoch-{epoch}.pt", unet.state_dict(), opt, scheduler, epoch, args,
                                 extra=extra)
    save_training_checkpoint(ckpt_dir / "last.pt", unet.state_dict(), opt, scheduler, epoch, args, extra=extra)
    _export_model(args, unet, epoch, exp_dir, class_names, preprocess, vae, vae_ref)
    events.emit("checkpoint", epoch=epoch, path=str(ckpt_dir / "last.pt"), model_dir=str(exp_dir / "model"))


def _export_model(args, unet, epoch, exp_dir, class_names, preprocess, vae, vae_ref, selected: dict | None = None):
    """The model folder exp_dir/model with `unet`'s current weights (epoch `epoch`)."""
    from engine.classifier import load_classifier
    from engine.detector import DetectorSettings, save_model_folder

    classifier = load_classifier(args.classifier) if args.classifier else None
    was_training = unet.training
    unet.eval()
    training = {"epoch": epoch, "epochs": args.epochs, "dataset": args.dataset, "categories": class_names,
                "trainer": "training.train_deco_diff", **({"selected": selected} if selected else {})}
    save_model_folder(exp_dir / "model", unet, class_names, preprocess,
                      vae=vae if vae_ref is None else None, vae_ref=vae_ref, classifier=classifier,
                      settings=DetectorSettings(threshold=args.threshold, reverse_steps=args.reverse_steps,
                                                start_t=args.reverse_steps),
                      model_id=f"{exp_dir.name}-epoch{epoch}", extra={"training": training})
    unet.train(was_training)


if __name__ == "__main__":
    sys.exit(main())
