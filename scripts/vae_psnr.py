"""How faithfully a VAE reproduces images it never saw: PSNR of decode(encode(x)) per folder.

    python scripts/vae_psnr.py --vae resources/compact_vae --size 256 DIR [DIR ...] [--max 100]

Every folder is searched recursively; images are resized and center-cropped like the model's
input (`--image-size`, `--size`). One line per folder: images, mean PSNR in dB (peak-to-peak 2
on [-1, 1], as `training.train_vae` reports its held-out PSNR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.imageio import ImageReadError, list_images, read_image  # noqa: E402
from engine.preprocess import PreprocessConfig, preprocess_frames  # noqa: E402
from engine.vae import load_vae  # noqa: E402
from training.train_vae import evaluate_psnr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--size", type=int, default=256, help="crop size (px)")
    p.add_argument("--image-size", type=int, default=None, help="resize side before the crop (default: --size)")
    p.add_argument("--max", type=int, default=100, help="images per folder at most (evenly spread)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    vae = load_vae(args.vae).eval()
    cfg = PreprocessConfig(image_size=args.image_size or args.size, center_size=args.size)
    for folder in args.folders:
        paths = list_images(folder)
        if len(paths) > args.max:
            paths = [paths[round(i * (len(paths) - 1) / (args.max - 1))] for i in range(args.max)]
        frames = []
        for path in paths:
            try:
                frames.append(read_image(path))
            except ImageReadError as e:
                print(f"skipped {e}", file=sys.stderr)
        if not frames:
            print(f"{folder}: no readable images")
            continue
        value = evaluate_psnr(vae, preprocess_frames(frames, cfg), torch.device("cpu"))
        print(f"{folder}: {len(frames)} images, PSNR {value:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
