"""Reading images from disk safely: every failure is one `ImageReadError` naming the file.

Handles gray, RGBA, palette, CMYK, 16-bit and EXIF-rotated files; refuses or downscales huge
images without decoding them at full size; unicode and space-laden paths work (no cv2.imread).
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
import warnings
from pathlib import Path, PurePath

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "ImageReadError",
    "read_image",
    "list_images",
    "natural_key",
    "natural_path_key",
    "printable",
    "is_video",
    "write_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".webm", ".mpg", ".mpeg")
MAX_PIXELS = 80_000_000     # refuse anything larger that cannot be downscaled while decoding
MAX_SIDE = 4096             # decoded images are downscaled to at most this side


class ImageReadError(Exception):
    """An image that cannot be inspected; `str()` is the one-line message for the operator."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_images(folder, recursive: bool = True) -> list[Path]:
    """Image files under `folder`, in natural order (`natural_path_key`). Links to missing
    files are listed too, so that they are reported rather than silently skipped."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern)
             if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or (p.is_symlink() and not p.exists()))]
    return sorted(files, key=lambda p: natural_path_key(p.relative_to(folder)))


_DIGIT_RUN = re.compile(r"([0-9]+)")
_NUMBER, _TEXT = 0, 1   # at the same place in two names a number sorts before text


def natural_key(text: str) -> tuple:
    """Sort key for one name: runs of ASCII digits compare as numbers (by value, without int(),
    so any length works), other runs as case-folded, compatibility-normalised text; the name
    itself breaks ties. Any two keys compare, whatever the names hold."""
    runs = []
    for i, run in enumerate(_DIGIT_RUN.split(unicodedata.normalize("NFKD", str(text)))):
        if i % 2:
            digits = run.lstrip("0")
            runs.append((_NUMBER, len(digits), digits))
        elif run:
            runs.append((_TEXT, 0, run.casefold()))
    return tuple(runs), str(text)


def natural_path_key(path) -> tuple:
    """Sort key for a (relative) path: folder by folder, each file name by its stem, then its
    suffix, in `natural_key` order ('2.png' < '10.png' < 'a.png' < 'a1.png' < 'B.png'); the text
    itself breaks ties ('' and '.' are the same path)."""
    key = []
    for part in Path(path).parts:
        name = PurePath(part)
        key.append((natural_key(name.stem), natural_key(name.suffix), part))
    return tuple(key), str(path)


def printable(text) -> str:
    """`text` as any UTF-8 file, terminal or database takes it: bytes of a file name that are not
    UTF-8 (which Python decodes to lone surrogates) become \\xNN escapes; other text is unchanged."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _only_escaped_bytes(text) else "backslashreplace") \
            .decode("utf-8", "backslashreplace")


def _only_escaped_bytes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """PIL image of any mode -> HxWx3 uint8 RGB (16-bit scaled, alpha dropped on black)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or img.mode.startswith("I;16") else 255.0
        g = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 if a.max() <= 1.0 else 1.0
        g = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        rgba = np.asarray(img, dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return np.round(rgb).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied, downscaled so that the
    longer side is at most `max_side`. Raises ImageReadError with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found (moved or deleted?)") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot access file: {e.strerror or e}") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise ImageReadError(path, f"image has no pixels ({w}x{h})")
                if w * h > max_pixels:
                    if img.format != "JPEG":
                        raise ImageReadError(
                            path, f"image too large to inspect safely ({w}x{h} = {w * h / 1e6:.0f} MP; "
                                  f"limit {max_pixels / 1e6:.0f} MP)")
                    img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
                img.load()
                img = ImageOps.exif_transpose(img)
                if max(img.size) > max_side:
                    scale = max_side / max(img.size)
                    new = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
                    img = img.resize(new, Image.BILINEAR) if img.mode not in ("P", "1") else \
                        img.convert("RGB").resize(new, Image.BILINEAR)
                return _to_rgb_array(img)
    except ImageReadError:
        raise
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except FileNotFoundError:
        raise ImageReadError(path, "file not found (moved or deleted?)") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unknown or unsupported format)") from None
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)) / 1e6:.0f} MP; " if found else ""
        raise ImageReadError(path, f"image too large to inspect safely ({size}decoder limit "
                                    f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP)") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode the image") from None
    except OSError as e:
        if e.errno is not None:
            raise ImageReadError(path, f"cannot read the file: {e.strerror or e}") from None
        raise ImageReadError(path, f"truncated or corrupt image data ({str(e) or type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds of errors on malformed files
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ImageReadError(path, f"truncated or corrupt image data ({msg})") from None


# PNGs are written by OpenCV at zlib level 1 with the run-length strategy and the "up" row filter
# (lossless at any setting). benchmarks/bench_image_write.py, 640x480, AMD EPYC: 8.6 ms for a noisy
# camera frame (464 KB) and 8.2 ms for a demo photograph (259 KB), against 15.8 / 14.2 ms and
# 438 / 222 KB when libpng tries every filter on every row, and PIL's 28 / 17 ms. The reject
# archive writes one per failed part (the frame; its overlay is a JPEG), on the CPU the engine needs.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 92     # what .jpg/.jpeg files are written at unless a caller says otherwise
JPEG_SUBSAMPLING = 0  # 4:4:4, full-resolution colour: the thin red defect outlines of overlays stay sharp
PNG_ENCODE_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                     cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP)


def _encoded(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    if fmt == "JPEG":
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
        return out.getvalue()
    refused = f"cannot write a {'x'.join(map(str, rgb.shape))} {rgb.dtype} image as PNG"
    try:
        bgr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".png", bgr, list(PNG_ENCODE_PARAMS))
    except cv2.error as e:
        raise ValueError(f"{refused} ({str(e).strip().splitlines()[-1]})") from None
    if not ok:
        raise ValueError(refused)
    return data.tobytes()


def write_image(path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write an HxWx3 uint8 RGB image or an HxW gray one (JPEG for .jpg/.jpeg at `quality`, else PNG with
    `PNG_ENCODE_PARAMS`) through a temp file + rename; any path, unicode included."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    data = _encoded(np.ascontiguousarray(rgb), fmt, quality)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
