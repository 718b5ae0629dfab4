"""Screenshots of the finished window (offscreen QWidget.grab): the live view with its overlay
and banner, the trend plot, and the results table. Set INSPECTOR_SHOTS_DIR to keep the PNGs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtGui import QColor

from inspector.display import VERDICT_COLORS
from inspector.sources import SourceSpec
from tests.gui_helpers import load_model, open_inspector, tiny_loader


def product_images(folder: Path, count: int = 12) -> None:
    """Grey discs on a dark tray; every fourth one has a bright scratch."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:180, :240]
    for i in range(count):
        img = np.full((180, 240, 3), 35, np.float32) + rng.normal(0, 4, (180, 240, 3))
        disc = (yy - 90) ** 2 + (xx - 120) ** 2 < 70 ** 2
        img[disc] = 150 + rng.normal(0, 6, (int(disc.sum()), 3))
        if i % 4 == 3:
            img[70:76, 90:160] = 250
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"part_{i:03d}.png")


def save(widget, folder: Path, name: str) -> np.ndarray:
    path = folder / name
    assert widget.grab().save(str(path)), f"cannot save {path}"
    target = os.environ.get("INSPECTOR_SHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return np.asarray(Image.open(path).convert("RGB"))


def test_screenshots_of_live_view_trend_and_results(qtbot, home, tmp_path):
    from inspector.app import apply_style

    apply_style(qtbot_app(qtbot))
    product_images(tmp_path / "parts")
    window, ctl = open_inspector(qtbot, home, tiny_loader())
    window.resize(1500, 940)
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "parts")), autostart=False)
    ctl.start()
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    scores = sorted(window.trend.points())
    ctl.set_thresholds((scores[-2] + scores[-3]) / 2, (scores[-5] + scores[-6]) / 2)
    ctl.reset_counters()
    ctl.start()
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    window.act_reconstruction.setChecked(True)
    ctl.replay(window.filmstrip.keys()[0])
    qtbot.wait(150)
    shots = tmp_path / "shots"
    shots.mkdir()
    live = save(window, shots, "live_view.png")
    trend = save(window.trend, shots, "trend_plot.png")
    banner = save(window.banner, shots, "banner.png")
    window.act_results_tab.trigger()
    qtbot.waitUntil(lambda: window.results_view.model.rowCount() == 24)
    results = save(window, shots, "results_table.png")

    assert live.shape[:2] == (940, 1500) and results.shape[:2] == (940, 1500)
    for image in (live, trend, results):
        assert image.std() > 20, "a screenshot is blank"
    verdict_rgb = QColor(VERDICT_COLORS[window.banner.verdict]).getRgb()[:3]
    assert np.abs(banner[banner.shape[0] // 2, 6].astype(int) - verdict_rgb).max() < 12
    assert not window.recon_view.isHidden() and window.recon_view.has_image()
    assert window.counters.text("inspected") == "12" and window.counters.text("fail") == "2"


def qtbot_app(qtbot):
    from PySide6.QtWidgets import QApplication

    return QApplication.instance()
