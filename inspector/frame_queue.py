"""The hand-off between a source reader thread and the engine worker (Qt-free).

Two policies:
- 'latest' (cameras, streams): holds the newest `keep` frames (1 by default; the engine's lane
  count, so that each CPU lane gets a frame); a newer frame pushes out the oldest one that the
  engine has not started on, so the engine always works on the newest frames and latency stays
  bounded (pushed-out frames are counted in `dropped`).
- 'every' (folders, videos, watched folders): a bounded FIFO; `put` waits while it is full,
  so every frame is inspected and the reader never runs far ahead of the engine.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

__all__ = ["FrameQueue", "POLICIES"]

POLICIES = ("latest", "every")


class FrameQueue:
    """Thread-safe frame hand-off; `on_put` (if set) is called after each put, from the putting
    thread, so the consumer can be woken up."""

    def __init__(self, policy: str = "latest", capacity: int = 16):
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._policy = "latest"
        self.capacity = max(1, capacity)
        self.keep = 1
        self.dropped = 0
        self.on_put: Callable[[], None] | None = None
        self.set_policy(policy)

    @property
    def policy(self) -> str:
        return self._policy

    def set_policy(self, policy: str, capacity: int | None = None, keep: int | None = None) -> None:
        """capacity: the 'every' FIFO's size; keep: how many newest frames 'latest' holds."""
        if policy not in POLICIES:
            raise ValueError(f"unknown frame queue policy {policy!r}; expected one of {POLICIES}")
        with self._cond:
            self._policy = policy
            if capacity is not None:
                self.capacity = max(1, capacity)
            if keep is not None:
                self.keep = max(1, keep)
            self._items.clear()
            self.dropped = 0
            self._cond.notify_all()

    def put(self, frame, stop: threading.Event | None = None) -> bool:
        """Add a frame. 'latest' never waits; 'every' waits for room until `stop` is set.
        Returns False when the frame was not queued because of `stop`."""
        with self._cond:
            if self._policy == "latest":
                while len(self._items) >= self.keep:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(0.05)
                if stop is not None and stop.is_set():
                    return False
            self._items.append(frame)
            self._cond.notify_all()
        callback = self.on_put
        if callback is not None:
            callback()
        return True

    def take(self, max_items: int = 1, timeout: float = 0.0) -> list:
        """Up to `max_items` frames, oldest first; waits up to `timeout` s for the first one."""
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            out = []
            while self._items and len(out) < max(1, max_items):
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out

    def take_newest(self) -> list:
        """The newest frame alone ([] when empty); older waiting frames are dropped (counted in `dropped`)."""
        with self._cond:
            if not self._items:
                return []
            newest = self._items.pop()
            self.dropped += len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return [newest]

    def clear(self) -> None:
        with self._cond:
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
