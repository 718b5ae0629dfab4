"""The controller's run control: opening sources (folders, files, videos, cameras, streams, drops),
the source reader, and start / pause / step / stop. A part of InspectorController."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog


from .dialogs import CameraPickerDialog
from .imageio import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .reader import PLAYING, STOPPED, SourceReader
from .setting_values import short_source_text
from .sources import SourceError, SourceSpec, open_source, spec_for_drop

# Frames per engine batch the queue is sized for while no model is loaded (a loaded model's batch size wins)
QUEUE_BATCH_WITHOUT_MODEL = 8


class RunControl:
    """Sources and run control: a part of InspectorController."""

    # ----------------------------------------------------------------- sources
    def choose_source(self, kind: str) -> None:
        w = self.window
        start_dir = str(self.settings.value("source/dir", "") or "")
        spec = None
        if kind == "folder":
            folder = QFileDialog.getExistingDirectory(w, "Open a folder of images", start_dir)
            if folder:
                spec = SourceSpec("folder", folder, recursive=self.state.folder_recursive,
                                  watch=self.state.folder_watch)
        elif kind == "image":
            path, _ = QFileDialog.getOpenFileName(w, "Open an image", start_dir,
                                                  f"Images ({' '.join('*' + e for e in IMAGE_EXTENSIONS)})")
            if path:
                spec = SourceSpec("image", path)
        elif kind == "video":
            path, _ = QFileDialog.getOpenFileName(w, "Open a video", start_dir,
                                                  f"Videos ({' '.join('*' + e for e in VIDEO_EXTENSIONS)})")
            if path:
                spec = SourceSpec("video", path)
        elif kind == "camera":
            dialog = CameraPickerDialog(capture_factory=self.capture_factory, parent=w)
            if dialog.exec():
                spec = dialog.spec()
        elif kind == "stream":
            url, ok = QInputDialog.getText(w, "Network stream", "Stream URL (rtsp://, http://, …):",
                                           text=str(self.settings.value("source/url", "") or ""))
            if ok and url.strip():
                self.settings.setValue("source/url", url.strip())
                spec = SourceSpec("stream", url.strip())
        if spec is not None:
            if spec.kind in ("folder", "image", "video"):
                self.settings.setValue("source/dir", str(Path(spec.target).parent if spec.kind != "folder"
                                                         else Path(spec.target)))
            self.open_source(spec)

    def open_dropped(self, paths: list[str]) -> None:
        try:
            spec = spec_for_drop(paths, recursive=self.state.folder_recursive)
        except SourceError as e:
            self.message(f"Dropped: {e}", "error")
            return
        self.open_source(spec)

    def set_folder_options(self, recursive: bool, watch: bool) -> None:
        self.state.update(folder_recursive=recursive, folder_watch=watch)
        self.settings.setValue("source/recursive", recursive)
        self.settings.setValue("source/watch", watch)
        spec = self.source_spec
        if spec is not None and spec.kind == "folder" and (spec.recursive, spec.watch) != (recursive, watch):
            self.open_source(replace(spec, recursive=recursive, watch=watch),
                             autostart=self.reader is not None and self.reader.state == PLAYING)

    def open_source(self, spec: SourceSpec, autostart: bool = True) -> None:
        """Stop the current source and open `spec` (playing if `autostart` and a model is there)."""
        self._retire_reader()
        self.source_spec = spec
        self.window.show_source(short_source_text(spec.label()), spec.label())
        self.window.show_source_status(spec.label())
        self.window.show_watch_available(spec.kind == "folder")
        if spec.kind == "folder":
            self.set_folder_options(spec.recursive, spec.watch)
        self._new_reader(spec, autostart)

    def _new_reader(self, spec: SourceSpec, autostart: bool) -> None:
        source = open_source(spec, capture_factory=self.capture_factory, **self.live_source_options)
        batch = self.model_info.batch_size if self.model_info is not None else QUEUE_BATCH_WITHOUT_MODEL
        self.frames.set_policy("latest" if spec.live else "every", capacity=2 * batch)
        reader = SourceReader(source, self.frames, self)
        reader.frame_read.connect(self._on_frame_read)
        reader.status.connect(lambda text, level, r=reader: self._on_source_status(r, text, level))
        reader.opened.connect(lambda total, r=reader: self._on_source_opened(r, total))
        reader.failed.connect(lambda text, r=reader: self._on_source_failed(r, text))
        reader.finished.connect(lambda text, level, r=reader: self._on_source_finished(r, text, level))
        reader.state_changed.connect(lambda state, r=reader: self._on_run_state(r, state))
        self.reader = reader
        self.run_counts = self._zero_counts()
        self.run_reported = False
        self.window.show_progress("")
        self._latencies.clear()
        self._ages.clear()
        self._rate_since = time.monotonic()
        self._last_frames_read = 0
        self._live_frame = None
        can_run = self.model_info is not None or self.model_loading
        if autostart and not can_run:
            self.message("No model loaded: open a model (Model menu), then press Space", "warning")
        if autostart and self.model_loading and self.model_info is None:
            self._start_after_load = True
            autostart = False
        reader.start(play=autostart and can_run)
        if self.last_inspection is None:
            self.window.show_idle(f"{spec.label()}: press Space to start" if can_run
                                         else "Open a model to start (Model menu)")
        self.message(f"Opened {spec.label()}" + ("" if reader.state == PLAYING else " (paused: press Space to start)"))

    def _retire_reader(self) -> None:
        reader = self.reader
        if reader is None:
            return
        self.reader = None
        reader.stop()
        self.frames.clear()
        if reader.is_running():
            self._old_readers.append(reader)
            reader.thread_done.connect(lambda r=reader: self._old_readers.remove(r) if r in self._old_readers else None)

    def _reader_usable(self) -> bool:
        return self.reader is not None and not self.reader.ended and self.reader.state != STOPPED

    def _can_run(self) -> bool:
        """A model and a source to run; else a message saying which is missing."""
        if self.model_info is None:
            self.message("No model loaded: open a model first (Model ▸ Open model folder)", "warning")
        elif self.source_spec is None:
            self.message("No source: open a folder, image, video or camera first (Source menu)", "warning")
        return self.model_info is not None and self.source_spec is not None

    def start(self) -> None:
        if self.model_info is None and self.model_loading:
            self._start_after_load = True
            self.message("Will start as soon as the model is loaded")
            return
        if not self._can_run():
            return
        if not self._reader_usable():
            self._retire_reader()
            self._new_reader(self.source_spec, autostart=True)
            return
        self.reader.play()

    def pause(self) -> None:
        if self._reader_usable():
            self.reader.pause()

    def toggle_run(self) -> None:
        if self._reader_usable() and self.reader.state == PLAYING:
            self.pause()
        else:
            self.start()

    def step(self, part_id: str = "") -> None:
        """Inspect one more frame (paused); `part_id` names it (a trigger from the line)."""
        if not self._can_run():
            return
        if not self._reader_usable():
            self._retire_reader()
            self._new_reader(self.source_spec, autostart=False)
        self.reader.step(part_id=part_id)

    def stop(self) -> None:
        if self.window.is_drawing_roi():
            self.start_roi_drawing(False)
            return
        if self.reader is None:
            return
        name = self.reader.source.name
        self._retire_reader()
        self._on_run_state(None, STOPPED)
        self.message(f"Stopped {name}")

    def _on_run_state(self, reader: SourceReader | None, state: str) -> None:
        if reader is not None and reader is not self.reader:
            return
        has_source = self.source_spec is not None
        self.window.show_run_state(state, has_source)

    def _on_source_opened(self, reader: SourceReader, total: int | None) -> None:
        if total and reader is self.reader:
            self.window.show_progress(f"0 / {total}")

    def _on_source_status(self, reader: SourceReader, text: str, level: str) -> None:
        if reader is not self.reader:
            return
        self.window.show_source_status(text, level)
        self._source_note_until = time.monotonic() + (4.0 if level != "info" else 2.0)
        self.message(text, level)

    def _on_source_failed(self, reader: SourceReader, text: str) -> None:
        if reader is self.reader:
            self.window.show_source_status("source failed", "error")
            self._on_run_state(None, STOPPED)
        self.message(text, "error")

    def _on_source_finished(self, reader: SourceReader, text: str, level: str) -> None:
        if reader is not self.reader:
            return
        self.message(text, level)
        self.window.show_source_status(text if level != "info" else f"{reader.source.name}: ended", level)
        self._on_run_state(None, STOPPED)
        self._check_run_complete()

    def _on_frame_read(self, frame) -> None:
        if frame.rgb is not None and frame.live:
            self._live_frame = frame.rgb
            self._live_dirty = True
