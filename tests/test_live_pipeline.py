"""The live pipeline's network thread and its slot of one (inspector.live_pipeline): order, the
timing of the next preparation, waiting, closing, and a failing item."""

from __future__ import annotations

import threading

import pytest

from inspector.live_pipeline import PREPARE_MARGIN_S, LivePipeline


class Item:
    """A prepared frame whose network stage blocks until released (or fails when told to)."""

    def __init__(self, name: str, fail: bool = False):
        self.name = name
        self.fail = fail
        self.release = threading.Event()
        self.started = threading.Event()
        self.ran_on = None

    def run_networks(self) -> None:
        self.ran_on = threading.current_thread().name
        self.started.set()
        assert self.release.wait(5)
        if self.fail:
            raise RuntimeError("the networks failed")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_items_run_in_order_on_the_network_thread_through_a_slot_of_one():
    done = threading.Semaphore(0)
    setup = []
    pipeline = LivePipeline(on_done=done.release, setup=lambda: setup.append(threading.current_thread().name))
    a, b, c = Item("a"), Item("b"), Item("c")
    assert pipeline.next_prepare_in() == 0.0          # idle: prepare now
    pipeline.submit(a)
    assert a.started.wait(5)
    pipeline.submit(b)                                 # waits in the slot while a runs
    assert pipeline.next_prepare_in() is None
    with pytest.raises(RuntimeError, match="already waiting"):
        pipeline.submit(c)
    assert pipeline.pending() == 2
    a.release.set()
    assert done.acquire(timeout=5)
    assert b.started.wait(5)                           # the thread took b without the worker's help
    assert [i.name for i in pipeline.finished()] == ["a"] and pipeline.finished() == []
    b.release.set()
    pipeline.wait()
    assert [i.name for i in pipeline.finished()] == ["b"] and pipeline.pending() == 0
    assert setup == ["live-networks"] and a.ran_on == b.ran_on == "live-networks"
    assert pipeline.items == 2
    pipeline.close()
    with pytest.raises(RuntimeError, match="closed"):
        pipeline.submit(c)


def test_the_next_frame_is_prepared_shortly_before_the_network_thread_is_free():
    clock = Clock()
    pipeline = LivePipeline(clock=clock)
    first = Item("first")
    pipeline.submit(first)
    assert first.started.wait(5)
    assert pipeline.next_prepare_in() == 0.0           # no network time measured yet: prepare now
    clock.now += 0.050
    first.release.set()
    pipeline.wait()                                    # the networks took 50 ms
    second = Item("second")
    pipeline.note_prepare(0.010)                       # a preparation takes 10 ms
    pipeline.submit(second)
    assert second.started.wait(5)
    clock.now += 0.020                                 # 20 ms into the second: 30 ms left, minus 10 ms to prepare
    assert pipeline.next_prepare_in() == pytest.approx(0.030 - 0.010 - PREPARE_MARGIN_S)
    clock.now += 0.040                                 # overdue: prepare now
    assert pipeline.next_prepare_in() == 0.0
    second.release.set()
    pipeline.wait()
    assert pipeline.ready_wait_s == pytest.approx(0.0) and pipeline.network_idle_s == pytest.approx(0.0)
    pipeline.close()


def test_a_failing_network_stage_does_not_stop_the_thread():
    pipeline = LivePipeline()
    bad, good = Item("bad", fail=True), Item("good")
    bad.release.set()
    good.release.set()
    pipeline.submit(bad)
    pipeline.wait()
    pipeline.submit(good)
    pipeline.wait()
    assert [i.name for i in pipeline.finished()] == ["bad", "good"]
    pipeline.close()


def test_close_runs_the_waiting_item_first():
    pipeline = LivePipeline()
    a, b = Item("a"), Item("b")
    pipeline.submit(a)
    assert a.started.wait(5)
    pipeline.submit(b)
    closer = threading.Thread(target=pipeline.close)
    closer.start()
    a.release.set()
    b.release.set()
    closer.join(5)
    assert not closer.is_alive() and b.started.is_set()
    assert [i.name for i in pipeline.finished()] == ["a", "b"]
