"""Fault injection, bad input: a corpus of malformed, odd and valid image files generated here
(more than 40 kinds) goes through the safe reader, the `inspect` command and the window's
engine worker. Every bad file must become one clear per-file error (CLI line, CSV row, GUI log
line, results-log row with verdict "error") and the batch must go on. Property-based parts
(hypothesis) truncate, corrupt and resize images at random."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.imageio import IMAGE_EXTENSIONS, MAX_SIDE, ImageReadError, list_images, read_image

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- file makers
def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rgb(h=48, w=64, seed=0) -> Image.Image:
    return Image.fromarray(_noise(h, w, 3, seed))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of any size, built row by row (never holds the pixels)."""
    row = bytes(1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))


def gray_jpeg(width: int, height: int) -> bytes:
    """A valid baseline gray JPEG of any size (every 8x8 block mid-gray), written directly:
    one-code Huffman tables make each block 2 zero bits, so 20000 x 20000 is 12.5 MB of data."""
    def seg(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + bytes([0])
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    return (b"\xff\xd8" + seg(0xDB, bytes([0]) + bytes([1] * 64))
            + seg(0xC0, bytes([8]) + struct.pack(">HH", height, width) + bytes([1, 1, 0x11, 0]))
            + seg(0xC4, bytes([0x00]) + one_code + bytes([0x10]) + one_code)
            + seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0])) + bytes((blocks * 2 + 7) // 8) + b"\xff\xd9")


def exif_jpeg(orientation: int) -> bytes:
    """64 x 48 stored pixels with a red 16 x 12 block in the stored top-left corner."""
    a = np.full((48, 64, 3), 30, np.uint8)
    a[:12, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes())


def _flip(data: bytes, start: int, count: int) -> bytes:
    out = bytearray(data)
    for k in range(start, min(start + count, len(out))):
        out[k] ^= 0xA5
    return bytes(out)


def _red_corner(rgb: np.ndarray) -> str:
    """Which corner of an image holds the red marker block."""
    h, w = rgb.shape[:2]
    corners = {"top-left": rgb[:4, :4], "top-right": rgb[:4, -4:], "bottom-left": rgb[-4:, :4],
               "bottom-right": rgb[-4:, -4:]}
    return max(corners, key=lambda k: float(corners[k][..., 0].mean()) - float(corners[k][..., 1].mean()))


@dataclass(frozen=True)
class Case:
    """One kind of input: file name, how to make its bytes, and what must happen.

    expect 'ok': read_image returns HxWx3 uint8 and `check(rgb)` holds; expect 'error':
    ImageReadError whose problem matches the regex `reason`."""

    kind: str
    name: str
    make: Callable[[], bytes]
    expect: str
    reason: str = ""
    check: Callable[[np.ndarray], bool] | None = None


def _shape(h: int, w: int) -> Callable[[np.ndarray], bool]:
    return lambda rgb: rgb.shape == (h, w, 3)


TRUNCATED = r"truncated|corrupt|broken|not enough|cannot identify|unknown or unsupported"
PNG = lambda: _encode(_rgb(), "PNG")  # noqa: E731
JPEG = lambda: _encode(_rgb(), "JPEG", quality=90)  # noqa: E731

CASES = [
    # ---- unreadable: empty, truncated, corrupt, not images at all
    Case("empty png", "empty.png", lambda: b"", "error", r"empty file \(0 bytes\)"),
    Case("empty jpeg", "empty.jpg", lambda: b"", "error", r"empty file \(0 bytes\)"),
    Case("png signature only", "sig_only.png", lambda: PNG()[:8], "error", TRUNCATED),
    Case("png cut in the header", "cut_header.png", lambda: PNG()[:30], "error", TRUNCATED),
    Case("png cut in the pixel data", "cut_half.png", lambda: PNG()[: len(PNG()) // 2], "error", TRUNCATED),
    Case("png with a corrupt IHDR checksum", "bad_crc.png", lambda: _flip(PNG(), 29, 1), "error", TRUNCATED),
    Case("png with corrupt compressed data", "bad_idat.png", lambda: _flip(PNG(), 60, 400), "error",
         r"corrupt|truncated|decompress|invalid|broken|checksum"),
    Case("png claiming 0 x 0 pixels", "zero_size.png",
         lambda: b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)),
         "error", r"no pixels|truncated|corrupt|broken|unknown"),
    Case("jpeg SOI marker only", "soi_only.jpg", lambda: b"\xff\xd8", "error", TRUNCATED),
    Case("jpeg cut in the header", "cut_header.jpg", lambda: JPEG()[:120], "error", TRUNCATED),
    Case("jpeg cut in the scan data", "cut_half.jpg", lambda: JPEG()[: len(JPEG()) // 2], "error", TRUNCATED),
    Case("bmp cut in the pixel data", "cut.bmp", lambda: _encode(_rgb(), "BMP")[:3000], "error", TRUNCATED),
    Case("tiff cut in the pixel data", "cut.tif", lambda: _encode(_rgb(), "TIFF")[:2000], "error", TRUNCATED),
    Case("webp cut in the pixel data", "cut.webp", lambda: _encode(_rgb(), "WEBP")[:200], "error", TRUNCATED),
    Case("text file named .png", "notes.png", lambda: b"inspection notes, shift 2\n" * 20, "error",
         r"not an image file"),
    Case("text file named .jpg", "notes.jpg", lambda: b"hello", "error", r"not an image file"),
    Case("html page named .jpeg", "page.jpeg", lambda: b"<!doctype html><html><body>404</body></html>",
         "error", r"not an image file"),
    Case("zip archive named .png", "archive.png", lambda: b"PK\x03\x04" + bytes(200), "error",
         r"not an image file"),
    Case("pdf named .tiff", "doc.tiff", lambda: b"%PDF-1.7\n" + bytes(300), "error", r"not an image file"),
    Case("random bytes named .png", "random.png", lambda: bytes(_noise(1, 4096, 1, seed=5).ravel()), "error",
         r"not an image file"),
    Case("random bytes named .bmp", "random.bmp", lambda: bytes(_noise(1, 4096, 1, seed=6).ravel()), "error",
         r"not an image file"),
    Case("huge png 20000 x 20000", "huge_20000.png", lambda: blank_png(20000, 20000), "error",
         r"too large to inspect safely"),
    Case("huge jpeg 20000 x 20000", "huge_20000.jpg", lambda: gray_jpeg(20000, 20000), "error",
         r"too large to inspect safely"),
    Case("large png 10000 x 9000 (over the pixel limit)", "large_10000x9000.png", lambda: blank_png(10000, 9000),
         "error", r"too large to inspect safely \(10000x9000"),
    # ---- readable, some of them only after conversion
    Case("large jpeg 12000 x 8000 (downscaled while decoding)", "large_12000x8000.jpg",
         lambda: gray_jpeg(12000, 8000), "ok",
         check=lambda rgb: rgb.shape == (2731, MAX_SIDE, 3) and abs(int(rgb.mean()) - 128) <= 1),
    Case("rgb png", "rgb.png", PNG, "ok", check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("rgb jpeg", "rgb.jpg", JPEG, "ok", check=_shape(48, 64)),
    Case("gray png", "gray.png", lambda: _encode(Image.fromarray(_noise(40, 30, 1)), "PNG"), "ok",
         check=lambda rgb: rgb.shape == (40, 30, 3) and np.array_equal(rgb[..., 0], _noise(40, 30, 1))
         and np.array_equal(rgb[..., 0], rgb[..., 2])),
    Case("gray jpeg", "gray.jpg", lambda: _encode(Image.fromarray(_noise(40, 30, 1)), "JPEG"), "ok",
         check=_shape(40, 30)),
    Case("16-bit gray png", "gray16.png",
         lambda: _encode(Image.fromarray(np.array([[0, 32768, 65535]] * 4, np.uint16)), "PNG"), "ok",
         check=lambda rgb: rgb.shape == (4, 3, 3) and rgb[0, :, 0].tolist() == [0, 128, 255]),
    Case("rgba png (alpha on black)", "rgba.png",
         lambda: _encode(Image.fromarray(np.dstack([np.full((8, 8, 3), 200, np.uint8),
                                                    np.full((8, 8), 128, np.uint8)]), "RGBA"), "PNG"), "ok",
         check=lambda rgb: rgb.shape == (8, 8, 3) and int(rgb[0, 0, 0]) == 100),
    Case("gray + alpha png", "la.png", lambda: _encode(Image.new("LA", (9, 7), (255, 0)), "PNG"), "ok",
         check=lambda rgb: rgb.shape == (7, 9, 3) and int(rgb.max()) == 0),
    Case("palette png", "palette.png", lambda: _encode(_rgb().convert("P"), "PNG"), "ok", check=_shape(48, 64)),
    Case("palette png with transparency", "palette_t.png",
         lambda: _encode(_rgb().convert("P"), "PNG", transparency=0), "ok", check=_shape(48, 64)),
    Case("1-bit png", "bilevel.png", lambda: _encode(_rgb().convert("1"), "PNG"), "ok",
         check=lambda rgb: rgb.shape == (48, 64, 3) and set(np.unique(rgb)) <= {0, 255}),
    Case("cmyk jpeg", "cmyk.jpg", lambda: _encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG"), "ok",
         check=lambda rgb: rgb.shape == (10, 20, 3) and rgb[..., 0].mean() > 200 and rgb[..., 1:].mean() < 60),
    Case("jpeg with EXIF orientation 3 (upside down)", "exif3.jpg", lambda: exif_jpeg(3), "ok",
         check=lambda rgb: rgb.shape == (48, 64, 3) and _red_corner(rgb) == "bottom-right"),
    Case("jpeg with EXIF orientation 6 (turned right)", "exif6.jpg", lambda: exif_jpeg(6), "ok",
         check=lambda rgb: rgb.shape == (64, 48, 3) and _red_corner(rgb) == "top-right"),
    Case("jpeg with EXIF orientation 8 (turned left)", "exif8.jpg", lambda: exif_jpeg(8), "ok",
         check=lambda rgb: rgb.shape == (64, 48, 3) and _red_corner(rgb) == "bottom-left"),
    Case("progressive jpeg", "progressive.jpg", lambda: _encode(_rgb(), "JPEG", progressive=True), "ok",
         check=_shape(48, 64)),
    Case("1 x 1 png", "one_pixel.png", lambda: _encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"), "ok",
         check=lambda rgb: rgb.tolist() == [[[9, 8, 7]]]),
    Case("1 x 500 strip", "strip.png", lambda: _encode(_rgb(1, 500), "PNG"), "ok", check=_shape(1, 500)),
    Case("32-bit float tiff", "float.tif",
         lambda: _encode(Image.fromarray(np.linspace(0, 1, 60, dtype=np.float32).reshape(6, 10)), "TIFF"), "ok",
         check=lambda rgb: rgb.shape == (6, 10, 3) and int(rgb.max()) == 255),
    Case("lzw tiff", "lzw.tif", lambda: _encode(_rgb(), "TIFF", compression="tiff_lzw"), "ok",
         check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("bmp", "plain.bmp", lambda: _encode(_rgb(), "BMP"), "ok",
         check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("lossless webp", "lossless.webp", lambda: _encode(_rgb(), "WEBP", lossless=True), "ok",
         check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("gif named .png", "really_gif.png", lambda: _encode(_rgb().convert("P"), "GIF"), "ok",
         check=_shape(48, 64)),
    Case("png named .jpg", "really_png.jpg", PNG, "ok", check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("png with garbage after IEND", "trailing.png", lambda: PNG() + b"\x00garbage" * 50, "ok",
         check=lambda rgb: np.array_equal(rgb, np.asarray(_rgb()))),
    Case("jpeg with garbage after EOI", "trailing.jpg", lambda: JPEG() + b"garbage" * 50, "ok",
         check=_shape(48, 64)),
    Case("upper-case extension", "UPPER.PNG", PNG, "ok", check=_shape(48, 64)),
    Case("unicode file name", "Prüfteil_零件_ø.png", PNG, "ok", check=_shape(48, 64)),
    Case("spaces and quotes in the name", "part one 'A' (copy) #2.png", PNG, "ok", check=_shape(48, 64)),
]


def _corpus_dir(root: Path) -> Path:
    folder = root / "corpus with spaces ü"
    folder.mkdir(parents=True)
    for case in CASES:
        (folder / case.name).write_bytes(case.make())
    (folder / "dangling link.png").symlink_to(folder / "was deleted.png")
    return folder


DANGLING = Case("link to a deleted file", "dangling link.png", lambda: b"", "error", r"file not found")
ALL_CASES = CASES + [DANGLING]
ERRORS = {c.name: c.reason for c in ALL_CASES if c.expect == "error"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _corpus_dir(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.test_detector import make_detector

    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_detector(ncls=2, threshold=0.5).save(folder)
    return folder


def test_the_corpus_has_more_than_forty_kinds_and_every_file_is_listed(corpus):
    assert len(ALL_CASES) >= 40
    assert len({c.name for c in ALL_CASES}) == len(ALL_CASES)
    assert sum(c.expect == "error" for c in ALL_CASES) >= 20
    assert sorted(p.name for p in list_images(corpus)) == sorted(c.name for c in ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.kind for c in ALL_CASES])
def test_read_image_on_every_kind(corpus, case):
    path = corpus / case.name
    if case.expect == "error":
        with pytest.raises(ImageReadError) as e:
            read_image(path)
        assert re.search(case.reason, e.value.problem, re.I), e.value.problem
        assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    else:
        rgb = read_image(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert case.check(rgb), (rgb.shape, rgb.dtype)


MEMORY_PROBE = r"""
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("imageio_only", "engine/imageio.py")  # without importing torch
imageio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(imageio)


def peak_mb():
    # VmHWM is this process's own peak; getrusage's ru_maxrss starts from the parent's at fork
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


out, base = {}, peak_mb()
for path in sys.argv[1:-1]:
    try:
        imageio.read_image(path)
        out[path] = "read"
    except imageio.ImageReadError as e:
        out[path] = e.problem
out["refusing_mb"] = peak_mb() - base
out["shape"] = list(imageio.read_image(sys.argv[-1]).shape)
out["downscaling_mb"] = peak_mb() - base
print(json.dumps(out))
"""


def test_huge_images_are_refused_or_downscaled_without_exhausting_memory(corpus):
    """Peak resident memory (VmHWM) added by reading the huge files, in a fresh interpreter."""
    huge = [str(corpus / name) for name in ("huge_20000.jpg", "huge_20000.png", "large_10000x9000.png")]
    p = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *huge, str(corpus / "large_12000x8000.jpg")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert all("too large to inspect safely" in out[path] for path in huge), out
    assert out["refusing_mb"] < 32, out  # decoded, the 400 MP files would need 1.2 GB each
    assert out["shape"] == [2731, MAX_SIDE, 3]
    assert out["downscaling_mb"] < 300, out  # measured 143 MB; decoded at full size it takes 1.1 GB


# ----------------------------------------------------------------------------- hypothesis
_PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hypothesis")


def _read_or_error(path: Path):
    """read_image's contract: an HxWx3 uint8 array, or ImageReadError naming the file; nothing else."""
    try:
        rgb = read_image(path)
    except ImageReadError as e:
        assert e.path == str(path) and e.problem and "\n" not in e.problem
        return None
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 1
    return rgb


SOURCES = {
    ".png": _encode(_rgb(40, 56, seed=3), "PNG"),
    ".jpg": _encode(_rgb(40, 56, seed=3), "JPEG", quality=85),
    ".bmp": _encode(_rgb(40, 56, seed=3), "BMP"),
    ".tif": _encode(_rgb(40, 56, seed=3), "TIFF"),
    ".webp": _encode(_rgb(40, 56, seed=3), "WEBP"),
}


@_PROPS
@given(ext=st.sampled_from(sorted(SOURCES)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_at_any_point_is_an_error_or_the_whole_image(scratch, ext, cut):
    data = SOURCES[ext]
    path = scratch / f"truncated{ext}"
    path.write_bytes(data[: int(len(data) * cut)])
    rgb = _read_or_error(path)
    assert rgb is None or rgb.shape == (40, 56, 3)


@_PROPS
@given(ext=st.sampled_from(sorted(SOURCES)), start=st.floats(0.0, 1.0, exclude_max=True),
       length=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_random_byte_corruption_is_an_error_or_an_image(scratch, ext, start, length, seed):
    data = bytearray(SOURCES[ext])
    at = int(len(data) * start)
    data[at:at + length] = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    path = scratch / f"corrupt{ext}"
    path.write_bytes(bytes(data))
    _read_or_error(path)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP",
         b"GIF89a"]


@_PROPS
@given(ext=st.sampled_from(IMAGE_EXTENSIONS), magic=st.sampled_from(MAGIC), garbage=st.binary(max_size=2048))
def test_garbage_behind_any_image_signature_never_crashes(scratch, ext, magic, garbage):
    path = scratch / f"garbage{ext}"
    path.write_bytes(magic + garbage)
    _read_or_error(path)


@_PROPS
@given(h=st.integers(1, 300), w=st.integers(1, 300), mode=st.sampled_from(["RGB", "L", "RGBA", "LA", "P", "1",
                                                                          "I;16"]),
       max_side=st.integers(8, 400), seed=st.integers(0, 1000))
def test_any_size_and_mode_reads_back_with_its_aspect_ratio(scratch, h, w, mode, max_side, seed):
    base = Image.fromarray(_noise(h, w, 3, seed))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(_noise(h, w, 1, seed).astype(np.uint16) * 257)
    path = scratch / "sized.png"
    img.save(path)
    rgb = read_image(path, max_side=max_side)
    if max(h, w) <= max_side:
        assert rgb.shape == (h, w, 3)
        if mode == "RGB":
            assert np.array_equal(rgb, np.asarray(base))
    else:
        assert max(rgb.shape[:2]) == max_side
        scale = max_side / max(h, w)
        assert abs(rgb.shape[0] - h * scale) <= 1 and abs(rgb.shape[1] - w * scale) <= 1


# ----------------------------------------------------------------------------- the inspect command
def _inspect(capsys, *args) -> tuple[int, str, str]:
    import main

    code = main.main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _db_rows(path: Path) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM parts ORDER BY id")]
    finally:
        conn.close()


def test_inspect_command_gives_every_bad_file_one_error_row_and_goes_on(corpus, tiny_model, tmp_path, capsys):
    out_csv, db = tmp_path / "rows.csv", tmp_path / "results.sqlite"
    code, out, err = _inspect(capsys, corpus, "--model", tiny_model, "--category", "part0", "--csv", out_csv,
                              "--log", db, "--batch-size", "4")
    assert code == 2, err
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert sorted(Path(r["file"]).name for r in rows) == sorted(c.name for c in ALL_CASES)
    for r in rows:
        name = Path(r["file"]).name
        if name in ERRORS:
            assert r["verdict"] == "error" and re.search(ERRORS[name], r["error"], re.I), r
            assert r["score"] == ""
            lines = [line for line in err.splitlines() if line.startswith(f"ERROR {r['file']}: ")]
            assert len(lines) == 1, (name, err)
        else:
            assert r["verdict"] in ("pass", "fail") and float(r["score"]) >= 0 and not r["error"], r
    logged = _db_rows(db)
    assert [(Path(r["frame_id"]).name, r["verdict"], r["error"]) for r in logged] == \
        [(Path(r["file"]).name, r["verdict"], r["error"]) for r in rows]
    n_bad = len(ERRORS)
    assert f"{len(ALL_CASES) - n_bad} inspected" in out and f"{n_bad} errors" in out


def test_files_deleted_mid_batch_and_unreadable_files(tmp_path, tiny_model, capsys, monkeypatch):
    import inspector.headless as headless

    folder = tmp_path / "line 3"
    folder.mkdir()
    for i in range(8):
        (folder / f"part_{i}.png").write_bytes(_encode(_rgb(seed=i), "PNG"))
    locked = folder / "part_5.png"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads anything: make the file unreadable to this process instead
        real_open = Image.open

        def refusing_open(fp, *args, **kwargs):
            if Path(fp) == locked:
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr("engine.imageio.Image.open", refusing_open)
    real_read = headless.read_image

    def read_and_lose_files(path, *args, **kwargs):
        if Path(path).name == "part_1.png":  # the operator clears the folder while the batch runs
            (folder / "part_3.png").unlink()
            (folder / "part_6.png").unlink()
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(headless, "read_image", read_and_lose_files)
    out_csv = tmp_path / "rows.csv"
    try:
        code, out, err = _inspect(capsys, folder, "--model", tiny_model, "--category", "part0", "--csv", out_csv,
                                  "--batch-size", "2", "--threshold", "100")
    finally:
        locked.chmod(0o644)
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out_csv.open(encoding="utf-8"))}
    assert code == 2 and len(rows) == 8
    for name in ("part_3.png", "part_6.png"):
        assert rows[name]["verdict"] == "error" and "file not found (moved or deleted?)" in rows[name]["error"]
    assert rows["part_5.png"]["verdict"] == "error" and rows["part_5.png"]["error"] == "permission denied"
    assert [rows[f"part_{i}.png"]["verdict"] for i in (0, 1, 2, 4, 7)] == ["pass"] * 5
    assert "5 inspected: 5 pass, 0 fail, 3 errors" in out


def test_a_truncated_video_says_where_it_ended(tmp_path, tiny_model, capsys):
    import cv2

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(24):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    data = clip.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 7 // 10])
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    out_json = tmp_path / "v.json"
    code, _, err = _inspect(capsys, tmp_path / "cut.avi", tmp_path / "junk.mp4", "--model", tiny_model,
                            "--category", "part0", "--threshold", "100", "--json", out_json)
    rows = json.loads(out_json.read_text())["rows"]
    frames = [r for r in rows if r["verdict"] == "pass"]
    errors = [r for r in rows if r["verdict"] == "error"]
    assert code == 2 and 0 < len(frames) < 24
    assert [r["frame"] for r in frames] == list(range(len(frames)))
    assert len(errors) == 2
    assert errors[0]["file"].endswith("cut.avi") and "ended early at frame" in errors[0]["error"]
    assert errors[1]["file"].endswith("junk.mp4") and "cannot open video" in errors[1]["error"]


# ----------------------------------------------------------------------------- the window's engine worker
def test_the_window_logs_one_error_per_bad_file_and_goes_on(qtbot, corpus, tmp_path, monkeypatch):
    from inspector.sources import SourceSpec
    from tests.gui_helpers import SleepyDetector, db_rows, load_model, open_inspector

    home = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(home))
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: SleepyDetector(0.0, batch_size=4))
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(corpus)))
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=60000)
    rows = db_rows(home)
    assert sorted(Path(r["frame_id"]).name for r in rows) == sorted(c.name for c in ALL_CASES)
    log_lines = window.log_lines()
    for r in rows:
        name = Path(r["frame_id"]).name
        if name in ERRORS:
            assert r["verdict"] == "error" and re.search(ERRORS[name], r["error"], re.I), r
            assert sum(name in line and r["error"] in line for line in log_lines) == 1, name
        else:
            assert r["verdict"] in ("pass", "review", "fail") and r["score"] is not None, r
    assert window.counters.text("inspected") == str(len(ALL_CASES))
    assert window.isVisible()
