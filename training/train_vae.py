"""Train the compact VAE (or fine-tune a Stable-Diffusion VAE) on good images.

    python -m training.train_vae --dataset mvtec --data-dir DATA --out models/vae --epochs 60
    torchrun --nproc_per_node=2 -m training.train_vae ...

The compact VAE is a diffusers AutoencoderKL behind a 4x4 pixel-patch fold, 8 latent channels
and 8x downsampling in all (256 px -> 32x32 latents, ~2.7 M parameters, or ~0.7 M with
`--size small`; `engine.vae.compact_vae_config`). It is the fallback
whenever no Stable-Diffusion VAE is on disk. Loss: L1 + MSE on the pixels, an L1 on image
gradients (keeps edges sharp), and a small KL term that keeps the posterior well scaled for
the 0.18215 latent factor. Training uses random square crops (the model is fully
convolutional) with flips; the reported PSNR is on whole held-out crops.

The VAE is a codec, not a model of normality: it must reproduce whatever the camera shows,
defects included, or the detector cannot see them (a VAE trained on good parts only learns to
paint scratches away). `--extra-images skimage DIR...` mixes a general image corpus into every
batch (scikit-image's bundled photos and textures, or any folders), at random scales and 90
degree turns, the way Stable-Diffusion's VAE learnt from general photographs. `--line-augment P`
draws 1-3 random thin curves (1-3 px, any colour, antialiased) on a share P of the training
crops: fine lines (hairlines, wires, text strokes, scratches) are too rare in a small corpus for a
small codec to learn to keep them, and a codec that drops them hides them from the detector.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from engine.imageio import ImageReadError, list_images, read_image
from engine.preprocess import PreprocessConfig
from engine.vae import COMPACT_VAE_SIZES, LATENT_SCALE, VAE, compact_vae_config, create_vae, load_vae, save_vae

from .common import (EventLog, add_data_arguments, add_run_arguments, load_training_checkpoint, make_lr_scheduler,
                     per_rank_batch, run_entry, save_training_checkpoint, seed_for)
from .datasets import build_dataset

__all__ = ["build_arg_parser", "main", "psnr", "VAEObjective", "evaluate_psnr", "extra_image_files",
           "load_extra_images", "draw_random_lines"]

LR_FROM_SCRATCH = 2e-3   # AdamW learning rate for a new compact VAE
LR_FINE_TUNE = 5e-4      # ... and for one fine-tuned from --init (keeps what the start weights know)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_vae", description="Train the compact VAE on good images.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--image-size", type=int, default=288)
    p.add_argument("--center-size", type=int, default=256)
    p.add_argument("--resize-filter", choices=["bicubic", "bilinear"], default="bicubic")
    p.add_argument("--out", type=Path, required=True, help="output VAE folder (diffusers layout)")
    p.add_argument("--init", default=None, help="fine-tune this VAE (folder or cached HF id) instead of the compact one")
    p.add_argument("--size", choices=list(COMPACT_VAE_SIZES), default="compact",
                   help="width of a new compact VAE (engine.vae.COMPACT_VAE_SIZES): 'small' is the live-speed "
                        "codec, about a quarter of the compact one's time per image; ignored with --init")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16, help="global batch size")
    p.add_argument("--crop", type=int, default=128, help="random training crop (multiple of 8; 0 = whole image)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"AdamW learning rate (default: {LR_FROM_SCRATCH:g} from scratch, {LR_FINE_TUNE:g} with --init)")
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--grad-weight", type=float, default=0.5)
    p.add_argument("--extra-images", nargs="*", default=[], metavar="SOURCE",
                   help="general images mixed into training: folders (searched recursively) or 'skimage' "
                        "(scikit-image's bundled photos and textures); never used for the held-out PSNR")
    p.add_argument("--extra-fraction", type=float, default=0.5, help="share of each batch from --extra-images")
    p.add_argument("--line-augment", type=float, default=0.0,
                   help="share of training crops with random thin curves drawn on them (see above)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of the images for PSNR")
    p.add_argument("--global-seed", type=int, default=1000)
    p.add_argument("--resume", default="", help="checkpoint to continue from, or 'auto'")
    add_run_arguments(p)
    p.add_argument("--ckpt-every", type=int, default=5)
    return p


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1,1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


class VAEObjective(torch.nn.Module):
    """The AutoencoderKL plus its training loss in one forward, so DDP can wrap it."""

    def __init__(self, vae: VAE, kl_weight: float, grad_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.grad_weight = grad_weight

    def forward(self, images: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] in [-1,1], eps [B,4,H/8,W/8] standard normal -> scalar loss."""
        posterior = self.vae.posterior(images)
        recon = self.vae.decode_unscaled(posterior.mean + posterior.std * eps)
        rec = (recon - images).abs().mean() + F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        return rec + self.grad_weight * _grad_l1(recon, images) + self.kl_weight * kl


