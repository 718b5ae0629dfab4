"""What the reject archive pays per image: `engine.imageio.write_image` (OpenCV PNG, zlib level 1,
run-length strategy, the "up" row filter) against the same without a fixed filter (libpng then
tries all five on every row), PIL's PNG writer at the same zlib level, and a JPEG at the quality
the archive's overlays use (`engine.imageio.JPEG_QUALITY`), on 640x480 frames.

    python benchmarks/bench_image_write.py
    python benchmarks/bench_image_write.py --repeats 20

Two kinds of frame: `camera` (a smooth scene with sensor noise of +-4 levels, as a real camera
delivers) and `demo` (the demo test photographs scaled to 640x480: smooth JPEG-decoded content).
Reports the median ms per write and the mean file size; the PNG writers are lossless (checked).
Writes benchmarks/results/image_write.json and image_write.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAME_SIZE = (640, 480)       # width, height
CAMERA_NOISE_LEVELS = 4
DEMO_IMAGES = REPO / "resources" / "demo_data"


def camera_frames(count: int):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        scene = cv2.GaussianBlur(rng.integers(0, 256, (FRAME_SIZE[1], FRAME_SIZE[0], 3)).astype(np.uint8), (0, 0), 3)
        noise = rng.integers(-CAMERA_NOISE_LEVELS, CAMERA_NOISE_LEVELS + 1, scene.shape)
        out.append((scene.astype(np.int16) + noise).clip(0, 255).astype(np.uint8))
    return out


def demo_frames(count: int):
    import cv2

    from engine.imageio import read_image

    paths = sorted(DEMO_IMAGES.glob("*/test/*/*.jpg"))[:: 7][:count]
    return [cv2.resize(read_image(p), FRAME_SIZE, interpolation=cv2.INTER_AREA) for p in paths]


def pil_png(path: Path, rgb) -> None:
    from PIL import Image

    from engine.imageio import PNG_COMPRESS_LEVEL

    Image.fromarray(rgb).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def opencv_png_all_filters(path: Path, rgb) -> None:
    """write_image's PNG settings without the fixed row filter (what it wrote before)."""
    import cv2

    from engine.imageio import PNG_COMPRESS_LEVEL

    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL, cv2.IMWRITE_PNG_STRATEGY,
                             cv2.IMWRITE_PNG_STRATEGY_RLE])
    assert ok, "OpenCV refused a PNG"
    path.write_bytes(data.tobytes())


def time_writer(writer, frames, folder: Path, repeats: int, suffix: str = ".png") -> dict:
    import numpy as np
    from PIL import Image

    times, sizes = [], []
    for i, rgb in enumerate(frames):
        path = folder / f"{i}{suffix}"
        writer(path, rgb)                                   # warm-up, and for PNG the lossless check
        if suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb), "a writer lost pixels"
        for _ in range(repeats):
            start = time.perf_counter()
            writer(path, rgb)
            times.append((time.perf_counter() - start) * 1000.0)
        sizes.append(path.stat().st_size / 1024.0)
    return {"ms_median": statistics.median(times), "kb_mean": statistics.fmean(sizes)}


def main() -> int:
    from benchmarks.bench_engine import publish_results
    from engine.imageio import JPEG_QUALITY, write_image

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, frames in (("camera", camera_frames(args.frames)), ("demo", demo_frames(args.frames))):
            for name, writer, suffix in (("PIL PNG", pil_png, ".png"),
                                         ("OpenCV PNG, all row filters", opencv_png_all_filters, ".png"),
                                         ("write_image PNG", write_image, ".png"),
                                         (f"write_image JPEG q{JPEG_QUALITY}", write_image, ".jpg")):
                r = time_writer(writer, frames, Path(tmp), args.repeats, suffix)
                rows.append({"frames": kind, "writer": name, **r})
                print(f"{kind:7s} {name:22s} {r['ms_median']:6.1f} ms {r['kb_mean']:6.0f} KB", flush=True)
    from engine.acceleration import cpu_description

    machine = cpu_description()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Measured on {machine} by `python benchmarks/bench_image_write.py` ({stamp}): 640x480 frames, "
             f"{args.frames} per kind, median of {args.repeats} writes each.", "",
             "| frames | writer | ms per image | KB per image |", "|---|---|---|---|"]
    lines += [f"| {r['frames']} | {r['writer']} | {r['ms_median']:.1f} | {r['kb_mean']:.0f} |" for r in rows]
    publish_results("image_write", {"machine": machine, "measured": stamp, "rows": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
