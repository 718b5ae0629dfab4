"""Where frames come from: cameras, network streams, video files, image folders and files.

Qt-free. A `FrameSource` is opened, then `read()` is called from one reader thread until it
returns None (the source has ended; `end_message` says why). Live sources (cameras, streams)
reconnect by themselves with backoff and report what they are doing through `on_status`;
unreadable images come back as frames with `error` set, so a run goes on past them. What to open
(`SourceSpec`) is described in inspector/source_spec.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from inspection import Frame

from .imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, printable, read_image
from .source_spec import SourceError, SourceSpec, demo_spec, hide_password, spec_for_drop, spec_for_path

__all__ = [
    "Frame",
    "SourceError",
    "SourceSpec",
    "FrameSource",
    "LiveCaptureSource",
    "VideoFileSource",
    "FolderSource",
    "ImageFilesSource",
    "CameraInfo",
    "probe_cameras",
    "spec_for_path",
    "spec_for_drop",
    "demo_spec",
    "open_source",
    "bgr_to_rgb",
]

StatusCallback = Callable[[str, str], None]
CaptureFactory = Callable[..., object]

def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV frame (gray, BGR or BGRA) -> HxWx3 RGB uint8."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FrameSource:
    """Base class: open(), read() until None, close(). `request_stop()` may be called from any
    thread and makes a blocked read() return soon."""

    live = False

    def __init__(self, name: str):
        self.name = name
        self.end_message = ""
        self.end_level = "info"
        self.total: int | None = None
        self.on_status: StatusCallback | None = None
        self._stop = threading.Event()
        self._index = 0

    def open(self) -> None:
        """Prepare to read; raises SourceError when the source cannot be used at all."""

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what open() took."""

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _status(self, text: str, level: str = "info") -> None:
        if self.on_status is not None:
            self.on_status(text, level)

    def _frame(self, rgb: np.ndarray | None, frame_id: str, error: str = "") -> Frame:
        frame = Frame(rgb, printable(self.name), printable(frame_id), self._index, time.monotonic(), self.live,
                      printable(error))
        self._index += 1
        return frame