def _load_images(dataset) -> torch.Tensor:
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def _random_crops(images: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = images.shape
    out = []
    for k in range(b):
        img = images[k]
        if crop and crop < h:
            y = int(torch.randint(0, h - crop + 1, (1,), generator=gen)) // 8 * 8
            x = int(torch.randint(0, w - crop + 1, (1,), generator=gen)) // 8 * 8
            img = img[:, y:y + crop, x:x + crop]
        if torch.rand(1, generator=gen) < 0.5:
            img = img.flip(-1)
        if torch.rand(1, generator=gen) < 0.5:
            img = img.flip(-2)
        out.append(img)
    return torch.stack(out)


SKIMAGE_SOURCE = "skimage"


def extra_image_files(sources: list[str]) -> list[Path]:
    """Image files named by --extra-images: folders (recursive) or 'skimage' (the photos and
    textures inside the installed scikit-image package; nothing is downloaded)."""
    files: list[Path] = []
    for source in sources:
        if source == SKIMAGE_SOURCE:
            import skimage

            folder = Path(skimage.__file__).parent / "data"
            files.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg")))
            continue
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"--extra-images: {folder} is not a folder (or use '{SKIMAGE_SOURCE}')")
        found = list_images(folder, recursive=True)
        if not found:
            raise FileNotFoundError(f"--extra-images: no images in {folder}")
        files.extend(found)
    return files


def load_extra_images(files: list[Path], min_side: int, max_side: int = 1024) -> list[torch.Tensor]:
    """Each readable file as a [3,H,W] tensor in [-1,1] with its shorter side >= `min_side`
    (smaller images are scaled up) and its longer side <= `max_side`; unreadable files are
    reported on stderr and skipped."""
    out = []
    for path in files:
        try:
            rgb = read_image(path, max_side=max_side)
        except ImageReadError as e:
            print(f"skipping {e}", file=sys.stderr)
            continue
        x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
        short = min(x.shape[1:])
        if short < min_side:
            size = [max(min_side, round(d * min_side / short)) for d in x.shape[1:]]
            x = F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)
        out.append(x)
    return out


