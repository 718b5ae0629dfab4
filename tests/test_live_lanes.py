"""Staggered live inspection: lanes take the newest frame when free, the worker records the lanes'
results in the order the frames were started, and the model is left alone while a lane runs."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np

from inspection import Frame, InspectionRecipe
from inspector.frame_queue import FrameQueue
from inspector.live_lanes import LiveLanes
from tests.gui_helpers import make_tiny_detector


def test_finished_steps_come_out_in_start_order_and_errors_are_results():
    release = threading.Event()
    done = []
    lanes = LiveLanes(2, on_done=lambda: done.append(1))

    def slow(x):
        release.wait(5)
        return x * 10

    def fails(x):
        raise ValueError(f"bad {x}")

    lanes.start(slow, 1)
    lanes.start(fails, 2)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:  # the second step is done, the first still runs
        time.sleep(0.01)
    assert lanes.free == 1 and lanes.finished() == []   # the first started is still running
    release.set()
    lanes.wait()
    (args1, r1), (args2, r2) = lanes.finished()
    assert (args1, r1) == ((1,), 10)
    assert args2 == (2,) and isinstance(r2, ValueError) and lanes.pending() == 0 and lanes.free == 2
    lanes.close()


def test_take_newest_drops_the_older_frames():
    q = FrameQueue("latest")
    q.set_policy("latest", keep=3)
    for k in range(3):
        q.put(k)
    assert q.take_newest() == [2] and q.dropped == 2 and len(q) == 0 and q.take_newest() == []


def _frame(k: int, rng) -> Frame:
    return Frame(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), "camera", f"cam-{k}", k, live=True)


def test_the_worker_runs_live_frames_on_lanes_and_records_them_in_start_order(tmp_path):
    from inspector.worker import EngineWorker

    detector = make_tiny_detector(ncls=1, batch_size=2)
    frames = FrameQueue("latest")
    frames.set_policy("latest", keep=2)
    worker = EngineWorker(frames, tmp_path / "live.sqlite", tmp_path / "archive", loader=lambda path, **kw: detector)
    worker.load_model("tiny")
    detector.with_settings(lanes=2)
    worker.configure(InspectionRecipe(view_max_side=0))
    shown = []
    worker.inspected.connect(shown.append)
    started = []
    original = worker.session.predict
    worker.session.predict = lambda fs, recipe: (started.append(fs[0].frame_id), original(fs, recipe))[1]
    rng = np.random.default_rng(0)
    frames.put(_frame(0, rng))
    frames.put(_frame(1, rng))       # frame 0 is stale now: the first free lane takes frame 1 alone
    worker._drain()
    assert started == ["cam-1"] and frames.dropped == 1
    assert worker._live is not None and worker._live.size == 2
    frames.put(_frame(2, rng))       # the second lane takes it while the first may still run
    worker._drain()
    assert started == ["cam-1", "cam-2"]
    worker._finish_live()
    assert [p.frame_id for p in shown] == ["cam-1", "cam-2"]
    assert all(p.score is not None and p.error == "" for p in shown)
    worker.apply_settings({"threshold": 0.3})   # waits for the lanes before changing the model
    worker.close_log()
    conn = sqlite3.connect(tmp_path / "live.sqlite")
    assert [r[0] for r in conn.execute("SELECT frame_id FROM parts ORDER BY id")] == ["cam-1", "cam-2"]
    conn.close()


class _Unstaged:
    """A detector seen through `predict` only (like DiAD): no prepare / run_networks / finish."""

    def __init__(self, detector):
        self._inner = detector

    def __getattr__(self, name):
        if name in ("prepare", "run_networks", "finish"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def _one_lane_worker_with_a_frame(tmp_path, detector):
    """A worker with `detector` in one lane, a live frame queue holding one camera frame, and the
    list the worker publishes its inspections to."""
    from inspector.worker import EngineWorker

    frames = FrameQueue("latest")
    worker = EngineWorker(frames, tmp_path / "live.sqlite", tmp_path / "archive", loader=lambda path, **kw: detector)
    worker.load_model("tiny")
    detector.with_settings(lanes=1)
    shown = []
    worker.inspected.connect(shown.append)
    frames.put(_frame(0, np.random.default_rng(1)))
    return worker, shown


def test_a_model_in_one_lane_goes_through_the_live_pipeline(tmp_path):
    worker, shown = _one_lane_worker_with_a_frame(tmp_path, make_tiny_detector(ncls=1, batch_size=2))
    worker._drain()              # prepares the frame and hands it to the network thread
    worker._finish_live()        # waits for the networks, then finishes and records it
    assert worker._live is None and worker._pipeline is not None
    assert [p.frame_id for p in shown] == ["cam-0"] and shown[0].score is not None
    worker.close_log()
    assert worker._pipeline is None


def test_a_model_without_stages_keeps_the_batch_path_in_one_lane(tmp_path):
    worker, shown = _one_lane_worker_with_a_frame(tmp_path, _Unstaged(make_tiny_detector(ncls=1, batch_size=2)))
    worker._drain()
    assert worker._live is None and worker._pipeline is None and [p.frame_id for p in shown] == ["cam-0"]
    worker.close_log()


def test_openvino_runs_in_one_lane_and_a_runtime_switch_takes_that_runtimes_lanes(tmp_path, monkeypatch):
    """An automatic-lanes model on OpenVINO gets one lane (its live frames go through the two-thread
    pipeline: more frames/s at two thirds of the frame age of two lanes); switching the runtime in the window
    takes the new runtime's lanes unless the change names lanes itself."""
    from inspector import worker as worker_module
    from inspector.worker import EngineWorker, engine_lanes

    monkeypatch.delenv("DECO_INSPECTOR_LANES", raising=False)
    monkeypatch.setattr(worker_module.os, "cpu_count", lambda: 4)
    assert engine_lanes("openvino") == 1 and engine_lanes("torch") == 4 and engine_lanes() == 4
    monkeypatch.setenv("DECO_INSPECTOR_LANES", "3")
    assert engine_lanes("openvino") == 3   # the override wins
    monkeypatch.delenv("DECO_INSPECTOR_LANES")

    detector = make_tiny_detector(ncls=1, batch_size=2)
    assert detector.prefers_lanes
    applied = []
    detector.with_settings = lambda **changes: applied.append(changes)
    worker = EngineWorker(FrameQueue("latest"), tmp_path / "l.sqlite", tmp_path / "archive",
                          loader=lambda path, **kw: detector)
    worker.load_model("tiny")
    assert applied[-1] == {"lanes": 4}
    worker.apply_settings({"runtime": "openvino", "precision": "int8"})
    assert applied[-1] == {"runtime": "openvino", "precision": "int8", "lanes": 1}
    worker.apply_settings({"runtime": "torch", "precision": "fp32", "lanes": 2})
    assert applied[-1]["lanes"] == 2
    worker.close_log()