class LiveCaptureSource(FrameSource):
    """A camera (index) or network stream (URL) through cv2.VideoCapture, kept alive:
    empty frames, stalls (a read slower than `stall_timeout`) and unplugging release the
    capture and reconnect with exponential backoff, reporting each step through `on_status`."""

    live = True

    def __init__(self, target: int | str, name: str | None = None, width: int = 0, height: int = 0,
                 fps: float = 0.0, capture_factory: CaptureFactory | None = None,
                 failures_before_reconnect: int = 5, stall_timeout: float = 2.0,
                 backoff_start: float = 0.5, backoff_max: float = 8.0):
        is_camera = isinstance(target, int) or str(target).isdigit()
        self.target = int(target) if is_camera else str(target)
        super().__init__(name or (f"camera {self.target}" if is_camera else f"stream {hide_password(str(target))}"))
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.capture_factory = capture_factory or cv2.VideoCapture
        self.failures_before_reconnect = max(1, failures_before_reconnect)
        self.stall_timeout = stall_timeout
        self.backoff_start, self.backoff_max = backoff_start, backoff_max
        self.reconnects = 0
        self._cap = None
        self._failures = 0
        self._delay = backoff_start
        self._attempt = 0
        self._lost = False

    def _connect(self):
        try:
            cap = self.capture_factory(self.target)
        except (cv2.error, OSError, RuntimeError) as e:
            return None, str(e) or type(e).__name__
        if cap is None or not cap.isOpened():
            problem = getattr(cap, "problem", "")   # a GenICamCapture says why
            if cap is not None:
                cap.release()
            return None, problem or "cannot open (not connected, wrong index/URL, or in use by another program)"
        for warning in getattr(cap, "warnings", ()):
            self._status(f"{self.name}: {warning}", "warning")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value:
                cap.set(prop, value)
        return cap, ""

    def open(self) -> None:
        self._cap, problem = self._connect()
        if self._cap is None:
            raise SourceError(f"{self.name}: {problem}")
        self._status(f"{self.name}: connected", "info")

    def _release_capture(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            except cv2.error:
                pass
            self._cap = None

    def _drop_capture(self, why: str) -> None:
        self._release_capture()
        self._lost = True
        self._attempt = 0
        self._delay = self.backoff_start
        self._status(f"{self.name}: {why} - reconnecting", "warning")

    def _reconnect_step(self) -> None:
        self._attempt += 1
        self._status(f"{self.name}: reconnecting (attempt {self._attempt}, waiting {self._delay:.1f} s)", "warning")
        if self._stop.wait(self._delay):
            return
        self._cap, problem = self._connect()
        if self._cap is None:
            self._delay = min(self._delay * 2, self.backoff_max)
            self._status(f"{self.name}: reconnect attempt {self._attempt} failed: {problem}", "warning")

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            if self._cap is None:
                self._reconnect_step()
                continue
            started = time.monotonic()
            try:
                ok, image = self._cap.read()
            except cv2.error as e:
                ok, image = False, None
                self._status(f"{self.name}: read error: {e}", "warning")
            waited = time.monotonic() - started
            if self._stop.is_set():
                break
            if ok and image is not None and image.size > 0:
                if self._lost:
                    self.reconnects += 1
                    self._lost = False
                    self._status(f"{self.name}: reconnected", "info")
                self._failures = 0
                return self._frame(bgr_to_rgb(image), f"{self.name} #{self._index}")
            self._failures += 1
            if waited > self.stall_timeout:
                self._drop_capture(f"stalled (no frame for {waited:.1f} s)")
            elif not self._cap.isOpened():
                self._drop_capture("disconnected")
            elif self._failures >= self.failures_before_reconnect:
                self._drop_capture(f"{self._failures} empty frames in a row")
            else:
                self._stop.wait(0.01)
        self.end_message = f"{self.name}: stopped"
        return None

    def close(self) -> None:
        self._release_capture()


class VideoFileSource(FrameSource):
    """Every frame of a video file, in order. A file that stops decoding before its announced
    frame count ends the run with a message saying so."""

    def __init__(self, path, capture_factory: CaptureFactory | None = None):
        self.path = Path(path)
        super().__init__(f"video {self.path.name}")
        self.capture_factory = capture_factory or cv2.VideoCapture
        self.fps = 0.0
        self._cap = None

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        try:
            self._cap = self.capture_factory(str(self.path))
        except cv2.error as e:
            raise SourceError(f"{self.path}: cannot open video ({e})") from None
        if self._cap is None or not self._cap.isOpened():
            raise SourceError(f"{self.path}: cannot open video (unsupported codec or not a video file)")
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if count > 0 else None
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read(self) -> Frame | None:
        if self._cap is None or self._stop.is_set():
            self.end_message = f"{self.path.name}: stopped at frame {self._index}"
            return None
        problem = ""
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            ok, image, problem = False, None, str(e).strip().splitlines()[-1] if str(e).strip() else "decoder error"
        if ok and image is not None and image.size > 0:
            return self._frame(bgr_to_rgb(image), f"{self.path}#{self._index}")
        n = self._index
        self.end_level = "warning"
        if n == 0:
            self.end_message = f"{self.path}: the video has no readable frames (corrupt file or missing codec)"
        elif problem:
            self.end_message = f"{self.path}: decoding failed at frame {n} ({problem}); the video is corrupt"
        elif self.total and n < self.total - 1:
            self.end_message = (f"{self.path}: the video ended early at frame {n} of {self.total} "
                                f"(truncated or corrupt file)")
        else:
            self.end_message = f"{self.path.name}: end of video ({n} frames)"
            self.end_level = "info"
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(FrameSource):
    """Images in a folder, sorted (recursively if asked). With `watch`, keeps waiting for new
    files after the existing ones, and reads a new file only once its size has stayed the
    same for `settle_polls` polls and it decodes (a file still being copied is not read)."""

    def __init__(self, folder, recursive: bool = True, watch: bool = False, poll_interval: float = 0.5,
                 settle_polls: int = 2, settle_timeout: float = 10.0,
                 reader: Callable[[Path], np.ndarray] = read_image):
        self.folder = Path(folder)
        super().__init__(f"{'watch' if watch else 'folder'} {self.folder.name or self.folder}")
        self.recursive, self.watch = recursive, watch
        self.poll_interval, self.settle_polls, self.settle_timeout = poll_interval, max(1, settle_polls), settle_timeout
        self.reader = reader
        self._pending: list[Path] = []
        self._seen: set[Path] = set()
        self._candidates: dict[Path, tuple[int, int, float]] = {}

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: no such folder")
        try:
            files = list_images(self.folder, self.recursive)
        except OSError as e:
            raise SourceError(f"{self.folder}: cannot list the folder ({e.strerror or e})") from None
        if not files and not self.watch:
            raise SourceError(f"{self.folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}"
                              f"{', in subfolders too' if self.recursive else ''})")
        self._pending = list(files)
        self._seen = set(files)
        self.total = None if self.watch else len(files)
        if self.watch:
            self._status(f"watching {self.folder} for new images ({len(files)} already there)", "info")

    def _load(self, path: Path) -> Frame:
        try:
            return self._frame(self.reader(path), str(path))
        except ImageReadError as e:
            return self._frame(None, str(path), e.problem)

    def _poll_new(self) -> Frame | None:
        """One look at the folder: returns a frame for a new file that has settled, or None."""
        try:
            files = list_images(self.folder, self.recursive)
        except OSError as e:
            self._status(f"{self.folder}: cannot list the folder ({e.strerror or e})", "warning")
            return None
        now = time.monotonic()
        ready: list[Path] = []
        for path in files:
            if path in self._seen:
                continue
            try:
                size = path.stat().st_size
            except OSError:
                self._candidates.pop(path, None)
                continue
            prev = self._candidates.get(path)
            if prev is None or prev[0] != size or size == 0:
                self._candidates[path] = (size, 0, prev[2] if prev else now)
                continue
            steady = prev[1] + 1
            self._candidates[path] = (size, steady, prev[2])
            if steady >= self.settle_polls - 1 or self.settle_polls == 1:
                ready.append(path)
        for path in ready:
            try:
                rgb = self.reader(path)
            except ImageReadError as e:
                if now - self._candidates[path][2] < self.settle_timeout:
                    continue
                self._seen.add(path)
                self._candidates.pop(path, None)
                return self._frame(None, str(path), e.problem)
            self._seen.add(path)
            self._candidates.pop(path, None)
            return self._frame(rgb, str(path))
        return None

    def read(self) -> Frame | None:
        if self._pending and not self._stop.is_set():
            return self._load(self._pending.pop(0))
        if not self.watch:
            self.end_message = (f"{self.folder}: stopped" if self._stop.is_set()
                                else f"{self.folder}: finished ({self._index} images)")
            return None
        while not self._stop.is_set():
            frame = self._poll_new()
            if frame is not None:
                return frame
            self._stop.wait(self.poll_interval)
        self.end_message = f"stopped watching {self.folder} ({self._index} images)"
        return None


class ImageFilesSource(FrameSource):
    """A fixed list of image files (one opened image, or several dropped ones)."""

    def __init__(self, paths, reader: Callable[[Path], np.ndarray] = read_image, name: str = ""):
        self.paths = [Path(p) for p in paths]
        if not name:
            name = f"image {self.paths[0].name}" if len(self.paths) == 1 else f"{len(self.paths)} files"
        super().__init__(name)
        self.reader = reader
        self.total = len(self.paths)

    def open(self) -> None:
        if not self.paths:
            raise SourceError("no image files given")

    def read(self) -> Frame | None:
        if self._index >= len(self.paths) or self._stop.is_set():
            self.end_message = f"finished {self._index} of {len(self.paths)} images"
            return None
        path = self.paths[self._index]
        try:
            return self._frame(self.reader(path), str(path))
        except ImageReadError as e:
            return self._frame(None, str(path), e.problem)


@dataclass(frozen=True)
class CameraInfo:
    """A camera index that opened, with the mode it opened in."""

    index: int
    width: int
    height: int
    fps: float
    backend: str = ""

    def label(self) -> str:
        fps = f" @ {self.fps:.0f} fps" if self.fps > 0 else ""
        backend = f" ({self.backend})" if self.backend else ""
        return f"Camera {self.index}: {self.width}x{self.height}{fps}{backend}"


def probe_cameras(max_index: int = 5, capture_factory: CaptureFactory | None = None,
                  stop: threading.Event | None = None) -> list[CameraInfo]:
    """Camera indexes 0..max_index that open and deliver a frame (slow: run it off the GUI thread)."""
    factory = capture_factory or cv2.VideoCapture
    found: list[CameraInfo] = []
    for index in range(max_index + 1):
        if stop is not None and stop.is_set():
            break
        try:
            cap = factory(index)
        except (cv2.error, OSError, RuntimeError):
            continue
        try:
            if cap is None or not cap.isOpened():
                continue
            ok, image = cap.read()
            if not ok or image is None:
                continue
            backend = ""
            if hasattr(cap, "getBackendName"):
                try:
                    backend = cap.getBackendName()
                except cv2.error:
                    backend = ""
            found.append(CameraInfo(index, int(image.shape[1]), int(image.shape[0]),
                                    float(cap.get(cv2.CAP_PROP_FPS) or 0.0), backend))
        finally:
            if cap is not None:
                cap.release()
    return found


def open_source(spec: SourceSpec, capture_factory: CaptureFactory | None = None, **live_options) -> FrameSource:
    """The FrameSource for a spec (not yet opened). `live_options` go to LiveCaptureSource
    (stall_timeout, backoff_start, ...)."""
    if spec.kind == "stream" and spec.target.lower().startswith("genicam://"):
        from .genicam import GenICamCapture

        return LiveCaptureSource(spec.target, name=spec.name or None, capture_factory=capture_factory or GenICamCapture,
                                 **live_options)
    if spec.kind in ("camera", "stream"):
        return LiveCaptureSource(spec.target, width=spec.width, height=spec.height, fps=spec.fps,
                                 capture_factory=capture_factory, **live_options)
    if spec.kind == "video":
        return VideoFileSource(spec.target, capture_factory=capture_factory)
    if spec.kind == "folder":
        return FolderSource(spec.target, recursive=spec.recursive, watch=spec.watch)
    if spec.kind == "image":
        return ImageFilesSource([spec.target])
    return ImageFilesSource(list(spec.paths), name=spec.name)
