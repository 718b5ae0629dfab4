"""Live sources in the window: a fake camera that stalls and disconnects, and latest-frame-wins
keeping latency bounded behind a deliberately slow engine."""

from __future__ import annotations

import threading
import time

from inspector.sources import SourceSpec
from tests.gui_helpers import FakeCamera, SleepyDetector, load_model, open_inspector

FAST_RECONNECT = {"stall_timeout": 0.4, "backoff_start": 0.1, "backoff_max": 0.4, "failures_before_reconnect": 3}


def test_camera_stall_and_unplug_reconnect_with_visible_status(qtbot, home):
    cam = FakeCamera(fps=30)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: SleepyDetector(0.01), capture_factory=cam.factory)
    ctl.live_source_options = FAST_RECONNECT
    ctl.stall_seconds = 0.3
    load_model(qtbot, ctl)
    statuses = []
    ctl.open_source(SourceSpec("camera", "0"))
    ctl.reader.status.connect(lambda text, level: statuses.append(text))
    qtbot.waitUntil(lambda: ctl.counts["inspected"] >= 3, timeout=10000)
    assert window.live_view.has_inset()  # the live feed is shown next to the inspected frame

    cam.stall(1.2)
    qtbot.waitUntil(lambda: "no frame for" in window.source_status.text()
                    or "stalled" in window.source_status.text(), timeout=5000)
    qtbot.waitUntil(lambda: any("reconnected" in s for s in statuses), timeout=5000)
    before = ctl.counts["inspected"]
    qtbot.waitUntil(lambda: ctl.counts["inspected"] > before + 2, timeout=5000)

    cam.unplug()
    qtbot.waitUntil(lambda: "reconnect" in window.source_status.text(), timeout=5000)
    qtbot.wait(600)
    assert any("failed" in s for s in statuses)
    cam.plug()
    qtbot.waitUntil(lambda: sum("reconnected" in s for s in statuses) >= 2, timeout=5000)
    before = ctl.counts["inspected"]
    qtbot.waitUntil(lambda: ctl.counts["inspected"] > before + 2, timeout=5000)
    assert any("disconnected" in line for line in window.log_lines())
    assert any("stalled" in line for line in window.log_lines())
    qtbot.waitUntil(lambda: "fps in" in window.source_status.text(), timeout=5000)
    ctl.stop()
    assert window.counters.text("error") == "0"


def test_latest_frame_wins_keeps_latency_bounded(qtbot, home):
    engine_period = 0.2
    cam = FakeCamera(fps=30)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: SleepyDetector(engine_period),
                                 capture_factory=cam.factory)
    load_model(qtbot, ctl)
    results = []
    ctl.worker.inspected.connect(results.append)
    ctl.open_source(SourceSpec("camera", "0"))
    qtbot.waitUntil(lambda: len(results) >= 2, timeout=10000)
    painted, shown, read = window.live_view.paint_count, ctl.display_frames, ctl.reader.frames_read
    started, first = time.monotonic(), len(results)
    qtbot.wait(3000)
    elapsed = time.monotonic() - started
    dropped = ctl.frames.dropped
    ctl.stop()
    inspected = results[first:]
    display_fps = (ctl.display_frames - shown) / elapsed
    assert window.live_view.paint_count - painted >= 10 * elapsed
    assert display_fps > 10, f"the display must keep flowing while the engine is busy ({display_fps:.1f} fps)"
    assert 0.5 * elapsed / engine_period <= len(inspected) <= elapsed / engine_period + 2
    ages = sorted(r.age_ms for r in inspected)
    assert ages[len(ages) // 2] < 2 * engine_period * 1000, ages
    assert ages[-1] < 3 * engine_period * 1000, ages
    assert dropped > 0 and cam.frames - read > 2 * len(inspected), \
        "frames arriving while the engine is busy are shown but not queued"


class TwoLaneSleepyDetector(SleepyDetector):
    """Reports two CPU lanes, so the window should run a frame on each lane, side by side."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.batches: list[int] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def lane_count(self, batch: int) -> int:
        return min(2, batch)

    def predict(self, frames, category=None, channel_order="rgb"):
        with self._lock:
            self.batches.append(len(frames))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return super().predict(frames, category, channel_order)
        finally:
            with self._lock:
                self.running -= 1


def test_live_frames_go_to_every_cpu_lane(qtbot, home):
    delay = 0.2
    detector = TwoLaneSleepyDetector(delay)
    cam = FakeCamera(fps=30)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: detector, capture_factory=cam.factory)
    load_model(qtbot, ctl)
    assert ctl.model_info.lanes == 2
    results = []
    ctl.worker.inspected.connect(results.append)
    ctl.open_source(SourceSpec("camera", "0"))
    qtbot.waitUntil(lambda: len(results) >= 2, timeout=10000)
    started, first = time.monotonic(), len(results)
    qtbot.waitUntil(lambda: len(results) >= first + 10, timeout=10000)
    elapsed = time.monotonic() - started
    ctl.stop()
    # staggered lanes: one frame per call, two calls side by side, about two frames per delay
    assert set(detector.batches) == {1} and detector.most_running == 2, detector.batches
    assert (len(results) - first) / elapsed > 1.2 / delay  # one lane at a time would give at most 1 / delay
    ids = [r.index for r in results]
    assert ids == sorted(ids), "parts are recorded in the order their frames were started"
    ages = sorted(r.age_ms for r in results[2:])
    assert ages[len(ages) // 2] < 2 * delay * 1000, ages


class StagedSleepyDetector(SleepyDetector):
    """A one-lane model with stages (engine.runtime.StagedModel): `prepare` and `finish` take
    `light` seconds, `run_networks` `heavy`; notes whether light stages ran while networks did."""

    def __init__(self, light: float, heavy: float):
        super().__init__(0.0)
        self.light, self.heavy = light, heavy
        self.in_networks = threading.Event()
        self.overlapped = 0
        self.network_threads: set[str] = set()

    def _light_stage(self):
        if self.in_networks.is_set():
            self.overlapped += 1
        time.sleep(self.light)

    def prepare(self, frames, category=None, channel_order="rgb"):
        self._light_stage()
        return {"frames": list(frames), "category": category}

    def run_networks(self, prepared):
        self.network_threads.add(threading.current_thread().name)
        self.in_networks.set()
        try:
            time.sleep(self.heavy)
        finally:
            self.in_networks.clear()
        return prepared

    def finish(self, prepared):
        self._light_stage()
        return SleepyDetector.predict(self, prepared["frames"], prepared["category"])


def test_a_staged_model_in_one_lane_runs_live_through_the_pipeline(qtbot, home):
    light, heavy = 0.04, 0.12
    detector = StagedSleepyDetector(light, heavy)
    cam = FakeCamera(fps=30)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: detector, capture_factory=cam.factory)
    load_model(qtbot, ctl)
    results = []
    ctl.worker.inspected.connect(results.append)
    ctl.open_source(SourceSpec("camera", "0"))
    qtbot.waitUntil(lambda: len(results) >= 12, timeout=20000)
    ctl.stop()
    assert ctl.worker._pipeline is not None and detector.network_threads == {"live-networks"}
    # the worker prepared and finished frames while the network thread ran the networks of others
    assert detector.overlapped >= 5, detector.overlapped
    ids = [r.index for r in results]
    assert ids == sorted(ids) and all(r.score is not None for r in results)
    ages = sorted(r.age_ms for r in results[2:])
    assert ages[len(ages) // 2] < 1000 * (2 * light + heavy + 0.2), ages   # frames are not queued behind stale ones
