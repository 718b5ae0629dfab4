"""Build the general-purpose compact VAE shipped with the app: a codec trained on a varied offline
image corpus, never on the images a detector is tested on, so that users train only the UNet.

    python scripts/make_general_vae.py --corpus /tmp/vae_corpus --out resources/general_vae [--minutes 35]
    python scripts/make_general_vae.py --corpus /tmp/vae_corpus --corpus-only

Stages:
 1. the corpus: 256 px crops at several scales from every image source found on this machine
    (`SOURCES`: scikit-image's bundled photos and textures, and Debian packages of photographs,
    wallpapers and game textures — install them with
    `apt-get install gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers
    lomiri-wallpapers colobot-common-textures openarena-081-textures`); flat crops are left out;
    `corpus.json` lists every crop's source file;
 2. `training.train_vae` on the corpus (torchrun, one process per core), thin random curves drawn
    on half the crops, for about --minutes of training (the epoch count is set from a timed first
    epoch), the held-out PSNR reported;
 3. the VAE folder copied to --out with `training.json` (corpus counts, epochs, held-out PSNR).
Report its PSNR on image kinds it never saw with `scripts/vae_psnr.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CROP = 256
# (name, folder): folders searched recursively for .png/.jpg/.jpeg/.webp and inside .pk3 (zip) archives.
SOURCES = (
    ("wallpapers (gnome, mate, lomiri)", Path("/usr/share/backgrounds")),
    ("wallpapers (plasma)", Path("/usr/share/wallpapers")),
    ("game textures (colobot)", Path("/usr/share/games/colobot")),
    ("game textures (openarena)", Path("/usr/share/games/openarena")),
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tga")
# Crops per source image: one per CROP^2 of area at the smallest scale, at most this many.
MAX_CROPS_PER_IMAGE = 6
# A crop's side in the source image is CROP times a factor drawn in [1, min(short side / CROP, MAX_ZOOM_OUT)].
MAX_ZOOM_OUT = 4.0
# Crops whose grey-level standard deviation (0-255) is below this are flat and left out.
MIN_CROP_STD = 6.0
MIN_SOURCE_SIDE = 96


def _decode(data: bytes):
    """Bytes of an image file -> HxWx3 uint8 RGB, or None (alpha composited on grey)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                grey = Image.new("RGBA", img.size, (128, 128, 128, 255))
                img = Image.alpha_composite(grey, img)
            return np.asarray(img.convert("RGB"))
    except Exception:  # noqa: BLE001 - any undecodable member is skipped and counted
        return None


def _source_images(folder: Path):
    """(name, bytes) of every image file under `folder`, zip (.pk3) members included."""
    for path in sorted(folder.rglob("*")):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path.is_file():
            yield str(path), path.read_bytes()
        elif suffix == ".pk3" and path.is_file():
            with zipfile.ZipFile(path) as z:
                for member in sorted(z.namelist()):
                    if Path(member).suffix.lower() in IMAGE_SUFFIXES:
                        yield f"{path}:{member}", z.read(member)


def _skimage_images():
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".png", ".jpg"):
            yield str(path), path.read_bytes()


