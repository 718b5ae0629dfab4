"""The controller's display pump and live statistics: the display timer repaints the newest frame and
part at most `repaint_hz` times a second, and once a second the statistics (engine and display
rates, latency, frame age, source rate) are shown. A part of InspectorController."""

from __future__ import annotations

import time
from dataclasses import replace


from inspection import DEFAULT_VIEW_MAX_SIDE, fit_within

from .display import DisplayOptions, render_part
from .main_window import RESULTS_TAB
from .reader import PLAYING

RATE_WINDOW_S = 5.0
TREND_REFRESH_S = 0.2  # the plot is the most expensive widget to repaint: at most 5 times a second
LIVE_INSET_SIDE = 480


class DisplayPump:
    """The display pump and the live statistics: a part of InspectorController."""

    # ----------------------------------------------------------------- display
    def set_display(self, options: DisplayOptions) -> None:
        self.display = options
        self.window.show_display_options(options)
        self.display_timer.setInterval(max(1, round(1000 / options.repaint_hz)))
        self._part_dirty = True
        if self.context.full_heatmap != options.full_heatmap:  # the reject archive draws overlays the same way
            self.context = replace(self.context, full_heatmap=options.full_heatmap)
            self._push_context()

    def _on_display_tick(self) -> None:
        w = self.window
        self._show_results()
        shown = False
        live = self.reader is not None and self.reader.live
        if self._live_dirty and self._live_frame is not None:
            self._live_dirty = False
            if live:
                w.show_live_inset(fit_within(self._live_frame, LIVE_INSET_SIDE, fast=True))
                if self.current_key is None:
                    w.show_live_image(fit_within(self._live_frame, DEFAULT_VIEW_MAX_SIDE))
                shown = True
        elif not live and w.has_live_inset():
            w.show_live_inset(None)
        if self._part_dirty:
            self._part_dirty = False
            part = self.parts.get(self.current_key) if self.current_key is not None else None
            if part is not None:
                image = render_part(part, self.display)
                if image is not None:
                    w.show_live_image(image)
                    shown = True
                if self.display.reconstruction:
                    w.show_reconstruction(part.reconstruction)
        if shown:
            self.display_frames += 1
        now = time.monotonic()
        if now - self._last_trend_refresh >= TREND_REFRESH_S:
            self._last_trend_refresh = now
            w.refresh_trend()

    # ----------------------------------------------------------------- live statistics
    def _on_stats_tick(self) -> None:
        now = time.monotonic()
        dt = max(now - self._last_tick, 1e-3)
        self._last_tick = now
        window = min(RATE_WINDOW_S, now - self._rate_since)
        recent = sum(1 for t in self._inspected_times if now - t <= window)
        engine_fps = recent / window if window > 0.5 else 0.0
        display_fps = (self.display_frames - self._last_display_frames) / dt
        self._last_display_frames = self.display_frames
        latency = sorted(self._latencies)[len(self._latencies) // 2] if self._latencies else 0.0
        age = sorted(self._ages)[len(self._ages) // 2] if self._ages else 0.0
        self.stats.update(engine_fps=engine_fps, display_fps=display_fps, latency_ms=latency, age_ms=age)
        w = self.window
        if self._inspected_times and now - self._inspected_times[-1] < 5.0:
            live = self.reader is not None and self.reader.live
            w.show_engine_status(f"engine {latency:.0f} ms/part · {engine_fps:.1f} parts/s"
                                    + (f" · age {age:.0f} ms" if live else ""))
        else:
            w.show_engine_status("engine idle")
        w.show_display_rate(f"display {display_fps:.0f} fps")
        reader = self.reader
        if reader is None:
            return
        read = reader.frames_read
        source_fps = (read - self._last_frames_read) / dt
        self._last_frames_read = read
        self.stats["source_fps"] = source_fps
        total = reader.source.total
        if total and not self.run_reported:
            w.show_progress(f"{self.run_counts['inspected']} / {total} inspected")
        if reader.live and not reader.ended and reader.state == PLAYING:
            since = reader.seconds_since_frame
            if since > self.stall_seconds:
                w.show_source_status(f"{reader.source.name}: no frame for {since:.0f} s (stalled?)", "warning")
                self._source_note_until = now + 1.5
            elif now > self._source_note_until:
                dropped = self.frames.dropped
                w.show_source_status(f"{reader.source.name} · {source_fps:.0f} fps in"
                                     + (f" · {dropped} not inspected (engine busy)" if dropped else ""), "ok")
        if self._new_rows and w.current_tab() == RESULTS_TAB:
            self.refresh_results()
