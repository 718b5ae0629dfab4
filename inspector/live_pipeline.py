"""Live inspection as a two-thread pipeline (Qt-free): the engine worker's thread prepares the
newest camera frame (cut, preprocess, classify) and finishes the frames the networks are done
with (maps, verdict, log, archive), while one network thread runs the networks on one prepared
frame after another. A frame prepared while the network thread is busy waits in a slot of one; the
network thread takes it the moment it is free, without a round trip through the worker.

So that the waiting frame is not older than it must be, the worker prepares it only shortly before
the network thread should be free: `next_prepare_in()` is the running median of the network
stage's time left, less the median time a preparation takes and `PREPARE_MARGIN_S`.

With the networks compiled for one thread, the network thread keeps one core busy with nothing
but the networks, and the other core does the rest of the app (display, camera, archive, the
worker's light stages). Measured with benchmarks/bench_live.py, see the README's live-mode table.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from typing import Callable

__all__ = ["LivePipeline", "PREPARE_MARGIN_S"]

log = logging.getLogger(__name__)

PREPARE_MARGIN_S = 0.006   # a prepared frame should wait about this long, so the network thread never does
TIMING_WINDOW = 15         # stage times the medians are taken over


class LivePipeline:
    """One network thread fed through a slot of one.

    `submit(item)` puts a prepared item in the slot (check `next_prepare_in()` first: None means
    the slot is taken); the network thread calls `item.run_networks()` and then `on_done()` (to
    wake the worker). `finished()` gives the items the networks are done with, in the order they
    were submitted. `setup()` runs once on the network thread before its first item."""

    def __init__(self, on_done: Callable[[], None] | None = None, setup: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.on_done = on_done
        self.clock = clock
        self._cond = threading.Condition()
        self._ready = None
        self._running = None
        self._busy_since: float | None = None
        self._done: deque = deque()
        self._network_s: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._prepare_s: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._closed = False
        self._setup = setup
        self._ready_since = 0.0
        self._idle_since: float | None = None
        self.items = 0                 # items the network thread has run
        self.network_idle_s = 0.0      # the network thread waiting for a prepared item (after its first)
        self.ready_wait_s = 0.0        # prepared items waiting for the network thread
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-networks")
        self._thread.start()

    # ----------------------------------------------------------------- worker side
    def next_prepare_in(self) -> float | None:
        """Seconds until the next frame should be prepared (0: now), or None while a prepared frame
        is waiting for the network thread."""
        with self._cond:
            if self._ready is not None:
                return None
            if self._busy_since is None or not self._network_s:
                return 0.0
            left = statistics.median(self._network_s) - (self.clock() - self._busy_since)
            prepare = statistics.median(self._prepare_s) if self._prepare_s else 0.0
            return max(0.0, left - prepare - PREPARE_MARGIN_S)

    def note_prepare(self, seconds: float) -> None:
        """How long the worker took to prepare a frame (for `next_prepare_in`)."""
        with self._cond:
            self._prepare_s.append(seconds)

    def submit(self, item) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the live pipeline is closed")
            if self._ready is not None:
                raise RuntimeError("a prepared frame is already waiting for the network thread")
            self._ready, self._ready_since = item, self.clock()
            self._cond.notify_all()

    def finished(self) -> list:
        """Items the networks are done with, oldest first (each once)."""
        with self._cond:
            out = list(self._done)
            self._done.clear()
        return out

    def pending(self) -> int:
        """Items submitted and not yet taken by `finished()`."""
        with self._cond:
            return (self._ready is not None) + (self._running is not None) + len(self._done)

    def wait(self) -> None:
        """Block until the network thread has run every item submitted so far."""
        with self._cond:
            while self._ready is not None or self._running is not None:
                self._cond.wait()

    def close(self) -> None:
        """Stop the network thread after the item it runs (a waiting one still runs first)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    # ----------------------------------------------------------------- network thread
    def _run(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception:  # noqa: BLE001 - the thread runs with its defaults then
                log.exception("live pipeline: the network thread's setup failed")
        while True:
            with self._cond:
                while self._ready is None and not self._closed:
                    self._cond.wait()
                if self._ready is None:
                    return
                item, self._ready = self._ready, None
                started = self.clock()
                self._running, self._busy_since = item, started
                self.ready_wait_s += started - self._ready_since
                if self._idle_since is not None:
                    self.network_idle_s += started - self._idle_since
            try:
                item.run_networks()
            except Exception:  # noqa: BLE001 - run_networks records its own errors; this is a last guard
                log.exception("live pipeline: the network stage failed")
            with self._cond:
                now = self.clock()
                self._network_s.append(now - started)
                self._running, self._busy_since, self._idle_since = None, None, now
                self.items += 1
                self._done.append(item)
                self._cond.notify_all()
            if self.on_done is not None:
                self.on_done()
