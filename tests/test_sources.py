"""Frame sources and the frame queue (Qt-free): folders, watched folders, files, videos, cameras."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from inspector.frame_queue import FrameQueue
from inspector.sources import (CameraInfo, FolderSource, ImageFilesSource, LiveCaptureSource, SourceError, SourceSpec,
                               VideoFileSource, demo_spec, open_source, probe_cameras, spec_for_drop,
                               spec_for_path)
from tests.gui_helpers import FakeCamera, write_images


def read_all(source, limit=1000):
    source.open()
    frames = []
    while len(frames) < limit:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    source.close()
    return frames


# ----------------------------------------------------------------- frame queue
def test_latest_policy_keeps_only_the_newest_frame():
    q = FrameQueue("latest")
    for i in range(5):
        assert q.put(i)
    assert q.take(10) == [4]
    assert q.dropped == 4
    assert q.take(1) == []


def test_latest_policy_can_keep_the_newest_few_frames_for_parallel_lanes():
    q = FrameQueue("latest")
    q.set_policy("latest", keep=2)
    for i in range(5):
        assert q.put(i)
    assert q.take(10) == [3, 4]
    assert q.dropped == 3
    q.set_policy("every", capacity=3)
    assert q.keep == 2 and q.capacity == 3  # 'every' ignores keep


def test_every_policy_blocks_when_full_and_stops_on_request():
    q = FrameQueue("every", capacity=2)
    assert q.put(1) and q.put(2)
    stop = threading.Event()
    result = {}

    def producer():
        result["queued"] = q.put(3, stop=stop)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.15)
    assert t.is_alive(), "put must wait while the queue is full"
    assert q.take(1) == [1]
    t.join(1.0)
    assert result["queued"] and q.take(5) == [2, 3]
    q.put(4)
    q.put(5)
    t = threading.Thread(target=producer)
    t.start()
    stop.set()
    t.join(1.0)
    assert not t.is_alive() and result["queued"] is False


def test_queue_wakes_its_consumer_and_rejects_unknown_policy():
    q = FrameQueue("every", capacity=4)
    calls = []
    q.on_put = lambda: calls.append(1)
    q.put("a")
    assert calls == [1]
    with pytest.raises(ValueError, match="policy"):
        q.set_policy("sometimes")


# ----------------------------------------------------------------- specs
def test_specs_from_paths_and_drops(tmp_path):
    write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "sub").mkdir()
    write_images(tmp_path / "imgs" / "sub", 1, seed=1)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert spec_for_path("0") == SourceSpec("camera", "0")
    assert spec_for_path("rtsp://user:pw@cam/stream").kind == "stream"
    assert "pw" not in spec_for_path("rtsp://user:pw@cam/stream").label()
    assert spec_for_path(str(tmp_path / "imgs")).kind == "folder"
    assert spec_for_path(str(tmp_path / "clip.mp4")).kind == "video"
    assert spec_for_path(str(tmp_path / "imgs" / "img_000.png")).kind == "image"
    with pytest.raises(SourceError, match="notes.txt: not an image, video or folder"):
        spec_for_path(str(tmp_path / "notes.txt"))
    with pytest.raises(SourceError, match="no such file or folder"):
        spec_for_path(str(tmp_path / "missing"))
    dropped = spec_for_drop([str(tmp_path / "imgs" / "img_001.png"), str(tmp_path / "imgs" / "sub")])
    assert dropped.kind == "files" and len(dropped.paths) == 2
    with pytest.raises(SourceError, match="none of the 2 dropped items"):
        spec_for_drop([str(tmp_path / "notes.txt"), str(tmp_path / "clip.mp4")])
    spec = SourceSpec("folder", str(tmp_path), recursive=False, watch=True)
    assert SourceSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown source kind"):
        SourceSpec("scanner")


# ----------------------------------------------------------------- folders and files
def test_folder_is_sorted_recursive_and_reports_unreadable_files(tmp_path):
    write_images(tmp_path, 3)
    (tmp_path / "sub").mkdir()
    write_images(tmp_path / "sub", 1, seed=2)
    (tmp_path / "img_001b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    frames = read_all(FolderSource(tmp_path, recursive=True))
    names = [f.frame_id.replace(str(tmp_path) + "/", "") for f in frames]
    assert names == ["img_000.png", "img_001.png", "img_001b.png", "img_002.png", "sub/img_000.png"]
    bad = frames[2]
    assert bad.rgb is None and bad.error
    assert all(f.rgb is not None and f.rgb.dtype == np.uint8 for f in frames if f is not bad)
    assert [f.index for f in frames] == list(range(5))
    flat = read_all(FolderSource(tmp_path, recursive=False))
    assert len(flat) == 4


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images found"):
        FolderSource(tmp_path).open()
    with pytest.raises(SourceError, match="no such folder"):
        FolderSource(tmp_path / "nope").open()


def test_watch_folder_waits_for_files_to_settle(tmp_path):
    write_images(tmp_path, 1)
    source = FolderSource(tmp_path, watch=True, poll_interval=0.05, settle_polls=2, settle_timeout=0.6)
    statuses = []
    source.on_status = lambda text, level: statuses.append(text)
    source.open()
    assert any("watching" in s for s in statuses)
    assert source.read().frame_id.endswith("img_000.png")
    got = []
    reader = threading.Thread(target=lambda: got.extend([source.read(), source.read()]))
    reader.start()
    # a file that is still being written: first half now, the rest a little later
    img = np.full((40, 50, 3), 90, np.uint8)
    target = tmp_path / "new_001.png"
    Image.fromarray(img).save(tmp_path / "full.tmp", format="PNG")
    data = (tmp_path / "full.tmp").read_bytes()
    target.write_bytes(data[: len(data) // 2])
    time.sleep(0.3)
    assert not got, "a half-written file must not be read"
    target.write_bytes(data)
    (tmp_path / "junk.png").write_bytes(b"never an image")
    reader.join(5.0)
    assert not reader.is_alive()
    by_name = {f.frame_id.rsplit("/", 1)[-1]: f for f in got}
    np.testing.assert_array_equal(by_name["new_001.png"].rgb, img)
    assert by_name["junk.png"].rgb is None and "not an image" in by_name["junk.png"].error
    stopper = threading.Timer(0.2, source.request_stop)
    stopper.start()
    assert source.read() is None and "stopped watching" in source.end_message


def test_image_files_source_keeps_going_past_bad_files(tmp_path):
    good = write_images(tmp_path, 2)
    frames = read_all(ImageFilesSource([good[0], tmp_path / "gone.png", good[1]]))
    assert [f.rgb is None for f in frames] == [False, True, False]
    assert "file not found" in frames[1].error


# ----------------------------------------------------------------- videos
def _write_video(path, n=20, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), (i * 10) % 255, np.uint8))
    writer.release()


def test_video_reads_every_frame_and_ends_cleanly(tmp_path):
    _write_video(tmp_path / "clip.avi", 20)
    source = VideoFileSource(tmp_path / "clip.avi")
    frames = read_all(source)
    assert len(frames) == 20 and source.total == 20
    assert frames[5].frame_id.endswith("clip.avi#5") and frames[0].rgb.shape == (48, 64, 3)
    assert "end of video (20 frames)" in source.end_message


def test_corrupt_video_ends_with_a_message(tmp_path):
    _write_video(tmp_path / "clip.avi", 30)
    data = (tmp_path / "clip.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    source = VideoFileSource(tmp_path / "cut.avi")
    frames = read_all(source)
    assert 0 < len(frames) < 30
    assert "ended early" in source.end_message and "corrupt" in source.end_message
    (tmp_path / "junk.avi").write_bytes(b"garbage" * 50)
    with pytest.raises(SourceError, match="junk.avi: cannot open video"):
        VideoFileSource(tmp_path / "junk.avi").open()


# ----------------------------------------------------------------- cameras
def test_camera_reconnects_after_stall_unplug_and_empty_frames():
    cam = FakeCamera(fps=100)
    source = LiveCaptureSource(0, capture_factory=cam.factory, stall_timeout=0.2, backoff_start=0.05,
                               backoff_max=0.2, failures_before_reconnect=3)
    statuses = []
    source.on_status = lambda text, level: statuses.append((level, text))
    source.open()
    assert source.read().rgb.shape == (120, 160, 3)
    cam.stall(0.3)
    assert source.read() is not None
    assert any("stalled" in t for _, t in statuses) and source.reconnects == 1
    cam.unplug()
    threading.Timer(0.4, cam.plug).start()
    frame = source.read()
    assert frame is not None and frame.live
    assert any("disconnected" in t for _, t in statuses)
    assert any("reconnect attempt" in t and "failed" in t for _, t in statuses), statuses
    cam.empty = True
    threading.Timer(0.3, lambda: setattr(cam, "empty", False)).start()
    assert source.read() is not None
    assert any("empty frames in a row" in t for _, t in statuses)
    assert source.reconnects == 3 and cam.opens >= 4
    source.request_stop()
    assert source.read() is None
    source.close()


def test_camera_that_never_opens_is_a_clear_error():
    cam = FakeCamera()
    cam.unplug()
    with pytest.raises(SourceError, match="camera 3: cannot open"):
        LiveCaptureSource(3, capture_factory=cam.factory).open()


def test_probe_lists_cameras_that_deliver_frames():
    cams = {0: FakeCamera(fps=1000), 2: FakeCamera(fps=1000, size=(48, 64))}
    dead = FakeCamera()
    dead.unplug()
    found = probe_cameras(3, capture_factory=lambda i: (cams.get(i) or dead).factory(i))
    assert found == [CameraInfo(0, 160, 120, 1000.0), CameraInfo(2, 64, 48, 1000.0)]
    assert "Camera 2: 64x48" in found[1].label()


def test_open_source_builds_the_right_reader(tmp_path):
    assert isinstance(open_source(SourceSpec("camera", "1")), LiveCaptureSource)
    assert isinstance(open_source(SourceSpec("folder", str(tmp_path), watch=True)), FolderSource)
    assert isinstance(open_source(SourceSpec("files", paths=("a.png", "b.png"))), ImageFilesSource)


def test_demo_spec_interleaves_the_test_images_of_each_category(tmp_path):
    for category in ("brick", "coin"):
        for kind in ("good", "crack"):
            write_images(tmp_path / category / "test" / kind, 2, size=(8, 8))
        write_images(tmp_path / category / "train" / "good", 2, size=(8, 8))
    spec = demo_spec(tmp_path)
    names = ["/".join(p.split("/")[-4:]) for p in spec.paths]
    assert names[:4] == ["brick/test/crack/img_000.png", "brick/test/good/img_000.png",
                         "coin/test/crack/img_000.png", "coin/test/good/img_000.png"]
    assert len(names) == 8 and not any("/train/" in n for n in names)
    assert spec.label() == "demo images (8)"
    assert demo_spec(tmp_path / "nothing") is None


def test_digits_that_are_not_ascii_are_not_camera_indexes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match="no such file"):
        spec_for_path("²")   # was camera '²', which int() refuses
    (tmp_path / "²").mkdir()
    assert spec_for_path("²") == SourceSpec("folder", "²")
    assert spec_for_path("3") == SourceSpec("camera", "3")
