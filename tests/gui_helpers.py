"""Shared pieces for the inspector tests: a tiny real detector, a deliberately slow fake one,
a scriptable fake camera with the cv2.VideoCapture interface, and generated images."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from engine.runtime import AnomalyResult, ModelInfo  # imported once here: the engine import takes seconds

TINY_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 64,
}


def make_tiny_detector(ncls: int = 3, **settings):
    """A randomly initialised DeCo-Diff detector with 72 -> 64 px preprocessing (fast on CPU)."""
    import torch

    from engine.detector import Detector, DetectorSettings
    from engine.preprocess import PreprocessConfig
    from engine.unet import GatedUNet, UNetConfig
    from engine.vae import create_vae

    torch.manual_seed(0)
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=ncls, latent_size=8))
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    names = [f"part{i}" for i in range(ncls)]
    pre = PreprocessConfig(image_size=72, center_size=64, resize_filter="bicubic")
    return Detector(unet, create_vae(TINY_VAE), names, pre, settings=DetectorSettings(**settings), device="cpu",
                    model_id="tiny-test", source="tiny")


def tiny_loader(**settings):
    """A loader for create_inspector: every path gives a fresh tiny detector."""
    def load(path, **overrides):
        det = make_tiny_detector(**settings)
        if overrides:
            det.with_settings(**{k: v for k, v in overrides.items() if k in det.settings.__dataclass_fields__})
        det.source = str(path)
        return det
    return load


@dataclass
class _Settings:
    threshold: float = 0.5
    start_t: int = 5
    reverse_steps: int = 5
    gate_fusion: bool = False
    batch_size: int = 4
    precision: str = "fp32"


class SleepyDetector:
    """Duck-typed Detector that takes `delay` seconds per call and scores a frame by its mean
    brightness (so tests control verdicts through pixel values)."""

    def __init__(self, delay: float = 0.2, batch_size: int = 4, threshold: float = 0.5):
        self.delay = delay
        self.settings = _Settings(threshold=threshold, batch_size=batch_size)
        self.class_names = ["widget"]
        self.model_id = "sleepy-fake"
        self.source = "fake"
        self.on_notice = None
        self.prefers_lanes = False
        self.calls = 0

    def lane_count(self, batch: int) -> int:
        return 1

    def with_settings(self, **changes):
        self.settings = replace(self.settings, **changes)
        return self

    def describe(self) -> ModelInfo:
        return ModelInfo(model_id=self.model_id, source="fake", size="fake", ncls=1, gating=False,
                         classes=self.class_names, device="CPU", unet_parameters=0, vae="",
                         classifier=False, preprocess={})

    def predict(self, frames, category=None, channel_order="rgb"):
        self.calls += 1
        time.sleep(self.delay)
        out = []
        for f in frames:
            score = float(np.asarray(f, np.float32).mean() / 255.0)
            amap = np.full(f.shape[:2], score, np.float32)
            out.append(AnomalyResult(
                score=score, is_anomalous=score > self.settings.threshold, threshold=self.settings.threshold,
                anomaly_map=amap, crop_map=np.full((8, 8), score, np.float32), category="widget", category_id=0,
                category_confidence=None, category_source="single", reconstruction=np.zeros((8, 8, 3), np.uint8),
                crop=np.zeros((8, 8, 3), np.uint8), timings={"unet": self.delay * 1000.0 / len(frames)}))
        return out


class FakeCapture:
    """cv2.VideoCapture look-alike driven by a shared `FakeCamera` script."""

    def __init__(self, camera: "FakeCamera", target):
        self.camera = camera
        self.opened = camera.plugged
        camera.opens += 1

    def isOpened(self) -> bool:
        return self.opened and self.camera.plugged

    def set(self, prop, value) -> bool:
        return True

    def get(self, prop) -> float:
        return float(self.camera.fps)

    def read(self):
        return self.camera.read(self)

    def release(self) -> None:
        self.opened = False


class FakeCamera:
    """A camera at `fps` whose behaviour tests change on the fly: `stall(seconds)` makes the next
    read hang then fail, `unplug()` / `plug()` simulate the cable, `empty = True` gives empty frames."""

    def __init__(self, fps: float = 30.0, size=(120, 160), brightness: int = 60):
        self.fps = fps
        self.size = size
        self.brightness = brightness
        self.plugged = True
        self.empty = False
        self.opens = 0
        self.frames = 0
        self._stall = 0.0
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def factory(self, target):
        return FakeCapture(self, target)

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._stall = seconds

    def unplug(self) -> None:
        self.plugged = False

    def plug(self) -> None:
        self.plugged = True

    def read(self, cap: FakeCapture):
        with self._lock:
            stall, self._stall = self._stall, 0.0
        if stall:
            time.sleep(stall)
            return False, None
        if not cap.isOpened():
            time.sleep(0.01)
            return False, None
        now = time.monotonic()
        self._next = max(self._next + 1.0 / self.fps, now)
        time.sleep(max(0.0, self._next - now))
        if self.empty:
            return True, np.zeros((0, 0, 3), np.uint8)
        self.frames += 1
        h, w = self.size
        img = np.full((h, w, 3), self.brightness, np.uint8)
        img[:, (self.frames * 3) % w] = 255
        return True, img


def write_images(folder: Path, count: int, size=(96, 128), seed: int = 0, bright: set[int] = frozenset()) -> list[Path]:
    """`count` PNGs named img_000.png...; indexes in `bright` are light (high fake scores)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        base = 200 if i in bright else 40
        img = np.clip(rng.normal(base, 10, (*size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def open_inspector(qtbot, home: Path, loader, capture_factory=None, show: bool = True):
    """A MainWindow + controller on `home` (results log, settings, recipes), closed by qtbot at the end."""
    from inspector.app import app_settings, create_inspector

    window, controller = create_inspector(loader=loader, capture_factory=capture_factory, data_dir=home,
                                          settings=app_settings(home))
    qtbot.addWidget(window)
    if show:
        window.show()
    return window, controller


def load_model(qtbot, controller, path: str = "test-model", timeout_ms: int = 30000):
    """Open `path` and wait for it: the controller's LoadedModel."""
    controller.open_model(path)
    qtbot.waitUntil(lambda: controller.model_info is not None and not controller.model_loading, timeout=timeout_ms)
    return controller.model_info


def db_rows(home: Path) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(home / "results.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM parts ORDER BY id")]
    finally:
        conn.close()