def _crops(rgb: np.ndarray, rng: random.Random) -> list[np.ndarray]:
    import cv2

    h, w = rgb.shape[:2]
    short = min(h, w)
    if short < MIN_SOURCE_SIDE:
        return []
    if short < CROP:  # small textures: scaled up to one whole crop
        scale = CROP / short
        rgb = cv2.resize(rgb, (max(CROP, round(w * scale)), max(CROP, round(h * scale))), interpolation=cv2.INTER_CUBIC)
        h, w = rgb.shape[:2]
        short = min(h, w)
    n = max(1, min(MAX_CROPS_PER_IMAGE, (h * w) // (CROP * CROP * 4)))
    out = []
    for _ in range(n):
        side = round(CROP * rng.uniform(1.0, max(1.0, min(short / CROP, MAX_ZOOM_OUT))))
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        patch = rgb[y:y + side, x:x + side]
        if side != CROP:
            patch = cv2.resize(patch, (CROP, CROP), interpolation=cv2.INTER_AREA)
        if float(patch.mean(axis=2).std()) >= MIN_CROP_STD:
            out.append(np.ascontiguousarray(patch))
    return out


def build_corpus(out: Path, seed: int = 0) -> dict:
    """Write the crops to out/images/ and out/corpus.json; returns the counts per source."""
    import cv2

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    rng = random.Random(seed)
    sources = [("scikit-image data", _skimage_images())]
    sources += [(name, _source_images(folder)) for name, folder in SOURCES if folder.is_dir()]
    listing, counts, index = [], {}, 0
    for name, files in sources:
        seen = skipped = made = 0
        for origin, data in files:
            seen += 1
            rgb = _decode(data)
            if rgb is None:
                skipped += 1
                continue
            for crop in _crops(rgb, rng):
                path = images / f"{index:05d}.png"
                cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                listing.append({"crop": path.name, "source": origin})
                index += 1
                made += 1
        counts[name] = {"files": seen, "unreadable": skipped, "crops": made}
        print(f"{name}: {seen} files, {made} crops" + (f", {skipped} unreadable" if skipped else ""), flush=True)
    missing = [str(folder) for _, folder in SOURCES if not folder.is_dir()]
    summary = {"crop": CROP, "crops": index, "sources": counts, "missing_sources": missing, "seed": seed}
    (out / "corpus.json").write_text(json.dumps({**summary, "listing": listing}, indent=1), encoding="utf-8")
    if missing:
        print("not found (install the Debian packages named in this script's docstring): " + ", ".join(missing))
    return summary


def train(corpus: Path, work: Path, minutes: float, nproc: int, init: Path | None = None) -> tuple[Path, list[dict]]:
    """train_vae on the corpus for about `minutes` (from `init`'s weights when given, else from
    scratch); returns the VAE folder and its events."""
    from training.launch import launch_environment, python_module_command

    env = {**launch_environment(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def run(folder: Path, epochs: int) -> Path:
        events = folder / "vae_events.jsonl"
        cmd = python_module_command("training.train_vae", [
            "--dataset", "folder", "--data-dir", str(corpus / "images"), "--image-size", str(CROP),
            "--center-size", str(CROP), "--out", str(folder / "vae"), "--crop", "128", "--batch-size", "16",
            "--line-augment", "0.5", "--events", str(events), "--ckpt-every", "1", "--resume", "auto",
            "--epochs", str(epochs), *(["--init", str(init)] if init else [])], nproc=nproc if nproc > 1 else None)
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, env=env)
        return events

    vae_dir = work / "vae"
    if not (work / "vae_checkpoints" / "last.pt").is_file():
        # a timed one-epoch probe in its own folder (the real run's schedule needs the epoch count)
        probe = work / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        probe.mkdir(parents=True)
        t0 = time.monotonic()
        run(probe, 1)
        first = time.monotonic() - t0
        shutil.rmtree(probe)
        epochs = max(2, math.floor(minutes * 60 / max(first, 1.0)))
        print(f"one epoch {first:.0f} s: {epochs} epochs in all", flush=True)
        (work / "epochs.txt").write_text(str(epochs))
    epochs = int((work / "epochs.txt").read_text())
    events = run(work, epochs)
    return vae_dir, [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="folder for the corpus crops (kept; never committed)")
    p.add_argument("--out", type=Path, default=REPO / "resources" / "general_vae")
    p.add_argument("--work", type=Path, default=None, help="training folder (default: CORPUS/train)")
    p.add_argument("--minutes", type=float, default=35.0, help="training time, about")
    p.add_argument("--nproc", type=int, default=min(os.cpu_count() or 1, 4))
    p.add_argument("--corpus-only", action="store_true")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this VAE folder's weights (e.g. resources/compact_vae) instead of from scratch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    summary_path = args.corpus / "corpus.json"
    if summary_path.is_file() and (args.corpus / "images").is_dir():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        summary.pop("listing", None)
        print(f"corpus: {summary['crops']} crops already in {args.corpus}")
    else:
        summary = build_corpus(args.corpus, args.seed)
    if args.corpus_only:
        return 0
    work = args.work or args.corpus / "train"
    work.mkdir(parents=True, exist_ok=True)
    vae_dir, events = train(args.corpus, work, args.minutes, args.nproc, args.init)
    epochs = [e for e in events if e.get("event") == "epoch"]
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(vae_dir, args.out)
    record = {"corpus": summary, "epochs": len(epochs), "init": str(args.init) if args.init else None,
              "held_out_psnr_db": round(epochs[-1]["psnr"], 2) if epochs else None,
              "command": "python scripts/make_general_vae.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (args.out / "training.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"general VAE written to {args.out}: {record['epochs']} epochs, held-out PSNR {record['held_out_psnr_db']} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
