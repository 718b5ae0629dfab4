"""engine.imageio.write_image: PNGs are lossless (exact pixels back, RGB order kept, gray too),
JPEGs honour the quality, any file name works, and a failed write leaves neither a temp file nor
a half-written image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.imageio import read_image, write_image


def _picture(height=48, width=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2, 0] = 255   # a red half: a swapped channel order shows up
    return rgb


@pytest.mark.parametrize("name", ["part 001.png", "Ä teil (2).PNG", "部品_3.png", "x.y.z.png"])
def test_png_is_lossless_in_rgb_order_under_any_name(tmp_path, name):
    rgb = _picture()
    path = tmp_path / "archive" / name
    write_image(path, rgb)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb)
    assert np.array_equal(read_image(path), rgb)
    assert [p.name for p in path.parent.iterdir()] == [name]   # no temp file left


def test_gray_png_round_trips(tmp_path):
    gray = _picture()[:, :, 1]
    write_image(tmp_path / "mask.png", gray)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mask.png")), gray)


def test_jpeg_quality_is_used(tmp_path):
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.stack([np.tile(ramp, (48, 1)), np.tile(ramp[:48, None], (1, 64)), np.full((48, 64), 90.0)],
                   axis=-1).astype(np.uint8)
    write_image(tmp_path / "low.jpg", rgb, quality=20)
    write_image(tmp_path / "high.jpeg", rgb, quality=95)
    assert Image.open(tmp_path / "low.jpg").format == "JPEG"
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpeg").stat().st_size
    high = np.asarray(Image.open(tmp_path / "high.jpeg").convert("RGB")).astype(int)
    assert np.abs(high - rgb).mean() < 3


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "taken.png"
    target.mkdir()                     # the rename onto a folder fails
    with pytest.raises(OSError):
        write_image(target, _picture())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]
    assert target.is_dir() and not any(target.iterdir())


def test_an_image_the_encoder_cannot_take_is_an_error_not_a_file(tmp_path):
    with pytest.raises(ValueError, match="cannot write a 4x4x5 uint8 image as PNG"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4, 5), dtype=np.uint8))
    assert not any(tmp_path.iterdir())