def _random_extra_crops(images: list[torch.Tensor], n: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """n random crops [n,3,crop,crop] from random images: a random square of side crop / scale
    (scale in [1/2, 1]) resized to crop, with random flips and 90 degree turns."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(0, len(images), (1,), generator=gen))]
        side = min(min(img.shape[1:]), round(crop / (0.5 + 0.5 * float(torch.rand(1, generator=gen)))))
        y = int(torch.randint(0, img.shape[1] - side + 1, (1,), generator=gen))
        x = int(torch.randint(0, img.shape[2] - side + 1, (1,), generator=gen))
        patch = img[:, y:y + side, x:x + side]
        if side != crop:
            patch = F.interpolate(patch[None], size=(crop, crop), mode="bilinear", align_corners=False,
                                  antialias=True)[0]
        if torch.rand(1, generator=gen) < 0.5:
            patch = patch.flip(-1)
        out.append(torch.rot90(patch, int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2)))
    return torch.stack(out)


def draw_random_lines(patch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A copy of one crop [3,H,W] in [-1,1] with 1-3 random antialiased quadratic curves drawn on
    it, each 1-3 px wide in a random colour."""
    import cv2

    before = np.ascontiguousarray(((patch.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    img = before.copy()
    h, w = img.shape[:2]
    u = lambda: float(torch.rand(1, generator=gen))  # noqa: E731
    for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
        p0, p1, p2 = (np.array([u() * w, u() * h]) for _ in range(3))
        s = np.linspace(0, 1, 40)[:, None]
        curve = ((1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s ** 2 * p2)
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=gen))
        width = int(torch.randint(1, 4, (1,), generator=gen))
        cv2.polylines(img, [np.round(curve * 16).astype(np.int32)], False, colour, width, cv2.LINE_AA, shift=4)
    touched = torch.from_numpy((img != before).any(axis=2))
    return torch.where(touched, torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1, patch)


@torch.no_grad()
@torch.no_grad()
def evaluate_psnr(vae: VAE, images: torch.Tensor, device, batch_size: int = 8) -> float:
    """Mean PSNR (dB) of decode(encode(x)) over whole images [N,3,S,S] (no autograd graph)."""
    values = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size].to(device)
        y = vae.decode(vae.encode(x))   # once per batch, then one PSNR per image
        values.extend(psnr(y[k:k + 1], x[k:k + 1]) for k in range(x.shape[0]))
    return float(np.mean(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    return run_entry("train_vae", argv, build_arg_parser, lambda args, ctx, events: _train(args, ctx),
                     user_errors_exit=False)


def _train(args, ctx) -> int:
    from tqdm import tqdm

    if args.crop % 8:
        raise ValueError(f"--crop must be a multiple of 8, got {args.crop}")
    if not 0 <= args.extra_fraction < 1:
        raise ValueError(f"--extra-fraction must be in [0, 1), got {args.extra_fraction}")
    if not 0 <= args.line_augment <= 1:
        raise ValueError(f"--line-augment must be in [0, 1], got {args.line_augment}")
    per_rank = per_rank_batch(args.batch_size, ctx, "--batch-size")
    events = EventLog(args.events, enabled=ctx.is_main)
    torch.manual_seed(seed_for(args.global_seed, ctx))
    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    pre = PreprocessConfig(args.image_size, args.center_size, args.resize_filter)
    dataset = build_dataset(args.dataset, args.data_dir, categories, "train", pre, augment=False)
    images = _load_images(dataset)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.global_seed))
    n_val = max(1, int(round(images.shape[0] * args.val_fraction))) if images.shape[0] > 4 else 0
    val, train = images[order[:n_val]], images[order[n_val:]]
    crop = args.crop or args.center_size
    extra = load_extra_images(extra_image_files(args.extra_images), crop) if args.extra_images else []
    if args.extra_images and not extra:
        raise ValueError("--extra-images: none of the files could be read")
    n_extra = round(per_rank * args.extra_fraction) if extra else 0

    vae = load_vae(args.init) if args.init else create_vae(compact_vae_config(args.size))
    vae = vae.to(ctx.device)
    vae.model.train()
    objective = VAEObjective(vae, args.kl_weight, args.grad_weight)
    model = DDP(objective) if ctx.distributed else objective
    lr = args.lr if args.lr is not None else (LR_FINE_TUNE if args.init else LR_FROM_SCRATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = make_lr_scheduler(opt, args.warmup_epochs, args.epochs)
    ckpt_dir = args.out.with_name(args.out.name + "_checkpoints")
    start_epoch = 0
    resume = ckpt_dir / "last.pt" if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if resume is not None and resume.is_file():
        state = load_training_checkpoint(resume)
        vae.model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
    events.emit("started", images=int(train.shape[0]), held_out=int(val.shape[0]), extra_images=len(extra),
                epochs=args.epochs,
                start_epoch=start_epoch, parameters=vae.num_parameters, world_size=ctx.world_size,
                device=str(ctx.device))
    stop = {"requested": False}
    previous = {s: signal.signal(s, lambda *_: stop.__setitem__("requested", True))
                for s in (signal.SIGTERM, signal.SIGINT)}
    steps_per_epoch = max(1, math.ceil(train.shape[0] / max(1, args.batch_size - n_extra * ctx.world_size)))
    try:
        for epoch in range(start_epoch, args.epochs):
            gen = torch.Generator().manual_seed(seed_for(args.global_seed, ctx, epoch))
            perm = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(args.global_seed + epoch))
            mine = perm[ctx.rank::ctx.world_size]
            t0 = time.perf_counter()
            losses = []
            model.train()
            for s in tqdm(range(steps_per_epoch), desc=f"vae epoch {epoch + 1}/{args.epochs}", leave=False,
                          disable=not ctx.is_main, file=sys.stderr):
                n_good = per_rank - n_extra
                idx = mine[s * n_good:(s + 1) * n_good]
                if idx.numel() == 0:
                    idx = mine[:n_good]
                x = _random_crops(train[idx], args.crop, gen)
                if n_extra:
                    x = torch.cat([x, _random_extra_crops(extra, n_extra, crop, gen)])
                if args.line_augment > 0:
                    x = torch.stack([draw_random_lines(c, gen) if float(torch.rand(1, generator=gen)) < args.line_augment
                                     else c for c in x])
                x = x.to(ctx.device)
                x = x.contiguous(memory_format=torch.channels_last) if vae.channels_last else x
                eps = torch.randn((x.shape[0], vae.latent_channels, x.shape[2] // vae.downsample_factor,
                                   x.shape[3] // vae.downsample_factor),
                                  generator=gen).to(ctx.device)
                loss = model(x, eps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if stop["requested"]:
                    break
            if not stop["requested"]:
                scheduler.step()
            seconds = time.perf_counter() - t0
            vae.model.eval()
            # the main rank alone scores the held-out images (the event and the printout are its own)
            val_psnr = evaluate_psnr(vae, val, ctx.device) if val.shape[0] and ctx.is_main else float("nan")
            loss_mean = ctx.all_reduce_mean(float(np.mean(losses)))
            images_per_s = len(losses) * args.batch_size / max(seconds, 1e-9)
            events.emit("epoch", epoch=epoch + 1, epochs=args.epochs, loss=loss_mean, psnr=val_psnr,
                        seconds=seconds, images_per_s=images_per_s, eta_s=seconds * (args.epochs - epoch - 1),
                        lr=opt.param_groups[0]["lr"])
            if ctx.is_main:
                print(f"vae epoch {epoch + 1}/{args.epochs}  loss {loss_mean:.4f}  held-out PSNR {val_psnr:.2f} dB  "
                      f"{images_per_s:.1f} img/s", file=sys.stderr)
                done = epoch + 1 if not stop["requested"] else epoch
                if stop["requested"] or (epoch + 1) % args.ckpt_every == 0 or epoch + 1 == args.epochs:
                    save_training_checkpoint(ckpt_dir / "last.pt", vae.model.state_dict(), opt, scheduler, done, args)
                    save_vae(vae, args.out)
                    events.emit("checkpoint", epoch=done, path=str(ckpt_dir / "last.pt"), model_dir=str(args.out))
            ctx.barrier()
            if stop["requested"]:
                events.emit("stopped", epoch=epoch)
                return 0
        vae.model.eval()
        final_psnr = evaluate_psnr(vae, val, ctx.device) if val.shape[0] and ctx.is_main else float("nan")
        if ctx.is_main:
            save_vae(vae, args.out)
            print(f"saved {args.out}  held-out PSNR {final_psnr:.2f} dB  (latent scale {LATENT_SCALE})",
                  file=sys.stderr)
        events.emit("finished", model_dir=str(args.out), psnr=final_psnr)
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        events.close()


if __name__ == "__main__":
    sys.exit(main())
