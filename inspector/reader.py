"""The thin Qt side of a source: a thread that reads frames and hands them on.

Each frame read goes to the FrameQueue (for the engine worker) and out through
`frame_read` (for the live display). Play / pause / step / stop are thread-safe and never
wait; a stopped reader finishes on its own, even if its camera is stuck in a read. The
thread is a daemon Python thread, so a camera stuck inside OpenCV can never keep the app
from closing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from .frame_queue import FrameQueue
from .sources import FrameSource, SourceError

__all__ = ["SourceReader", "PLAYING", "PAUSED", "STOPPED"]

PLAYING, PAUSED, STOPPED = "playing", "paused", "stopped"


class SourceReader(QObject):
    """Reads one FrameSource in its own thread."""

    frame_read = Signal(object)
    status = Signal(str, str)
    opened = Signal(object)   # the source's frame count (None: unknown, or a live source)
    failed = Signal(str)
    finished = Signal(str, str)
    state_changed = Signal(str)
    thread_done = Signal()

    def __init__(self, source: FrameSource, frames: FrameQueue, parent=None):
        super().__init__(parent)
        self.source = source
        self.frames = frames
        self.frames_read = 0
        self.last_frame_time = time.monotonic()
        self.state = PAUSED
        self.ended = False
        self._cond = threading.Condition()
        self._playing = False
        self._steps = 0
        self._part_ids: deque[str] = deque()   # names for the next stepped frames (a trigger's part id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"reader {source.name}")
        source.on_status = self._on_source_status

    @property
    def live(self) -> bool:
        return self.source.live

    def start(self, play: bool = True) -> None:
        """Start the reading thread, playing or paused."""
        self._playing = play
        self._set_state(PLAYING if play else PAUSED)
        self._thread.start()

    def play(self) -> None:
        with self._cond:
            self._playing = True
            self._cond.notify_all()
        self._set_state(PLAYING)

    def pause(self) -> None:
        with self._cond:
            self._playing = False
            self._steps = 0
            self._part_ids.clear()
            self._cond.notify_all()
        self._set_state(PAUSED)

    def step(self, count: int = 1, part_id: str = "") -> None:
        """Read `count` more frames, then pause. `part_id` (a trigger's) names the last of them in the
        results log and the line outputs instead of the source's frame id."""
        with self._cond:
            self._playing = False
            if part_id:
                self._part_ids.extend([""] * (self._steps + max(1, count) - 1 - len(self._part_ids)) + [part_id])
            self._steps += max(1, count)
            self._cond.notify_all()
        self._set_state(PAUSED)

    def stop(self) -> None:
        """Ask the thread to end; returns at once."""
        self._stop.set()
        self.source.request_stop()
        with self._cond:
            self._cond.notify_all()
        self._set_state(STOPPED)

    def wait(self, ms: int) -> bool:
        """Wait for the thread to end (only at shutdown); True if it did."""
        if self._thread.is_alive():
            self._thread.join(ms / 1000.0)
        return not self._thread.is_alive()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    @property
    def seconds_since_frame(self) -> float:
        return time.monotonic() - self.last_frame_time

    def _set_state(self, state: str) -> None:
        if state != self.state and not (self.state == STOPPED and state != STOPPED):
            self.state = state
            self.state_changed.emit(state)

    def _on_source_status(self, text: str, level: str) -> None:
        self.status.emit(text, level)

    def _next_permission(self) -> bool:
        with self._cond:
            while not self._stop.is_set() and not self._playing and self._steps == 0:
                self._cond.wait(0.2)
            if self._stop.is_set():
                return False
            if not self._playing:
                self._steps -= 1
            return True

    def _run(self) -> None:
        try:
            self._read_frames()
        finally:
            self.thread_done.emit()

    def _read_frames(self) -> None:
        try:
            self.source.open()
        except SourceError as e:
            self.ended = True
            self.failed.emit(str(e))
            return
        except Exception as e:  # noqa: BLE001 - a broken source must not take the app down
            self.ended = True
            self.failed.emit(f"{self.source.name}: cannot open ({type(e).__name__}: {e})")
            return
        self.opened.emit(self.source.total)
        self.last_frame_time = time.monotonic()
        message, level = "", "info"
        try:
            while self._next_permission():
                frame = self.source.read()
                if frame is None:
                    message = self.source.end_message or f"{self.source.name}: ended"
                    level = self.source.end_level
                    break
                with self._cond:
                    part_id = self._part_ids.popleft() if self._part_ids and not self._playing else ""
                if part_id:
                    frame = replace(frame, frame_id=part_id)
                self.frames_read += 1
                self.last_frame_time = time.monotonic()
                self.frame_read.emit(frame)
                if not self.frames.put(frame, stop=self._stop):
                    break
            if self._stop.is_set() and not message:
                message = f"{self.source.name}: stopped after {self.frames_read} frames"
        except Exception as e:  # noqa: BLE001
            message = f"{self.source.name}: reading failed ({type(e).__name__}: {e}); the run ended"
            level = "error"
        finally:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001 - closing a broken capture is best effort
                pass
        self.ended = True
        self.finished.emit(message, level)
