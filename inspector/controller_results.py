"""The controller's results concern: each inspected part (counters, banner, filmstrip, replay), the
end of a run, and the Results tab (query, false calls, CSV export). A part of InspectorController."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from inspection import DEFAULT_VIEW_MAX_SIDE, ERROR, Inspection, fit_within
from inspection.results_log import ResultFilter, ResultsLogError, export_csv

from .dialogs import BackgroundTask
from .display import VERDICT_TEXT
from .imageio import ImageReadError, read_image
from .main_window import LIVE_TAB, RESULTS_TAB
from .results_view import short_frame_id

PART_MEMORY = 60


class ResultsControl:
    """Inspected parts and the results tab: a part of InspectorController."""

    # ----------------------------------------------------------------- results
    def _on_inspected(self, insp: Inspection) -> None:
        now = time.monotonic()
        for counts in (self.counts, self.run_counts):
            counts["inspected"] += 1
            counts[insp.verdict] = counts.get(insp.verdict, 0) + 1
        self._inspected_times.append(now)
        if insp.score is not None:
            self._latencies.append(insp.latency_ms)
            self._ages.append(insp.age_ms)
        self.last_inspection = insp
        self._seq += 1
        key = insp.part_id if insp.part_id is not None else -self._seq
        self.parts[key] = insp
        while len(self.parts) > PART_MEMORY:
            self.parts.popitem(last=False)
        if insp.verdict == ERROR:
            self.message(f"{insp.where()}: {insp.error}", "error")
        if insp.score is not None:
            self.window.add_trend_point(insp.score, insp.verdict)
        self._strip_pending.append((key, insp))
        if not self.replaying:
            self.current_key = key
            self._part_dirty = True
        self._results_dirty = True
        self._new_rows = True
        self._check_run_complete()

    def _show_results(self) -> None:
        """Counters, banner and filmstrip for what arrived since the last repaint (at most the
        repaint rate, however fast the engine is)."""
        if not self._results_dirty:
            return
        self._results_dirty = False
        self.window.show_counts(self.counts)
        pending, self._strip_pending = self._strip_pending, []
        strip = []
        for key, insp in pending:
            caption = VERDICT_TEXT[insp.verdict] + (f" {insp.score:.3f}" if insp.score is not None else "")
            strip.append((key, insp.thumbnail, insp.verdict, caption,
                          f"{insp.where()}\n{caption}" + (f"\n{insp.error}" if insp.error else "")))
        self.window.add_filmstrip_parts(strip)
        if not self.replaying and self.last_inspection is not None:
            self._show_banner(self.last_inspection)

    def _show_banner(self, insp: Inspection, replay: bool = False) -> None:
        if insp.verdict == ERROR:
            detail = f"{insp.where()}: {insp.error}"
        else:
            cat = insp.category
            if insp.category_source == "classifier" and insp.category_confidence is not None:
                cat += f" (auto {100 * insp.category_confidence:.0f}%)"
            elif insp.category_source == "given":
                cat += " (pinned)"
            detail = (f"{cat} · review > {insp.review_threshold:.3f} · fail > {insp.fail_threshold:.3f}"
                      f"\n{short_frame_id(insp.frame_id)}")
            if insp.recipe:
                detail += f" · recipe {insp.recipe}"
        if replay:
            detail = f"Replay of part {insp.part_id if insp.part_id is not None else ''} · " + detail
        self.window.show_verdict(insp.verdict, insp.score, detail)

    def _check_run_complete(self) -> None:
        reader = self.reader
        if reader is None or self.run_reported or not reader.ended:
            return
        if self.run_counts["inspected"] < reader.frames_read:
            return
        self._show_results()
        self.window.refresh_trend()
        self.run_reported = True
        c = self.run_counts
        judged = c["pass"] + c["review"] + c["fail"]
        yield_text = f"{100.0 * c['pass'] / judged:.1f}%" if judged else "n/a"
        text = (f"Run finished: {c['inspected']} parts - {c['pass']} pass, {c['review']} review, {c['fail']} fail, "
                f"{c['error']} errors (yield {yield_text})")
        self.message(text, "ok" if not c["error"] else "warning")
        self.window.show_progress(f"{reader.frames_read} / {reader.frames_read} done")
        self.run_finished.emit(text)
        if self.window.current_tab() == RESULTS_TAB:
            self.refresh_results()

    def reset_counters(self) -> None:
        self._show_results()
        self.counts = self._zero_counts()
        self.window.show_counts(self.counts)
        self.window.clear_trend()
        self.message("Counters reset")

    def replay(self, key: int) -> None:
        self._show_results()
        part = self.parts.get(key)
        if part is None:
            self.message("That part is no longer in memory; find it in the Results tab", "warning")
            return
        self.replaying = True
        self.current_key = key
        self._part_dirty = True
        self.window.show_replay(f"REPLAY · part {part.part_id if part.part_id is not None else '-'}")
        self._show_banner(part, replay=True)
        self.window.show_tab(LIVE_TAB)

    def replay_logged(self, part_id: int) -> None:
        """Replay a part from the results table: from memory if recent, else its archived overlay."""
        if part_id in self.parts:
            self.replay(part_id)
            return
        try:
            row = self.results_reader.get(part_id)
        except ResultsLogError as e:
            self.message(str(e), "error")
            return
        if row is None:
            return
        image_path = row.get("overlay_path") or row.get("image_path") or row.get("thumbnail_path")
        if not image_path:
            self.message(f"Part {part_id}: no archived image (only failing and review parts are archived)", "warning")
            return
        try:
            rgb = read_image(image_path)
        except ImageReadError as e:
            self.message(f"Part {part_id}: {e}", "error")
            return
        part = Inspection(source=row["source"], frame_id=row["frame_id"], index=-1, verdict=row["verdict"],
                          score=row["score"], fail_threshold=row["threshold"] or 0.0,
                          review_threshold=row["review_threshold"] or 0.0, category=row["category"],
                          recipe=row["recipe"], part_id=part_id, error=row["error"],
                          view_frame=fit_within(rgb, DEFAULT_VIEW_MAX_SIDE))
        self.parts[part_id] = part
        self.replay(part_id)

    def back_to_live(self) -> None:
        self.replaying = False
        self.window.show_replay("")
        if self.last_inspection is not None:
            self.current_key = next(reversed(self.parts), None)
            self._show_banner(self.last_inspection)
        self._part_dirty = True

    # ----------------------------------------------------------------- results tab
    def refresh_results(self) -> None:
        flt = self.window.results_filter()
        try:
            rows = self.results_reader.query(flt)
            total = self.results_reader.count(flt)
            counts = self.results_reader.verdict_counts()
            categories = self.results_reader.categories()
        except ResultsLogError as e:
            self.window.show_results([], 0, str(e))
            return
        summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("pass", "review", "fail", "error"))
        self.window.show_results(rows, total, f"log: {summary}", categories)
        self._new_rows = False

    def mark_false_call(self, ids: list[int], flag: bool = True, note: str = "") -> None:
        """Mark (or unmark) parts as false calls; marking needs a reason. Each part is audited."""
        if not self.permit("false_call"):
            return
        if flag and not note.strip():
            self.message("A false call needs a reason: say why the verdict is wrong", "warning")
            return
        try:
            for part_id in ids:
                self.results_writer.mark_false_call(int(part_id), flag, note)
                self.audit("false_call", f"part {int(part_id)}", "" if flag else "false call",
                           note if flag else "unmarked")
        except ResultsLogError as e:
            self.message(str(e), "error")
        else:
            what = "marked as false calls" if flag else "no longer marked as false calls"
            self.message(f"{len(ids)} part(s) {what}" + (f": {note}" if flag and note else ""))
        self.refresh_results()

    def choose_csv_export(self, flt: ResultFilter | None = None) -> None:
        default = str(Path.home() / f"deco-inspector-results-{time.strftime('%Y%m%d-%H%M%S')}.csv")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export results as CSV", default, "CSV (*.csv)")
        if path:
            self.export_results(path, flt or ResultFilter())

    def export_results(self, path: str, flt: ResultFilter | None = None) -> BackgroundTask:
        """Export in a background thread through its own read-only connection."""
        flt = replace(flt or ResultFilter(), limit=None)
        task = BackgroundTask(lambda: export_csv(self.log_path, path, flt), self)
        self._tasks.add(task)

        def finished(result=None, error: str = "") -> None:
            self._tasks.discard(task)
            if error:
                self.message(f"CSV export to {path} failed: {error}", "error")
            else:
                self.message(f"Exported {result} rows to {path}", "ok")

        task.done.connect(lambda n: finished(n))
        task.failed.connect(lambda e: finished(error=e))
        self.message(f"Exporting results to {path}…")
        return task.start()
