"""Train the category classifier that tells the Detector which product it is looking at.

    python -m training.train_classifier --data-dir DATA --out models/classifier --epochs 30 --batch-size 32

Data: every category's train images (a held-out share of them picks the best epoch) and, when
present, the test split (good and defective) to report held-out accuracy. Input: the whole
image resized to image_size^2 (no crop), ImageNet normalisation; augmentation: horizontal flip,
rotation up to 10 degrees, brightness and contrast jitter 0.2 (the reference's recipe).
AdamW (lr 1e-3, weight decay 1e-4), cosine annealing per epoch, cross-entropy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from engine.classifier import ARCHS, CategoryClassifier, ClassifierConfig, build_classifier, save_classifier
from engine.imageio import read_image

from .common import add_data_arguments, add_run_arguments, run_entry, seed_for
from .datasets import build_dataset

__all__ = ["build_arg_parser", "main", "augment_batch"]


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_classifier", description="Train the category classifier.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p, ("mvtec", "visa", "auto"), "auto")
    p.add_argument("--out", type=Path, required=True, help="output classifier folder")
    p.add_argument("--arch", choices=ARCHS, default="compact")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--global-seed", type=int, default=1000)
    add_run_arguments(p)
    return p


def _load(paths: list[str], clf: CategoryClassifier) -> torch.Tensor:
    frames = [read_image(p) for p in paths]
    return clf.preprocess(frames)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, rotate <= 10 degrees, brightness/contrast x U(0.8, 1.2) on normalised images [B,3,S,S]."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * (10 * np.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    contrast = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean * brightness


@torch.no_grad()
def accuracy(module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 32) -> float:
    module.eval()
    hits = 0
    for s in range(0, x.shape[0], batch):
        hits += (module(x[s:s + batch].to(device)).argmax(1).cpu() == y[s:s + batch]).sum().item()
    return hits / max(1, x.shape[0])


def main(argv: list[str] | None = None) -> int:
    return run_entry("train_classifier", argv, build_arg_parser, _train,
                     user_errors_exit=False)


def _train(args, ctx, events) -> int:
    from tqdm import tqdm

    categories = "all" if args.object_category == "all" else args.object_category.split(",")
    train_set = build_dataset(args.dataset, args.data_dir, categories, "train", augment=False)
    names = train_set.categories
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 categories, found {names} in {args.data_dir}")
    config = ClassifierConfig(arch=args.arch, class_names=names, image_size=args.image_size, width=args.width)
    torch.manual_seed(seed_for(args.global_seed, ctx))
    module = build_classifier(config).to(ctx.device)
    clf = CategoryClassifier(config, module)
    paths = [str(s.path) for s in train_set.samples]
    labels = torch.tensor([names.index(s.category) for s in train_set.samples])
    x_all = _load(paths, clf)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(args.global_seed))
    n_val = max(len(names), int(len(paths) * args.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    try:
        test_set = build_dataset(args.dataset, args.data_dir, categories, "test", augment=False)
        test_samples = [s for s in test_set.samples if s.category in names]
    except ValueError:
        test_samples = []
    x_test = _load([str(s.path) for s in test_samples], clf) if test_samples else None
    y_test = torch.tensor([names.index(s.category) for s in test_samples]) if test_samples else None

    model = DDP(module) if ctx.distributed else module
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    per_rank = max(1, args.batch_size // ctx.world_size)
    events.emit("started", classes=names, images=len(train_idx), held_out=len(val_idx),
                test_images=len(test_samples), epochs=args.epochs, parameters=sum(p.numel() for p in module.parameters()))
    best = (-1.0, None)
    for epoch in range(args.epochs):
        gen = torch.Generator().manual_seed(seed_for(args.global_seed, ctx, epoch))
        perm = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(args.global_seed + epoch))]
        mine = perm[ctx.rank::ctx.world_size]
        model.train()
        t0 = time.perf_counter()
        losses = []
        for s in tqdm(range(0, len(mine), per_rank), desc=f"classifier epoch {epoch + 1}/{args.epochs}",
                      leave=False, disable=not ctx.is_main, file=sys.stderr):
            idx = mine[s:s + per_rank]
            x = augment_batch(x_all[idx], gen).to(ctx.device)
            loss = F.cross_entropy(model(x), labels[idx].to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        val_acc = accuracy(module, x_all[val_idx], labels[val_idx], ctx.device)
        if val_acc >= best[0] and ctx.is_main:
            best = (val_acc, {k: v.detach().cpu().clone() for k, v in module.state_dict().items()})
        seconds = time.perf_counter() - t0
        events.emit("epoch", epoch=epoch + 1, epochs=args.epochs, loss=float(np.mean(losses)), val_accuracy=val_acc,
                    seconds=seconds, eta_s=seconds * (args.epochs - epoch - 1))
        if ctx.is_main:
            print(f"classifier epoch {epoch + 1}/{args.epochs}  loss {np.mean(losses):.4f}  "
                  f"held-out accuracy {100 * val_acc:.1f}%", file=sys.stderr)
    if ctx.is_main:
        module.load_state_dict(best[1])
        test_acc = accuracy(module, x_test, y_test, ctx.device) if x_test is not None else None
        clf = CategoryClassifier(config, module.cpu())
        save_classifier(clf, args.out)
        msg = f"saved {args.out}: held-out accuracy {100 * best[0]:.1f}%"
        if test_acc is not None:
            msg += f", test-split accuracy {100 * test_acc:.1f}% on {len(test_samples)} images"
        print(msg, file=sys.stderr)
        events.emit("finished", model_dir=str(args.out), val_accuracy=best[0], test_accuracy=test_acc)
    ctx.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
