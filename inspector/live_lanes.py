"""Staggered live inspection (Qt-free): each CPU lane takes the newest camera frame as soon as it is
free and runs the engine step on it alone, so frames never wait for a batch to fill or for the
other lane to finish.

With batches of one frame per lane (the previous live mode) both lanes started together on the
newest frame and the one before it and waited for each other; the older frame's age carried the
wait, and the cores idled while the worker thread judged, logged and published the batch. Here the
engine worker's thread only records (judge, log, publish: `InspectionSession.record`) while the
lanes compute (`InspectionSession.predict`), and a lane starts its next frame the moment it is
done. Records are made in the order the frames were started.

Lane threads run PyTorch with one intra-op thread and, on Linux, `LANE_NICENESS` below the
window's priority, so that the display keeps its frame rate when the engine has work for every
core.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

__all__ = ["LANE_NICENESS", "LiveLanes"]

log = logging.getLogger(__name__)

# How much lower (nice steps) lane threads run than the rest of the app (0: the same priority).
LANE_NICENESS = 4


def _lane_thread_setup() -> None:
    """One intra-op thread for this lane thread, and a lower scheduling priority where possible."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if LANE_NICENESS and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + LANE_NICENESS))
        except OSError as e:  # not permitted or not per-thread on this system: run at the app's priority
            log.debug("lane priority unchanged: %s", e)


class LiveLanes:
    """Up to `size` engine steps in flight, one per lane thread.

    `start(work, *args)` runs `work(*args)` on a free lane (check `free` first); `finished()` gives
    (args, result or exception) of the steps done, in the order they were started, stopping at the
    first one still running. `on_done` is called from the lane thread after each step (to wake the
    thread that records). `wait()` blocks until no step is running."""

    def __init__(self, size: int, on_done: Callable[[], None] | None = None):
        if size < 1:
            raise ValueError(f"live lanes: size must be at least 1, got {size}")
        self.size = size
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="live-lane",
                                        initializer=_lane_thread_setup)
        self._started: deque[tuple[tuple, Future]] = deque()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        """Steps started and not yet done."""
        with self._lock:
            return sum(not f.done() for _, f in self._started)

    @property
    def free(self) -> int:
        """Lanes that would start a step now."""
        return self.size - self.running

    def start(self, work: Callable, *args) -> None:
        future = self._pool.submit(work, *args)
        with self._lock:
            self._started.append((args, future))
        if self.on_done is not None:
            future.add_done_callback(lambda _: self.on_done())

    def finished(self) -> list[tuple[tuple, object]]:
        """[(args, result)] of the steps done, oldest first; an exception a step raised is its result."""
        out = []
        with self._lock:
            while self._started and self._started[0][1].done():
                args, future = self._started.popleft()
                error = future.exception()
                out.append((args, error if error is not None else future.result()))
        return out

    def pending(self) -> int:
        """Steps started and not yet taken by `finished()` (done or not)."""
        with self._lock:
            return len(self._started)

    def wait(self) -> None:
        """Block until every step started so far is done."""
        with self._lock:
            futures = [f for _, f in self._started]
        for f in futures:
            f.exception()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
