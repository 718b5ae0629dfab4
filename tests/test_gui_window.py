"""Driving the inspector window (offscreen): folder runs with a tiny real detector, recipes,
replay, drag and drop, calibration, settings, videos, and errors that must not crash the app."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from inspector.imageio import read_image
from inspection import verdict_for
from inspector.sources import SourceSpec
from tests.gui_helpers import (SleepyDetector, db_rows, load_model, make_tiny_detector, open_inspector, tiny_loader,
                               write_images)


def sleepy_loader(delay=0.0):
    return lambda path, **overrides: SleepyDetector(delay)


def run_to_end(qtbot, ctl, timeout_ms=30000):
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=timeout_ms)


def test_folder_run_with_a_tiny_detector(qtbot, home, tmp_path):
    paths = write_images(tmp_path / "imgs", 10, size=(80, 100))
    (tmp_path / "imgs" / "aa_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    reference = make_tiny_detector()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the engine worker: a busy shared machine makes 2 threads crawl
    try:
        scores = {str(p): r.score for p, r in zip(paths, reference.predict([read_image(p) for p in paths],
                                                                           category="part0"))}
    finally:
        torch.set_num_threads(threads)
    ordered = sorted(scores.values())
    review, fail = (ordered[3] + ordered[4]) / 2, (ordered[6] + ordered[7]) / 2
    expected = {p: verdict_for(s, fail, review) for p, s in scores.items()}
    assert set(expected.values()) == {"pass", "review", "fail"}

    window, ctl = open_inspector(qtbot, home, tiny_loader())
    info = load_model(qtbot, ctl)
    assert info.info.classes == ["part0", "part1", "part2"]
    assert ctl.context.category == "part0"  # no classifier: the first category is pinned, with a message
    assert any("no category classifier" in line for line in window.log_lines())
    ctl.set_thresholds(fail, review)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    run_to_end(qtbot, ctl)

    counts = {v: list(expected.values()).count(v) for v in ("pass", "review", "fail")}
    c = window.counters
    assert c.text("inspected") == "11" and c.text("error") == "1"
    assert (c.text("pass"), c.text("review"), c.text("fail")) == tuple(str(counts[v]) for v in ("pass", "review",
                                                                                               "fail"))
    last = str(paths[-1])
    assert window.banner.verdict == expected[last]
    assert f"{scores[last]:.4f}" in window.banner.score_label.text()
    assert "img_009.png" in window.banner.detail_label.text()
    assert window.filmstrip.count() == 11 and len(window.trend.points()) == 10
    assert any("aa_broken.png" in line and "truncated" in line for line in window.log_lines())
    assert any("Run finished: 11 parts" in line for line in window.log_lines())

    assert ctl.worker.archive.wait_idle()
    rows = db_rows(home)
    assert len(rows) == 11
    by_file = {r["frame_id"]: r for r in rows}
    for path, verdict in expected.items():
        row = by_file[path]
        assert row["verdict"] == verdict and row["score"] == pytest.approx(scores[path], abs=1e-5)
        assert row["threshold"] == pytest.approx(fail) and row["review_threshold"] == pytest.approx(review)
        assert row["model_id"] == "tiny-test" and row["category"] == "part0"
        assert Path(row["thumbnail_path"]).is_file()
        archived = verdict in ("fail", "review")
        assert bool(row["image_path"]) == archived and bool(row["overlay_path"]) == archived
        if archived:
            assert Path(row["image_path"]).is_file() and Path(row["overlay_path"]).is_file()
    broken = by_file[str(tmp_path / "imgs" / "aa_broken.png")]
    assert broken["verdict"] == "error" and "truncated" in broken["error"] and broken["score"] is None

    window.act_results_tab.trigger()
    qtbot.waitUntil(lambda: window.results_view.model.rowCount() == 11)
    table = window.results_view.model
    assert table.rows[0]["frame_id"] == last  # newest first
    window.results_view.verdict_combo.setCurrentIndex(window.results_view.verdict_combo.findData("fail"))
    qtbot.waitUntil(lambda: table.rowCount() == counts["fail"])
    assert {r["verdict"] for r in table.rows} == {"fail"}


def test_recipes_switch_in_one_click_and_rows_record_them(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 4, bright={1})
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.5, 0.3)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
    ctl.save_recipe("Widget strict")
    ctl.set_thresholds(0.9, 0.8)
    assert "modified" in window.controls.recipe_label.text()
    ctl.save_recipe("Widget loose")
    assert [window.controls.recipe_list.item(i).text() for i in range(2)] == ["Widget loose", "Widget strict"]

    window.controls.recipe_list.itemClicked.emit(window.controls.recipe_list.item(1))
    assert ctl.recipe_name == "Widget strict" and ctl.context.fail_threshold == 0.5
    assert window.controls.fail_control.value() == 0.5 and window.controls.review_control.value() == 0.3
    ctl.start()
    run_to_end(qtbot, ctl)
    rows = db_rows(home)
    assert {r["recipe"] for r in rows} == {"Widget strict"}
    assert [r["verdict"] for r in rows] == ["pass", "fail", "pass", "pass"]

    ctl.apply_recipe("Widget loose")
    ctl.start()
    qtbot.waitUntil(lambda: len(db_rows(home)) == 8, timeout=10000)
    assert {r["recipe"] for r in db_rows(home)[4:]} == {"Widget loose"}
    assert [r["verdict"] for r in db_rows(home)[4:]] == ["pass"] * 4


def test_filmstrip_replay_and_false_call(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 5, bright={2})
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.5, 0.4)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    run_to_end(qtbot, ctl)
    rows = db_rows(home)
    failed = [r for r in rows if r["verdict"] == "fail"][0]
    strip = window.filmstrip
    item = strip.item(strip.keys().index(failed["id"]))
    strip.itemClicked.emit(item)
    assert ctl.replaying and "REPLAY" in window.live_view.badge
    assert window.banner.verdict == "fail" and "Replay of part" in window.banner.detail_label.text()
    assert window.back_to_live.isVisibleTo(window)
    window.back_to_live.click()
    assert not ctl.replaying and window.banner.verdict == "pass"

    ctl.mark_false_call([failed["id"]], True, "glare, part is fine")
    row = [r for r in db_rows(home) if r["id"] == failed["id"]][0]
    assert row["verdict"] == "fail" and row["false_call"] == 1 and row["false_call_note"] == "glare, part is fine"


def test_drop_files_and_folders_on_the_window(qtbot, home, tmp_path):
    paths = write_images(tmp_path / "imgs", 3)
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths[:2]])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert ctl.source_spec.kind == "files" and len(ctl.source_spec.paths) == 2
    run_to_end(qtbot, ctl)
    assert len(db_rows(home)) == 2
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "nothing.txt"))])
    (tmp_path / "nothing.txt").write_text("x")
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))
    assert any("Dropped:" in line and "not an image" in line for line in window.log_lines())


def test_calibration_runs_in_the_worker_and_sets_thresholds(qtbot, home, tmp_path):
    write_images(tmp_path / "good", 6)
    (tmp_path / "good" / "zz_bad.png").write_bytes(b"nope")
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    with qtbot.waitSignal(ctl.worker.calibrated, timeout=10000) as blocker:
        ctl.calibrate_folder(str(tmp_path / "good"), percentile=99, margin=0.1)
    cal = blocker.args[0]
    assert cal.count == 6 and len(cal.errors) == 1
    qtbot.waitUntil(lambda: ctl.context.fail_threshold == pytest.approx(cal.fail_threshold))
    assert ctl.context.review_threshold == pytest.approx(cal.review_threshold)
    assert window.controls.fail_control.value() == pytest.approx(cal.fail_threshold, abs=1e-4)
    assert any("Calibrated on 6 good images" in line for line in window.log_lines())


def test_roi_crops_frames_before_inspection(qtbot, home, tmp_path):
    img = np.full((100, 100, 3), 30, np.uint8)
    img[:, 50:] = 250  # the right half is bright (scores high with the fake detector)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "half.png"), img)
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.5, 0.5)
    from inspection import Roi

    ctl.set_roi(Roi(0.0, 0.0, 0.5, 1.0))
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    run_to_end(qtbot, ctl)
    row = db_rows(home)[0]
    assert row["verdict"] == "pass" and row["score"] == pytest.approx(30 / 255, abs=1e-3)
    assert ctl.last_inspection.view_roi == (0, 0, 50, 100)


def test_settings_survive_a_restart(qtbot, home, tmp_path):
    write_images(tmp_path / "imgs", 2)
    model = tmp_path / "model-A"
    model.mkdir()
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl, str(model))
    ctl.set_thresholds(0.42, 0.33)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs"), recursive=False), autostart=False)
    window.controls.opacity_slider.setValue(70)
    window.close()
    assert not ctl.worker_thread.isRunning()

    window2, ctl2 = open_inspector(qtbot, home, sleepy_loader())
    ctl2.restore()
    qtbot.waitUntil(lambda: ctl2.model_info is not None, timeout=10000)
    assert ctl2.model_path == str(model)
    assert (ctl2.context.fail_threshold, ctl2.context.review_threshold) == (0.42, 0.33)
    assert ctl2.source_spec == SourceSpec("folder", str(tmp_path / "imgs"), recursive=False)
    assert ctl2.display.opacity == pytest.approx(0.7)
    assert window2.hint.isVisibleTo(window2)  # first-run hint until dismissed
    window2.hint_close.click()
    assert ctl2.settings.value("app/first_run_done") in (True, "true")


def test_model_load_failure_is_a_message_not_a_crash(qtbot, home, tmp_path):
    from engine.checkpoint import CheckpointError

    def broken(path, **overrides):
        raise CheckpointError(path, "not a model folder: model.json is missing")

    window, ctl = open_inspector(qtbot, home, broken)
    with qtbot.waitSignal(ctl.worker.model_failed, timeout=10000):
        ctl.open_model(str(tmp_path / "nowhere"))
    qtbot.waitUntil(lambda: not ctl.model_loading)
    assert any("Cannot load model" in line and "model.json is missing" in line for line in window.log_lines())
    assert "model.json is missing" in window.statusBar().currentMessage()
    write_images(tmp_path / "imgs", 1)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    assert any("No model loaded" in line for line in window.log_lines())
    ctl.toggle_run()
    assert window.isVisible()


def test_video_run_and_a_corrupt_video(qtbot, home, tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(24):
        writer.write(np.full((48, 64, 3), 40 if i != 10 else 240, np.uint8))
    writer.release()
    data = (tmp_path / "clip.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 7 // 10])
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.5, 0.4)
    ctl.open_source(SourceSpec("video", str(tmp_path / "clip.avi")))
    run_to_end(qtbot, ctl)
    rows = db_rows(home)
    assert len(rows) == 24 and [r["verdict"] for r in rows].count("fail") == 1
    assert rows[10]["frame_id"].endswith("clip.avi#10") and rows[10]["verdict"] == "fail"
    ctl.open_source(SourceSpec("video", str(tmp_path / "cut.avi")))
    run_to_end(qtbot, ctl)
    assert any("ended early at frame 10 of 24" in line for line in window.log_lines())
    assert "ended early" in window.source_status.text()
    assert len(db_rows(home)) == 24 + 10


def test_worker_survives_engine_errors_and_archive_failures(qtbot, home, tmp_path):
    class Flaky(SleepyDetector):
        def predict(self, frames, category=None, channel_order="rgb"):
            if any(f.mean() > 150 for f in frames):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return super().predict(frames, category, channel_order)

    write_images(tmp_path / "imgs", 6, bright={2})
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: Flaky(0.0))
    load_model(qtbot, ctl)
    ctl.set_thresholds(0.1, 0.1)  # everything judged fails, so everything is archived

    def disk_full(path, rgb):
        raise OSError(errno.ENOSPC, "No space left on device")

    ctl.worker.archive.archiver.writer = disk_full
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    run_to_end(qtbot, ctl)
    assert ctl.worker.archive.wait_idle()
    rows = db_rows(home)
    assert [r["verdict"] for r in rows] == ["fail", "fail", "error", "fail", "fail", "fail"]
    assert "illegal memory access" in rows[2]["error"]
    assert all("No space left on device" in r["archive_error"] for r in rows if r["verdict"] == "fail")
    qtbot.waitUntil(lambda: any("No space left on device" in line and "the result is logged" in line
                                for line in window.log_lines()))
    assert window.counters.text("inspected") == "6"


def test_about_box_and_training_menu(qtbot, home):
    from inspector.dialogs import about_text

    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    text = about_text("CPU")
    for name in ("DeCo Inspector", "Python", "PyTorch", "Qt", "OpenCV", "CPU"):
        assert name in text
    with qtbot.waitSignal(window.training_wizard_requested, timeout=1000):
        window.act_training_wizard.trigger()
    titles = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert titles == ["File", "Source", "Model", "View", "Line", "Training", "Station", "Help"]
    shortcuts = {a.shortcut().toString() for a in window.actions()}
    assert {"Space", "S", "Esc", "Ctrl+O"} <= shortcuts


def test_a_broken_engine_result_becomes_an_error_row_and_the_run_goes_on(qtbot, home, tmp_path):
    class Garbled(SleepyDetector):
        def predict(self, frames, category=None, channel_order="rgb"):
            results = super().predict(frames, category, channel_order)
            if self.calls == 1:
                results[0].score = "not a number"
            return results

    write_images(tmp_path / "imgs", 3)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: Garbled(0.0, batch_size=1))
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    run_to_end(qtbot, ctl)
    rows = db_rows(home)
    assert [r["verdict"] for r in rows] == ["error", "pass", "pass"]
    assert "internal error: ValueError" in rows[0]["error"]
    assert any("Engine error on" in line for line in window.log_lines())


def test_automatic_category_choices():
    from engine.runtime import ModelInfo
    from inspector.controls import AUTO_CATEGORY, AUTO_MIN_SCORE
    from inspector.loaded_model import automatic_category

    def info(classes, **kind):
        return ModelInfo(model_id="m", source="", size="", ncls=len(classes), gating=False, classes=classes,
                         device="CPU", unet_parameters=0, vae="", classifier=kind.pop("classifier", False),
                         preprocess={}, **kind)

    assert automatic_category(info(["a", "b"], classifier=True)) == (True, AUTO_CATEGORY)
    assert automatic_category(info(["a", "b"], category_selection="min-score")) == (True, AUTO_MIN_SCORE)
    assert automatic_category(info(["a"])) == (True, AUTO_CATEGORY)
    assert automatic_category(info(["a", "b"])) == (False, AUTO_CATEGORY)
    assert automatic_category(None) == (True, AUTO_CATEGORY)   # no model: nothing to pin


def test_a_min_score_model_keeps_the_automatic_category(qtbot, home):
    """DiAD without a classifier picks the lowest-scoring class itself: no category is pinned."""
    from inspector.controls import AUTO_MIN_SCORE

    def loader(path, **overrides):
        det = make_tiny_detector()
        describe = det.describe
        det.describe = lambda: replace(describe(), category_selection="min-score")
        return det

    window, ctl = open_inspector(qtbot, home, loader)
    info = load_model(qtbot, ctl)
    assert info.info.category_selection == "min-score" and not info.info.classifier
    assert ctl.context.category is None
    combo = window.controls.category_combo
    assert combo.itemText(0) == AUTO_MIN_SCORE and combo.currentData() is None
    assert not any("no category classifier" in line for line in window.log_lines())


def test_the_model_panel_offers_the_runtimes_with_their_measured_time(qtbot, home):
    """The machine default and every other runtime / precision are in the model panel with the ms
    per part measured when the default was decided; choosing one switches the engine's model."""
    from engine.runtime_choice import CANDIDATES, RuntimeChoice

    measured = {"torch fp32": 10.0, "torch bf16": 5.0, "openvino fp32": None}
    held = {}

    def loader(path, **overrides):
        det = make_tiny_detector(precision="bf16")
        det.runtime_choice = RuntimeChoice("torch", "bf16", measured, "the fastest setting that kept the verdicts")
        held["det"] = det
        return det

    window, ctl = open_inspector(qtbot, home, loader)
    info = load_model(qtbot, ctl)
    assert info.runtime == "torch bf16" and info.ms_per_part == 5.0
    combo = window.controls.runtime_combo
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert [combo.itemData(i) for i in range(combo.count())] == [f"{r} {p}" for r, p in CANDIDATES]
    assert labels[:3] == ["torch fp32 · 10 ms/part", "torch bf16 · 5 ms/part · default",
                          "openvino fp32 · fails the accuracy check or cannot run"]
    assert labels[3] == "openvino bf16"    # not measured
    assert combo.currentData() == "torch bf16" and combo.isEnabled()
    assert "5 ms/part measured" in window.controls.model_info.text()
    assert any("Runtime torch bf16: the fastest setting that kept the verdicts" in line for line in window.log_lines())

    combo.activated.emit(combo.findData("torch fp32"))
    qtbot.waitUntil(lambda: ctl.model_info.runtime == "torch fp32", timeout=10000)
    assert held["det"].settings.precision == "fp32" and held["det"].settings.runtime == "torch"
    assert combo.currentData() == "torch fp32"
    assert "10 ms/part measured" in window.controls.model_info.text()


def test_image_view_scales_each_new_image_and_size_once(qtbot):
    from inspector.views import ImageView

    view = ImageView("Live")
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()

    def centre_rgb():
        img = view.grab().toImage()
        c = img.pixelColor(img.width() // 2, img.height() // 2)
        return c.red(), c.green(), c.blue()

    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    view.set_image(red)
    assert centre_rgb() == (255, 0, 0)
    first = view._scaled["image"]
    assert (first.width(), first.height()) == (400, 300)   # 64x48 fitted to the 400x300 widget
    view.grab()
    assert view._scaled["image"] is first                   # repainted without scaling again
    blue = np.zeros((48, 64, 3), np.uint8)
    blue[..., 2] = 255
    view.set_image(blue)
    assert centre_rgb() == (0, 0, 255)                      # a new image is never drawn from the old scale
    view.resize(320, 400)
    assert centre_rgb() == (0, 0, 255)
    assert (view._scaled["image"].width(), view._scaled["image"].height()) == (320, 240)


def test_the_window_runs_opencv_without_its_thread_pool(qtbot, home):
    open_inspector(qtbot, home, tiny_loader())
    assert cv2.getNumThreads() == 1   # OpenCV's spinning workers would take the engine's cores
