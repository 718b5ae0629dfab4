"""Operator controls: keyboard shortcuts, step, watch folder, camera picker, busy indicator,
results filters and CSV export."""

from __future__ import annotations

import csv
import threading
import time

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from inspector.dialogs import CameraPickerDialog
from inspector.reader import PAUSED, PLAYING
from inspector.sources import SourceSpec
from tests.gui_helpers import FakeCamera, SleepyDetector, db_rows, load_model, open_inspector, write_images


def fast_loader(path, **overrides):
    return SleepyDetector(0.0)


def test_space_step_and_escape(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 5)
    window, ctl = open_inspector(qtbot, home, fast_loader)
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
    window.activateWindow()
    window.live_view.setFocus()
    assert ctl.reader.state == PAUSED
    QTest.keyClick(window, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: len(db_rows(home)) == 1)
    QTest.keyClick(window, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: len(db_rows(home)) == 2)
    qtbot.wait(100)
    assert len(db_rows(home)) == 2 and ctl.reader.state == PAUSED
    QTest.keyClick(window, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: ctl.run_reported)
    assert len(db_rows(home)) == 5
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
    QTest.keyClick(window, Qt.Key.Key_Space)
    assert ctl.reader.state == PLAYING
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert ctl.reader is None and window.controls.run_button.text() == "Start"


def test_watch_folder_inspects_files_as_they_arrive(qtbot, home, tmp_path):
    write_images(tmp_path / "line", 1)
    window, ctl = open_inspector(qtbot, home, fast_loader)
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "line"), watch=True))
    qtbot.waitUntil(lambda: len(db_rows(home)) == 1, timeout=5000)
    write_images(tmp_path / "incoming", 3, seed=5)
    for p in sorted((tmp_path / "incoming").iterdir()):
        p.rename(tmp_path / "line" / f"new_{p.name}")
    qtbot.waitUntil(lambda: len(db_rows(home)) == 4, timeout=10000)
    assert [r["frame_id"].rsplit("/", 1)[-1] for r in db_rows(home)][1:] == [
        "new_img_000.png", "new_img_001.png", "new_img_002.png"]
    assert ctl.reader.state == PLAYING and not ctl.run_reported  # a watch never ends by itself
    assert "watch" in window.controls.source_label.text()
    ctl.stop()


def test_camera_picker_lists_cameras_with_modes(qtbot):
    cams = {0: FakeCamera(fps=1000), 1: FakeCamera(fps=1000, size=(48, 64))}
    dead = FakeCamera()
    dead.unplug()
    dialog = CameraPickerDialog(max_index=3, capture_factory=lambda i: (cams.get(i) or dead).factory(i))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.cameras.count() == 2, timeout=5000)
    assert "Camera 1: 64x48" in dialog.cameras.item(1).text()
    dialog.cameras.itemClicked.emit(dialog.cameras.item(1))
    dialog.resolution.setCurrentIndex(2)
    dialog.fps.setValue(15)
    assert dialog.spec() == SourceSpec("camera", "1", width=1280, height=720, fps=15.0)


def test_busy_indicator_while_the_model_loads(qtbot, home):
    release = threading.Event()

    def slow_loader(path, **overrides):
        release.wait(5)
        return SleepyDetector(0.0)

    window, ctl = open_inspector(qtbot, home, slow_loader)
    ctl.open_model("slow-model")
    qtbot.waitUntil(lambda: window.busy_bar.isVisibleTo(window), timeout=3000)
    assert "Loading model slow-model" in window.busy_label.text()
    started = time.monotonic()
    window.controls.opacity_slider.setValue(20)  # the GUI thread stays responsive meanwhile
    assert time.monotonic() - started < 0.5
    release.set()
    qtbot.waitUntil(lambda: ctl.model_info is not None, timeout=5000)
    qtbot.waitUntil(lambda: not window.busy_bar.isVisibleTo(window), timeout=3000)
    assert window.device_status.text() == "device CPU"


def test_results_filters_and_csv_export(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 6, bright={1, 4})
    window, ctl = open_inspector(qtbot, home, fast_loader)
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.5, 0.4)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported)
    window.act_results_tab.trigger()
    view = window.results_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 6)
    view.search.setText("img_004")
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=3000)
    assert view.model.rows[0]["verdict"] == "fail"
    view.search.clear()
    view.verdict_combo.setCurrentIndex(view.verdict_combo.findData("pass"))
    qtbot.waitUntil(lambda: view.model.rowCount() == 4)
    out = tmp_path / "export.csv"
    task = ctl.export_results(str(out), view.current_filter())
    qtbot.waitUntil(lambda: not task.is_alive() and out.exists(), timeout=5000)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["verdict"] for r in rows} == {"pass"}
    qtbot.waitUntil(lambda: any("Exported 4 rows" in line for line in window.log_lines()))
    view.table.selectRow(0)
    view.false_call_requested.emit(view.selected_ids(), True, "reviewed by QA")
    qtbot.waitUntil(lambda: view.model.rows[0]["false_call"] == 1)
    assert view.model.data(view.model.index(0, 13)) == "yes"


def test_draw_a_region_of_interest_on_the_image(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 1, size=(100, 200))
    window, ctl = open_inspector(qtbot, home, fast_loader)
    window.resize(1400, 900)
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported and window.live_view.has_image())
    view = window.live_view
    window.controls.roi_button.click()
    assert view.is_selecting()
    rect = view._image_rect()
    start = rect.topLeft() + QPointF(rect.width() * 0.25, rect.height() * 0.5)
    end = rect.topLeft() + QPointF(rect.width() * 0.75, rect.height() * 0.9)
    QTest.mousePress(view, Qt.MouseButton.LeftButton, pos=start.toPoint())
    QTest.mouseRelease(view, Qt.MouseButton.LeftButton, pos=end.toPoint())
    roi = ctl.context.roi
    assert roi is not None and not view.is_selecting()
    assert (roi.x0, roi.y0, roi.x1, roi.y1) == pytest.approx((0.25, 0.5, 0.75, 0.9), abs=0.02)
    assert "50%" in window.controls.roi_label.text() and not window.controls.roi_button.isChecked()
    window.controls.roi_button.click()
    QTest.keyClick(window, Qt.Key.Key_Escape)  # Esc cancels drawing first
    assert not view.is_selecting() and ctl.context.roi == roi
    ctl.set_roi(None)
    assert window.controls.roi_label.text() == "Whole frame"


def test_every_row_is_committed_before_its_verdict_is_shown(qtbot, home, tmp_path):
    import sqlite3

    write_images(tmp_path / "imgs", 6, bright={2})
    window, ctl = open_inspector(qtbot, home, fast_loader)
    load_model(qtbot, ctl)
    checked = []

    def check(inspection):
        conn = sqlite3.connect(home / "results.sqlite")
        row = conn.execute("SELECT verdict FROM parts WHERE id = ?", (inspection.part_id,)).fetchone()
        conn.close()
        checked.append(row is not None and row[0] == inspection.verdict)

    ctl.worker.inspected.connect(check)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported)
    assert checked == [True] * 6
