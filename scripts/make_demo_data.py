"""Write the offline demo dataset (MVTec AD layout) from photographs bundled with scikit-image.

Categories: brick (a brick pavement texture), coin (one ancient coin on a tray) and label (a
printed sticker on cardboard); gravel (a stone-chip texture) can be added with --categories.
Good images vary like real captures (position, small rotation, brightness/contrast, lighting,
blur, sensor noise); defective ones carry synthetic defects. A
mask is the defect's drawn core plus every pixel of its footprint that the defect changed by more
than DIFF_TOLERANCE grey levels, enclosed holes filled. Deterministic: every image has its own
seed derived from --seed, the category, the folder and its index, so two runs write
byte-identical files.

    python scripts/make_demo_data.py [--out resources/demo_data] [--seed N] [--unseen DIR]
        [--train-count N] [--test-good N] [--per-defect N] [--categories brick,coin]

--unseen DIR writes only the held-out defect kinds (burn, dent) with fresh good test images into
DIR, for checking how a model trained on the demo data generalises; it is not committed.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from tqdm import tqdm

GENERATOR = "scripts/make_demo_data.py"
GENERATOR_VERSION = "2"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "resources" / "demo_data"
DEFAULT_SEED = 2024
SIZE = 288
INNER = (16, 272)
SUPERSAMPLE = 4
DIFF_TOLERANCE = 6.0
MIN_DEFECT_PIXELS = 40
JPEG_QUALITY = 87
UNSEEN_KINDS = ("burn", "dent")
SOURCES = {"brick": "brick", "gravel": "gravel", "coin": "coins", "label": "logo"}


@dataclass
class Scene:
    """A clean rendered image before the camera model.

    image: float32 HxWx3 in 0..255; support: HxW, where defects may sit (1 on textures, the coin
    less a 2 px rim); underlay: HxWx3, what missing material reveals on textures; coverage: HxW,
    the object's alpha (1 on textures); cutout(region HxW) -> the image with that part of the
    object removed (objects only); centre/radius: the object's circle (None for textures); style:
    the category's defect colours ("scratch_bright", "scratch_dark", "crack", "stains",
    "threads"), texture "tint" amplitude and defect "size" factor.
    """

    image: np.ndarray
    support: np.ndarray
    underlay: np.ndarray
    coverage: np.ndarray
    cutout: Callable[[np.ndarray], np.ndarray] | None = None
    centre: tuple[float, float] | None = None
    radius: float | None = None
    style: dict = field(default_factory=dict)


def _seed_rng(seed: int, category: str, group: str, index: int) -> np.random.Generator:
    key = [seed, zlib.crc32(category.encode()), zlib.crc32(group.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def _gray01(name: str) -> np.ndarray:
    return getattr(skdata, name)().astype(np.float32) / 255.0


@functools.cache
def _foreign_photos() -> tuple[np.ndarray, ...]:
    """Photos that contamination patches are cut from (float32 HxWx3, 0..255)."""
    return tuple(getattr(skdata, n)().astype(np.float32) for n in ("coffee", "chelsea", "astronaut", "rocket"))


def _gradient_map(gray: np.ndarray, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """HxW in [0, 1] -> HxWx3 float32 colours interpolated between (position, RGB) stops."""
    pos = np.array([p for p, _ in stops], dtype=np.float32)
    cols = np.array([c for _, c in stops], dtype=np.float32)
    return np.stack([np.interp(gray, pos, cols[:, k]) for k in range(3)], axis=-1).astype(np.float32)


def _smooth_field(rng: np.random.Generator, cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency random field HxW with values in about +-amplitude."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) * amplitude


def _lighting(rng: np.random.Generator) -> np.ndarray:
    """Multiplicative illumination HxW: a gentle gradient and vignette (+-4%)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.0, 0.08)
    vignette = -(xx**2 + yy**2) * rng.uniform(0.02, 0.08)
    return (1.0 + grad + vignette).astype(np.float32)


def _brightness_contrast(img: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    """Contrast about mid-grey, then a brightness gain (both about 1 +- 0.05)."""
    return ((img - 128.0) * contrast + 128.0) * brightness


def _bc_factors(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(0.95, 1.05)), float(rng.uniform(0.95, 1.05))


def _camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight defocus and sensor noise, then 8-bit quantisation -> HxWx3 uint8."""
    sigma = rng.uniform(0.0, 0.7)
    if sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0.0, 1.2, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- rasterisation helpers


def _to_ss(points: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(points, dtype=np.float64) * SUPERSAMPLE).astype(np.int32)


def _downsample(canvas: np.ndarray) -> np.ndarray:
    return cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def _raster_segments(segments: list[tuple[np.ndarray, np.ndarray, float, float]]) -> np.ndarray:
    """Anti-aliased strokes: (p0, p1, width px, value) -> HxW float32 alpha (max of strokes)."""
    canvas = np.zeros((SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), dtype=np.float32)
    for p0, p1, width, value in segments:
        layer = np.zeros_like(canvas)
        thickness = max(1, int(round(width * SUPERSAMPLE)))
        cv2.line(layer, tuple(_to_ss(p0)), tuple(_to_ss(p1)), float(value), thickness, cv2.LINE_8)
        np.maximum(canvas, layer, out=canvas)
    return _downsample(canvas)


def _blob_polygon(rng: np.random.Generator, centre, radius: float, roughness: float = 0.25, n: int = 96):
    """An irregular closed outline around centre: r(theta) with a few random harmonics."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.normal(0, roughness / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.35, 1.8) * radius
    stretch = rng.uniform(0.7, 1.3)
    rot = rng.uniform(0, np.pi)
    x, y = r * np.cos(theta) * stretch, r * np.sin(theta) / stretch
    xr = x * np.cos(rot) - y * np.sin(rot)
    yr = x * np.sin(rot) + y * np.cos(rot)
    return np.stack([xr + centre[0], yr + centre[1]], axis=1)


def _raster_polygon(points: np.ndarray) -> np.ndarray:
    canvas = np.zeros((SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), dtype=np.float32)
    cv2.fillPoly(canvas, [_to_ss(points)], 1.0, cv2.LINE_8)
    return _downsample(canvas)


def _raster_ellipse(centre, axes, angle_deg: float) -> np.ndarray:
    canvas = np.zeros((SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), dtype=np.float32)
    c = tuple(_to_ss(centre))
    a = tuple(int(round(v * SUPERSAMPLE)) for v in axes)
    cv2.ellipse(canvas, c, a, angle_deg, 0, 360, 1.0, -1, cv2.LINE_8)
    return _downsample(canvas)


def _pick_centre(scene: Scene, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A defect centre inside the central crop, on the object (support > 0.95) when there is one."""
    lo, hi = INNER[0] + margin, INNER[1] - margin
    for _ in range(200):
        p = rng.uniform(lo, hi, size=2)
        if scene.centre is not None:
            limit = max(scene.radius - margin, 4.0)
            ang, dist = rng.uniform(0, 2 * np.pi), limit * np.sqrt(rng.uniform(0, 1))
            p = np.array(scene.centre) + dist * np.array([np.cos(ang), np.sin(ang)])
        if scene.support[int(p[1]), int(p[0])] > 0.95:
            return p
    raise RuntimeError("no place for a defect on this image")


# ---------------------------------------------------------------- defects
# Each takes (scene, rng) and returns (defective clean image, footprint HxW in [0, 1]).


def _random_walk(rng, start, angle, steps, step_len, wobble):
    pts = [np.asarray(start, dtype=np.float64)]
    for _ in range(steps):
        angle += rng.normal(0, wobble)
        pts.append(pts[-1] + step_len * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(pts), angle


def _steps_inside(points: np.ndarray, margin: float = 4.0) -> int:
    """Length of the leading run of points that stay inside the central crop."""
    ok = np.all((points >= INNER[0] + margin) & (points < INNER[1] - margin), axis=1)
    return len(ok) if ok.all() else int(np.argmin(ok))


def defect_scratch(scene: Scene, rng: np.random.Generator):
    """A thin curved scrape, bright (exposed material) or dark, fading at both ends."""
    k = scene.style.get("size", 1.0)
    length = rng.uniform(60, 150) * k if scene.centre is None else rng.uniform(50, 1.4 * scene.radius)
    centre = _pick_centre(scene, rng, margin=min(length / 2.5, 50))
    angle = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.6, 0.6)
    t = np.linspace(-0.5, 0.5, 48)
    d = np.array([np.cos(angle), np.sin(angle)])
    nrm = np.array([-d[1], d[0]])
    pts = centre + np.outer(t * length, d) + np.outer(bend * length * (0.25 - t**2), nrm)
    width = rng.uniform(1.0, 2.2) * np.sqrt(k)
    profile = np.sin(np.linspace(0.15, np.pi - 0.15, len(pts) - 1)) ** 0.5
    segs = [(pts[i], pts[i + 1], width * (0.6 + 0.4 * profile[i]), profile[i]) for i in range(len(pts) - 1)]
    alpha = _raster_segments(segs) * scene.support
    bright = rng.uniform() < 0.7
    target = np.array(scene.style.get("scratch_bright" if bright else "scratch_dark"), dtype=np.float32)
    strength = rng.uniform(0.75, 0.95)
    a = (alpha * strength)[..., None]
    return scene.image * (1 - a) + target * a, alpha


def defect_crack(scene: Scene, rng: np.random.Generator):
    """A dark jagged crack with a few tapering branches."""
    centre = _pick_centre(scene, rng, margin=40)
    angle = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(14, 26) * scene.style.get("size", 1.0))
    half_a, _ = _random_walk(rng, centre, angle, steps // 2, rng.uniform(3.0, 5.0), 0.45)
    half_b, _ = _random_walk(rng, centre, angle + np.pi, steps - steps // 2, rng.uniform(3.0, 5.0), 0.45)
    main = np.concatenate([half_b[::-1], half_a[1:]])
    width = rng.uniform(1.6, 2.8)
    segs = []
    n = len(main) - 1
    for i in range(n):
        taper = 0.45 + 0.55 * np.sin(np.pi * (i + 0.5) / n)
        segs.append((main[i], main[i + 1], width * taper, 1.0))
    for _ in range(int(rng.integers(1, 4))):
        j = int(rng.integers(2, n - 2))
        seg_dir = main[j + 1] - main[j]
        base = np.arctan2(seg_dir[1], seg_dir[0]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch, _ = _random_walk(rng, main[j], base, int(rng.integers(4, 9)), rng.uniform(2.5, 4.0), 0.5)
        for k in range(len(branch) - 1):
            segs.append((branch[k], branch[k + 1], width * 0.6 * (1 - k / len(branch)) + 0.6, 0.9))
    alpha = _raster_segments(segs) * scene.support
    dark = np.array(scene.style["crack"], dtype=np.float32)
    a = (alpha * 0.9)[..., None]
    return scene.image * (1 - a) + dark * a, alpha


def defect_stain(scene: Scene, rng: np.random.Generator):
    """A soft-edged blotch (oil, rust or residue) with a slightly darker rim."""
    radius = (rng.uniform(12, 30) if scene.centre is None else rng.uniform(10, 24)) * scene.style.get("size", 1.0)
    centre = _pick_centre(scene, rng, margin=radius * 1.2)
    shape = _raster_polygon(_blob_polygon(rng, centre, radius, roughness=0.3))
    soft = cv2.GaussianBlur(shape, (0, 0), rng.uniform(2.0, 4.0))
    rim = np.clip(soft * (1 - soft) * 4, 0, 1) * rng.uniform(0.1, 0.35)
    alpha = np.clip(soft * rng.uniform(0.55, 0.85) + rim, 0, 1) * scene.support
    colours = scene.style["stains"]
    colour = np.array(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    tinted = scene.image * (colour / 255.0) * 1.15
    a = alpha[..., None]
    return scene.image * (1 - a) + tinted * a, alpha


def defect_hole(scene: Scene, rng: np.random.Generator):
    """A pit: a dark ellipse shaded like a lit inner wall, with a bright lip on the lit side."""
    k = scene.style.get("size", 1.0)
    axes = (rng.uniform(6, 14) * k, rng.uniform(5, 11) * k)
    centre = _pick_centre(scene, rng, margin=max(axes) + 6)
    angle = rng.uniform(0, 180)
    inside = _raster_ellipse(centre, axes, angle)
    lip = np.clip(_raster_ellipse(centre, (axes[0] + 2.5, axes[1] + 2.5), angle) - inside, 0, 1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    light = np.array([-0.7, -0.7])
    rel = ((xx - centre[0]) * light[0] + (yy - centre[1]) * light[1]) / max(axes)
    wall = np.clip(0.12 + 0.3 * np.clip(-rel, 0, 1.2), 0.08, 0.5)
    lip_gain = 1.0 + 0.35 * np.clip(rel, 0, 1.5)
    img = scene.image * (1 - inside[..., None]) + scene.image * (wall * inside)[..., None]
    img = img * (1 - lip[..., None]) + np.minimum(img * lip_gain[..., None], 255) * lip[..., None]
    footprint = np.clip(inside + lip, 0, 1) * scene.support
    return scene.image + (img - scene.image) * scene.support[..., None], footprint


def defect_missing(scene: Scene, rng: np.random.Generator):
    """Missing material: an irregular region showing what lies underneath, shaded at its edge."""
    radius = rng.uniform(12, 26) * scene.style.get("size", 1.0)
    if scene.centre is not None:
        ang = rng.uniform(0, 2 * np.pi)
        centre = np.array(scene.centre) + (scene.radius + radius * 0.1) * np.array([np.cos(ang), np.sin(ang)])
        radius *= 1.4
    else:
        centre = _pick_centre(scene, rng, margin=radius * 1.3)
    region = _raster_polygon(_blob_polygon(rng, centre, radius, roughness=0.22))
    if scene.cutout is not None:
        near = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
        return scene.cutout(region), np.maximum(region * scene.coverage, 0.3 * near)
    edge = region - cv2.erode(region, np.ones((3, 3), np.uint8), iterations=2)
    under = scene.underlay * (1.0 - 0.35 * np.clip(edge, 0, 1))[..., None]
    a = region[..., None]
    return scene.image * (1 - a) + under * a, region


def defect_contamination(scene: Scene, rng: np.random.Generator):
    """Foreign matter: a rotated patch of another photograph pasted with an irregular outline."""
    radius = rng.uniform(10, 22) * scene.style.get("size", 1.0)
    centre = _pick_centre(scene, rng, margin=radius * 1.3)
    region = _raster_polygon(_blob_polygon(rng, centre, radius, roughness=0.35))
    inside = region > 0.5
    local = scene.image[inside].mean(axis=0)
    photos = _foreign_photos()
    for _ in range(50):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        src = (rng.uniform(60, w - 60), rng.uniform(60, h - 60))
        m = cv2.getRotationMatrix2D(src, rng.uniform(0, 360), rng.uniform(0.8, 1.3))
        m[:, 2] += np.array(centre) - np.array(src)
        patch = cv2.warpAffine(photo, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        pixels = patch[inside]
        if 50 < pixels.mean() < 210 and pixels.std() > 12 and np.abs(pixels.mean(axis=0) - local).max() > 35:
            break
    a = region[..., None]
    return scene.image * (1 - a) + patch * a, region


def defect_thread(scene: Scene, rng: np.random.Generator):
    """Contamination by a fibre: a long, thin, wavy coloured thread lying on the surface."""
    centre = _pick_centre(scene, rng, margin=30)
    angle = rng.uniform(0, 2 * np.pi)
    halves = [_random_walk(rng, centre, angle + turn, int(rng.integers(12, 22)), 4.0, 0.18)[0] for turn in (0, np.pi)]
    halves = [h[: _steps_inside(h)] for h in halves]
    pts = np.concatenate([halves[1][::-1], halves[0][1:]])
    width = rng.uniform(1.4, 2.4)
    alpha = _raster_segments([(pts[i], pts[i + 1], width, 1.0) for i in range(len(pts) - 1)]) * scene.support
    colours = scene.style.get("threads", [(40, 60, 170), (180, 30, 30), (40, 140, 60), (235, 235, 225)])
    colour = np.array(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    a = (alpha * 0.95)[..., None]
    return scene.image * (1 - a) + colour * a, alpha


def defect_burn(scene: Scene, rng: np.random.Generator):
    """Unseen kind: a scorch mark, black in the middle fading through brown to nothing."""
    radius = rng.uniform(14, 28) * scene.style.get("size", 1.0)
    centre = _pick_centre(scene, rng, margin=radius * 1.3)
    shape = _raster_polygon(_blob_polygon(rng, centre, radius, roughness=0.3))
    heat = cv2.GaussianBlur(shape, (0, 0), radius * 0.35)
    heat = np.clip(heat / max(heat.max(), 1e-6), 0, 1) * scene.support
    brown = np.array([95, 55, 25], dtype=np.float32)
    black = np.array([18, 12, 8], dtype=np.float32)
    char = brown + (black - brown) * np.clip(heat * 1.6 - 0.4, 0, 1)[..., None]
    a = np.clip(heat * 1.3, 0, 0.95)[..., None]
    return scene.image * (1 - a) + (scene.image * 0.3 + char * 0.7) * a, heat


def defect_dent(scene: Scene, rng: np.random.Generator):
    """Unseen kind: a dent, a local radial warp of the surface with the shading it casts."""
    sigma = rng.uniform(9, 16) * scene.style.get("size", 1.0)
    centre = _pick_centre(scene, rng, margin=sigma * 2.5)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    g = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)).astype(np.float32) * scene.support
    push = rng.uniform(0.35, 0.6)
    map_x = (xx + dx * g * push).astype(np.float32)
    map_y = (yy + dy * g * push).astype(np.float32)
    warped = cv2.remap(scene.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light = np.array([-0.7, -0.7])
    slope = (dx * light[0] + dy * light[1]) / sigma * g
    shade = 1.0 + 0.45 * slope
    img = warped * shade[..., None]
    reach = (g > np.exp(-(2.5**2) / 2)).astype(np.float32)
    return scene.image + (img - scene.image) * reach[..., None], np.maximum(g, 0.3 * reach)


DEFECTS: dict[str, Callable] = {
    "scratch": defect_scratch,
    "crack": defect_crack,
    "stain": defect_stain,
    "hole": defect_hole,
    "missing": defect_missing,
    "contamination": defect_contamination,
    "thread": defect_thread,
    "burn": defect_burn,
    "dent": defect_dent,
}


# ---------------------------------------------------------------- categories


class TextureCategory:
    """A texture photo seen through a randomly placed, slightly rotated window, colourised."""

    def __init__(self, source: str, scale: float, stops, underlay, style: dict, kinds: tuple[str, ...]):
        self.source, self.scale, self.stops, self.underlay_rgb = source, scale, stops, underlay
        self.style, self.kinds = style, kinds

    @functools.cached_property
    def gray(self) -> np.ndarray:
        return _gray01(self.source)

    def render(self, rng: np.random.Generator) -> Scene:
        src = self.gray
        h, w = src.shape
        scale = self.scale * rng.uniform(0.97, 1.03)
        angle = rng.uniform(-3.0, 3.0)
        reach = SIZE / 2 * np.sqrt(2) / scale + 2
        cx, cy = rng.uniform(reach, w - reach), rng.uniform(reach, h - reach)
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[:, 2] += np.array([SIZE / 2 - cx, SIZE / 2 - cy])
        gray = cv2.warpAffine(src, m, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        img = _gradient_map(np.clip(gray, 0, 1), self.stops)
        tint = 1.0 + np.stack([_smooth_field(rng, 4, self.style.get("tint", 0.03)) for _ in range(3)], axis=-1)
        img = _brightness_contrast(img * tint, *_bc_factors(rng)) * _lighting(rng)[..., None]
        grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, size=(SIZE, SIZE)).astype(np.float32), (0, 0), 0.8)
        relief = 1 + _smooth_field(rng, 12, 0.12) + 0.3 * grain
        under = np.array(self.underlay_rgb, dtype=np.float32) * relief[..., None]
        ones = np.ones((SIZE, SIZE), np.float32)
        return Scene(img.astype(np.float32), ones, under, ones, style=self.style)


class CoinCategory:
    """One coin from skimage.data.coins(), upscaled and colourised, on a plain tray."""

    source_centre = (347, 186)
    source_half = 36
    upscale = 3.0
    max_rotation = 10.0
    shadow = (0.55, 3.0, 5.0, 5.0)  # strength, x and y offset (px), blur sigma

    def __init__(self, stops, tray_rgb, style: dict, kinds: tuple[str, ...]):
        self.stops, self.tray_rgb, self.style, self.kinds = stops, tray_rgb, style, kinds

    @functools.cached_property
    def sprite(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(colour HxWx3, alpha HxW, radius) of the coin, centred in its square."""
        coins = _gray01("coins")
        cx, cy = self.source_centre
        r = self.source_half
        crop = coins[cy - r : cy + r, cx - r : cx + r]
        _, labels = cv2.connectedComponents((crop > 0.42).astype(np.uint8))
        coin = (labels == labels[r, r]).astype(np.uint8)
        coin = cv2.morphologyEx(coin, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        coin = cv2.morphologyEx(coin, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
        contours, _ = cv2.findContours(coin, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros_like(coin)
        cv2.drawContours(filled, contours, -1, 1, -1)
        side = int(round(2 * r * self.upscale))
        big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        sharp = np.clip(big + 0.6 * (big - cv2.GaussianBlur(big, (0, 0), 2.0)), 0, 1)
        alpha = cv2.resize(filled.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 2.0)
        alpha = np.clip((alpha - 0.5) * 3.0 + 0.5, 0, 1)
        alpha = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        radius = float(np.sqrt(alpha.sum() / np.pi))
        ys, xs = np.nonzero(alpha > 0.5)
        shift = np.array([side / 2 - xs.mean(), side / 2 - ys.mean()], dtype=np.float32)
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        colour = _gradient_map(cv2.warpAffine(sharp, m, (side, side), borderMode=cv2.BORDER_REPLICATE), self.stops)
        alpha = cv2.warpAffine(alpha, m, (side, side))
        return colour, alpha, radius

    def render(self, rng: np.random.Generator) -> Scene:
        colour, alpha, radius = self.sprite
        side = alpha.shape[0]
        centre = np.array([SIZE / 2, SIZE / 2]) + rng.uniform(-8, 8, size=2)
        scale = rng.uniform(0.98, 1.02)
        m = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-self.max_rotation, self.max_rotation), scale)
        m[:, 2] += centre - side / 2
        coin = cv2.warpAffine(colour, m, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(alpha, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        tray = np.array(self.tray_rgb, dtype=np.float32) * (1 + _smooth_field(rng, 5, 0.04))[..., None]
        tray = tray * _lighting(rng)[..., None]
        bc = _bc_factors(rng)
        strength, dx, dy, blur = self.shadow
        shadow_shift = np.float32([[1, 0, dx], [0, 1, dy]])

        def compose(cut: np.ndarray | None = None) -> np.ndarray:
            alpha_now = a if cut is None else a * (1 - cut)
            shadow = cv2.GaussianBlur(cv2.warpAffine(alpha_now, shadow_shift, (SIZE, SIZE)), (0, 0), blur)
            under = tray * (1 - strength * shadow)[..., None]
            img = under * (1 - alpha_now[..., None]) + coin * alpha_now[..., None]
            return _brightness_contrast(img, *bc).astype(np.float32)

        support = np.clip((a - 0.5) * 2, 0, 1).astype(np.float32)
        support = cv2.erode(support, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        return Scene(compose(), support, tray, a, compose, tuple(centre), radius * scale, self.style)


class LabelCategory(CoinCategory):
    """A round printed sticker (the scikit-image logo) on kraft cardboard: print inspection."""

    side = 216
    max_rotation = 8.0
    shadow = (0.12, 1.0, 1.5, 1.5)

    def __init__(self, paper_rgb, tray_rgb, style: dict, kinds: tuple[str, ...]):
        super().__init__(stops=None, tray_rgb=tray_rgb, style=style, kinds=kinds)
        self.paper_rgb = paper_rgb

    @functools.cached_property
    def sprite(self) -> tuple[np.ndarray, np.ndarray, float]:
        logo = skdata.logo().astype(np.float32)
        big = cv2.resize(logo, (self.side, self.side), interpolation=cv2.INTER_AREA)
        alpha = np.clip((big[..., 3] / 255.0 - 0.5) * 3.0 + 0.5, 0, 1)
        alpha = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
        # printed ink on paper: a little of the paper shows through every colour
        colour = 0.9 * big[..., :3] + 0.1 * np.array(self.paper_rgb, dtype=np.float32)
        # the printed disc inscribed in the square sticker: where defects are placed
        return colour.astype(np.float32), alpha.astype(np.float32), self.side / 2


CATEGORIES = {
    "brick": TextureCategory(
        "brick",
        scale=1.2,
        stops=[(0.0, (20, 10, 8)), (0.3, (88, 36, 26)), (0.39, (152, 66, 46)), (0.46, (178, 92, 66)),
               (0.58, (170, 150, 132)), (0.75, (210, 202, 188)), (1.0, (240, 236, 228))],
        underlay=(128, 124, 118),
        style={"scratch_bright": (226, 205, 186), "scratch_dark": (45, 28, 24), "crack": (22, 14, 12),
               "stains": [(70, 60, 52), (235, 235, 228), (60, 95, 55)], "tint": 0.04},
        kinds=("crack", "hole", "stain", "missing", "contamination"),
    ),
    "gravel": TextureCategory(
        "gravel",
        scale=1.45,
        stops=[(0.0, (10, 9, 8)), (0.3, (58, 52, 46)), (0.5, (124, 116, 104)), (0.65, (178, 170, 156)),
               (1.0, (245, 242, 232))],
        underlay=(72, 56, 42),
        style={"scratch_bright": (245, 244, 238), "scratch_dark": (20, 18, 16), "crack": (15, 13, 12),
               "stains": [(70, 52, 40), (150, 80, 40), (60, 90, 120)], "tint": 0.012, "size": 1.4},
        kinds=("thread", "stain", "hole", "missing", "contamination"),
    ),
    "coin": CoinCategory(
        stops=[(0.0, (26, 24, 22)), (0.3, (80, 74, 66)), (0.6, (168, 160, 146)), (0.85, (226, 220, 204)),
               (1.0, (250, 246, 236))],
        tray_rgb=(58, 78, 88),
        style={"scratch_bright": (250, 248, 240), "scratch_dark": (40, 36, 32), "crack": (20, 18, 16),
               "stains": [(95, 150, 110), (150, 95, 55), (70, 62, 55)]},
        kinds=("scratch", "stain", "hole", "missing", "contamination"),
    ),
    "label": LabelCategory(
        paper_rgb=(246, 242, 232),
        tray_rgb=(172, 136, 96),
        style={"scratch_bright": (248, 246, 240), "scratch_dark": (48, 42, 36), "crack": (30, 26, 22),
               "stains": [(120, 80, 45), (95, 95, 72), (70, 90, 160)]},
        kinds=("scratch", "stain", "hole", "missing", "contamination"),
    ),
}
# what the bundled demo data holds; gravel stays available (--categories) as a harder texture
DEFAULT_CATEGORIES = ("brick", "coin", "label")


# ---------------------------------------------------------------- writing


def good_image(category: str, rng: np.random.Generator) -> np.ndarray:
    """One good image HxWx3 uint8."""
    return _camera(CATEGORIES[category].render(rng).image, rng)


def defective_image(category: str, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, mask HxW uint8 0/255). The mask is the defect's core (footprint >= 0.5)
    plus every pixel of its footprint that changed by more than DIFF_TOLERANCE grey levels in the
    clean render (before the camera blur and noise), with enclosed holes filled."""
    spec = CATEGORIES[category]
    for _ in range(20):
        scene = spec.render(rng)
        img, footprint = DEFECTS[kind](scene, rng)
        changed = np.abs(img - scene.image).max(axis=-1) > DIFF_TOLERANCE
        mask = ndimage.binary_fill_holes((changed & (footprint > 0.02)) | (footprint >= 0.5))
        if mask.sum() >= MIN_DEFECT_PIXELS:
            return _camera(img.astype(np.float32), rng), mask.astype(np.uint8) * 255
    raise RuntimeError(f"{category}/{kind}: could not place a visible defect")


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)


def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask).save(path, "PNG", optimize=True)


def plan(categories, train_count, test_good, per_defect, unseen: bool) -> list[tuple]:
    """[(category, folder, kind, index)] for every file to write; kind 'good' or a defect kind."""
    jobs = []
    for cat in categories:
        if unseen:
            groups = [("test", "good", test_good)] + [("test", k, per_defect) for k in UNSEEN_KINDS]
        else:
            groups = [("train", "good", train_count), ("test", "good", test_good)]
            groups += [("test", k, per_defect) for k in CATEGORIES[cat].kinds]
        for split, kind, count in groups:
            jobs += [(cat, split, kind, i) for i in range(count)]
    return jobs


def write_job(out: Path, seed: int, job: tuple, unseen: bool) -> None:
    cat, split, kind, index = job
    group = f"{'unseen/' if unseen else ''}{split}/{kind}"
    rng = _seed_rng(seed, cat, group, index)
    folder = out / cat / split / kind
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{index:03d}"
    if kind == "good":
        _save_jpeg(folder / f"{name}.jpg", good_image(cat, rng))
        return
    img, mask = defective_image(cat, kind, rng)
    _save_jpeg(folder / f"{name}.jpg", img)
    gt = out / cat / "ground_truth" / kind
    gt.mkdir(parents=True, exist_ok=True)
    _save_mask(gt / f"{name}_mask.png", mask)


def manifest(categories, seed, train_count, test_good, per_defect, unseen: bool) -> dict:
    cats = {}
    for cat in categories:
        kinds = UNSEEN_KINDS if unseen else CATEGORIES[cat].kinds
        cats[cat] = {
            "train_good": 0 if unseen else train_count,
            "test_good": test_good,
            "defects": {k: per_defect for k in kinds},
        }
    return {
        "name": "DeCo Inspector demo data" + (" (unseen defect kinds)" if unseen else ""),
        "layout": "mvtec",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": [SIZE, SIZE],
        "image_format": f"JPEG quality {JPEG_QUALITY}",
        "mask_format": "PNG, 0 background / 255 defect",
        "categories": cats,
        "unseen_kinds": list(UNSEEN_KINDS),
        "sources": "scikit-image data: " + ", ".join(SOURCES[c] for c in categories)
        + " (textures/objects); coffee, chelsea, astronaut, rocket (contamination patches)",
    }


README = """# Demo data

A small offline dataset for trying DeCo Inspector without downloading anything, in MVTec AD layout:
`<category>/train/good`, `<category>/test/<defect>`, `<category>/ground_truth/<defect>/<name>_mask.png`.

| category | product | defect kinds |
|---|---|---|
{rows}

Images are 288x288 RGB JPEG (quality {quality}); masks are PNG, 0 = background, 255 = defect.
Defects lie inside the central 256x256 square that the model sees. Good images vary the way real
captures do (position, small rotation, +-5% brightness/contrast, lighting, slight blur and sensor
noise). Defects are synthetic; a mask is the defect's drawn core plus every pixel of its footprint
that it changed by more than {tol:g} grey levels (measured before the camera blur and noise), with
enclosed holes filled. Counts per category and the seed are in `manifest.json`.

## Sources and licence

Built only from images bundled with scikit-image (`skimage.data`), whose notes state:
`brick` and `gravel` come from CC0Textures under CC0; `coins` (Brooklyn Museum collection) has no
known copyright restrictions; the contamination patches are cut from `coffee` (CC0, Rachel
Michetti), `chelsea` (CC0, Stefan van der Walt), `astronaut` (NASA, public domain) and `rocket`
(SpaceX, public domain). The `label` sticker prints the scikit-image logo (`logo`, (c) the
scikit-image team, BSD-3-Clause, as scikit-image itself). The rest of this derived data set is
released under CC0.

## Regenerating

    python scripts/make_demo_data.py --out resources/demo_data --seed {seed}

The output is deterministic: the same seed and counts give byte-identical files. Held-out defect
kinds ({unseen}) for checking generalisation are written with `--unseen DIR` (not committed).
"""


def write_readme(out: Path, categories, seed: int) -> None:
    products = {
        "brick": "brick pavement (texture)",
        "gravel": "stone chips (texture)",
        "coin": "coin on a tray (object)",
        "label": "printed round sticker on cardboard (object)",
    }
    rows = "\n".join(f"| {c} | {products.get(c, c)} | {', '.join(CATEGORIES[c].kinds)} |" for c in categories)
    text = README.format(rows=rows, quality=JPEG_QUALITY, tol=DIFF_TOLERANCE, seed=seed, unseen=", ".join(UNSEEN_KINDS))
    (out / "README.md").write_text(text, encoding="utf-8")


def _prepare_out(out: Path, categories) -> None:
    """Remove earlier output of these categories; refuse a non-empty folder this script did not write."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    ours = manifest_path.is_file() and GENERATOR in manifest_path.read_text(encoding="utf-8")
    if not ours and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no demo-data manifest.json; choose a new or empty folder")
    for cat in categories:
        if (out / cat).exists():
            shutil.rmtree(out / cat)


def generate(
    out: Path,
    categories=DEFAULT_CATEGORIES,
    seed: int = DEFAULT_SEED,
    train_count: int = 60,
    test_good: int = 20,
    per_defect: int = 7,
    unseen: bool = False,
    progress: bool = True,
) -> dict:
    """Write the dataset (or the unseen kinds) into out; returns the manifest written."""
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from {list(CATEGORIES)}")
    out = Path(out)
    _prepare_out(out, categories)
    jobs = plan(categories, train_count, test_good, per_defect, unseen)
    for job in tqdm(jobs, desc=f"writing {out}", unit="img", disable=not progress):
        write_job(out, seed, job, unseen)
    info = manifest(categories, seed, train_count, test_good, per_defect, unseen)
    (out / "manifest.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if not unseen:
        write_readme(out, categories, seed)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default resources/demo_data)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--unseen", type=Path, default=None, metavar="DIR",
                   help=f"write only the held-out kinds {UNSEEN_KINDS} (+ good test images) into DIR")
    p.add_argument("--train-count", type=int, default=60, help="train/good images per category")
    p.add_argument("--test-good", type=int, default=20, help="test/good images per category")
    p.add_argument("--per-defect", type=int, default=7, help="test images per defect kind")
    p.add_argument("--categories", default=",".join(DEFAULT_CATEGORIES),
                   help=f"comma-separated, from {', '.join(CATEGORIES)}")
    args = p.parse_args(argv)
    cats = [c.strip() for c in args.categories.split(",") if c.strip()]
    for name in ("train_count", "test_good", "per_defect"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    try:
        if args.unseen is not None:
            generate(args.unseen, cats, args.seed, 0, args.test_good, args.per_defect, unseen=True)
        else:
            generate(args.out, cats, args.seed, args.train_count, args.test_good, args.per_defect)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
