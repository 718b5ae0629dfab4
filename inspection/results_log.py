"""The results log: one SQLite row per inspected part, plus archived images (Qt-free).

SQLite in WAL mode: the engine worker writes through its own connection, the table view
and CSV export read through theirs, and readers never block the writer. A false call is
recorded in its own fields (flag, note, time) and never changes the original verdict.
Archiving failures (disk full, permissions) are stored with the row, which is kept.

Schema 2 added what a row was judged with (recipe_version; model_id and the thresholds were there),
where on the part its anomaly map peaked (defect_x, defect_y: 0-1 over the inspected region), running
sums per quarter hour for the statistics (kept by triggers) and the append-only `audit` table
(inspection/audit.py). A log of schema 1 gains them when it is opened for writing.
"""

from __future__ import annotations

import csv
import os
import queue
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.imageio import printable, write_image
from engine.overlay import operator_overlay
from engine.version import __version__

__all__ = [
    "SCHEMA_VERSION",
    "COLUMNS",
    "CSV_COLUMNS",
    "ResultsLogError",
    "ResultFilter",
    "ResultsLog",
    "ResultsReader",
    "Archiver",
    "ArchiveResult",
    "ArchiveJob",
    "ArchiveQueue",
    "export_csv",
    "now_text",
]

SCHEMA_VERSION = 2

COLUMNS = (
    "time", "source", "frame_id", "category", "score", "threshold", "review_threshold", "verdict",
    "model_id", "recipe", "latency_ms", "error", "image_path", "overlay_path", "thumbnail_path",
    "archive_error", "app_version", "recipe_version", "defect_x", "defect_y",
)
CSV_COLUMNS = ("id",) + COLUMNS + ("false_call", "false_call_note", "false_call_time")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL,
    app_version TEXT NOT NULL,
    applied     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    time             TEXT NOT NULL,
    source           TEXT NOT NULL DEFAULT '',
    frame_id         TEXT NOT NULL DEFAULT '',
    category         TEXT NOT NULL DEFAULT '',
    score            REAL,
    threshold        REAL,
    review_threshold REAL,
    verdict          TEXT NOT NULL CHECK (verdict IN ('pass', 'review', 'fail', 'error')),
    model_id         TEXT NOT NULL DEFAULT '',
    recipe           TEXT NOT NULL DEFAULT '',
    latency_ms       REAL,
    error            TEXT NOT NULL DEFAULT '',
    image_path       TEXT NOT NULL DEFAULT '',
    overlay_path     TEXT NOT NULL DEFAULT '',
    thumbnail_path   TEXT NOT NULL DEFAULT '',
    archive_error    TEXT NOT NULL DEFAULT '',
    app_version      TEXT NOT NULL DEFAULT '',
    false_call       INTEGER NOT NULL DEFAULT 0,
    false_call_note  TEXT NOT NULL DEFAULT '',
    false_call_time  TEXT NOT NULL DEFAULT '',
    recipe_version   TEXT NOT NULL DEFAULT '',
    defect_x         REAL,
    defect_y         REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY,
    time       TEXT NOT NULL,
    user       TEXT NOT NULL,
    role       TEXT NOT NULL,
    station    TEXT NOT NULL DEFAULT '',
    recipe     TEXT NOT NULL DEFAULT '',
    action     TEXT NOT NULL,
    target     TEXT NOT NULL DEFAULT '',
    old_value  TEXT NOT NULL DEFAULT '',
    new_value  TEXT NOT NULL DEFAULT '',
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts_summary (
    slot        TEXT NOT NULL,
    recipe      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    false_calls INTEGER NOT NULL,
    PRIMARY KEY (slot, recipe, verdict)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts_scores (
    slot    TEXT NOT NULL,
    recipe  TEXT NOT NULL,
    verdict TEXT NOT NULL,
    bin     INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (slot, recipe, verdict, bin)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

# The statistics read these running sums instead of a million rows: parts per quarter hour (slot
# 'YYYY-MM-DDTHH:MM', local time), recipe and verdict with their false calls, and the same per score bin
# (SCORE_BIN wide, the last bin SCORE_BINS - 1 takes every higher score). Triggers keep them current.
SCORE_BIN = 0.025
SCORE_BINS = 80
_SLOT = "(substr({t}, 1, 14) || printf('%02d', (CAST(substr({t}, 15, 2) AS INTEGER) / 15) * 15))"
_BIN = f"MIN(MAX(CAST({{s}} / {SCORE_BIN} AS INTEGER), 0), {SCORE_BINS - 1})"
_SUMMARY_TRIGGERS = f"""
CREATE TRIGGER IF NOT EXISTS parts_summary_insert AFTER INSERT ON parts BEGIN
    INSERT INTO parts_summary VALUES ({_SLOT.format(t="NEW.time")}, NEW.recipe, NEW.verdict, 1, NEW.false_call)
        ON CONFLICT DO UPDATE SET n = n + 1, false_calls = false_calls + excluded.false_calls;
    INSERT INTO parts_scores SELECT {_SLOT.format(t="NEW.time")}, NEW.recipe, NEW.verdict, {_BIN.format(s="NEW.score")}, 1
        WHERE NEW.score IS NOT NULL ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS parts_summary_false_call AFTER UPDATE OF false_call ON parts
    WHEN NEW.false_call != OLD.false_call BEGIN
    UPDATE parts_summary SET false_calls = false_calls + NEW.false_call - OLD.false_call
        WHERE slot = {_SLOT.format(t="OLD.time")} AND recipe = OLD.recipe AND verdict = OLD.verdict;
END;
CREATE TRIGGER IF NOT EXISTS parts_summary_delete AFTER DELETE ON parts BEGIN
    UPDATE parts_summary SET n = n - 1, false_calls = false_calls - OLD.false_call
        WHERE slot = {_SLOT.format(t="OLD.time")} AND recipe = OLD.recipe AND verdict = OLD.verdict;
    UPDATE parts_scores SET n = n - 1 WHERE OLD.score IS NOT NULL AND slot = {_SLOT.format(t="OLD.time")}
        AND recipe = OLD.recipe AND verdict = OLD.verdict AND bin = {_BIN.format(s="OLD.score")};
END;
"""
_SUMMARY_BACKFILL = f"""
INSERT INTO parts_summary SELECT {_SLOT.format(t="time")} AS s, recipe, verdict, COUNT(*), SUM(false_call)
    FROM parts GROUP BY s, recipe, verdict;
INSERT INTO parts_scores SELECT {_SLOT.format(t="time")} AS s, recipe, verdict, {_BIN.format(s="score")} AS b, COUNT(*)
    FROM parts WHERE score IS NOT NULL GROUP BY s, recipe, verdict, b;
"""

# columns added after schema 1: name -> definition (ALTER TABLE parts ADD COLUMN)
_ADDED_COLUMNS = {"recipe_version": "TEXT NOT NULL DEFAULT ''", "defect_x": "REAL", "defect_y": "REAL"}

_INDEXES = """
CREATE INDEX IF NOT EXISTS parts_verdict ON parts (verdict);
CREATE INDEX IF NOT EXISTS parts_category ON parts (category);
CREATE INDEX IF NOT EXISTS parts_time ON parts (time);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
"""


class ResultsLogError(Exception):
    """The results database cannot be used; the message names the file."""


def now_text() -> str:
    """Local time with UTC offset, to the millisecond."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _connect(path: Path, readonly: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


@dataclass(frozen=True)
class ResultFilter:
    """What the table view and CSV export show. verdict: '' (all), a verdict, or 'false_call'."""

    verdict: str = ""
    category: str = ""
    text: str = ""
    limit: int | None = 1000

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.verdict == "false_call":
            clauses.append("false_call = 1")
        elif self.verdict:
            clauses.append("verdict = ?")
            params.append(self.verdict)
        if self.category:
            clauses.append("category = ?")
            params.append(self.category)
        if self.text.strip():
            like = f"%{self.text.strip()}%"
            clauses.append("(source LIKE ? OR frame_id LIKE ? OR category LIKE ? OR recipe LIKE ? "
                           "OR error LIKE ? OR false_call_note LIKE ? OR model_id LIKE ?)")
            params.extend([like] * 7)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a log of an older schema up to this one: missing columns, the indexes, and the running sums
    (filled from the rows already there, in the same transaction as their triggers)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(parts)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE parts ADD COLUMN {name} {definition}")
    conn.executescript(_INDEXES)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'parts_summary_insert'").fetchone() is None:
        conn.executescript(f"BEGIN IMMEDIATE; DELETE FROM parts_summary; DELETE FROM parts_scores; "
                           f"{_SUMMARY_BACKFILL} {_SUMMARY_TRIGGERS} COMMIT;")


class ResultsLog:
    """The writer. Connects on first use, in the thread that uses it (the engine worker)."""

    def __init__(self, path, app_version: str = __version__):
        self.path = Path(path)
        self.app_version = app_version
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ResultsLogError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if found is not None and found > SCHEMA_VERSION:
                conn.close()
                raise ResultsLogError(f"{self.path}: written by a newer DeCo Inspector (schema {found}, "
                                      f"this app reads up to {SCHEMA_VERSION})")
            _migrate(conn)
            if found is None or found < SCHEMA_VERSION:
                conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                             (SCHEMA_VERSION, self.app_version, now_text()))
            return conn
        except sqlite3.DatabaseError as e:
            raise ResultsLogError(f"{self.path}: {e}") from None
        except OSError as e:
            raise ResultsLogError(f"{self.path}: {e.strerror or e}") from None

    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def add(self, **fields) -> int:
        """Insert and commit one row; returns its id. Unknown field names are an error."""
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown results log fields: {sorted(unknown)}")
        row = {"time": now_text(), "app_version": self.app_version, **fields}
        for key in ("source", "frame_id", "category", "model_id", "recipe", "error", "recipe_version"):
            row[key] = "" if row.get(key) is None else printable(row[key])
        for key in ("image_path", "overlay_path", "thumbnail_path", "archive_error"):
            if row.get(key) is not None:
                row[key] = printable(row[key])
        names = [c for c in COLUMNS if c in row]
        sql = f"INSERT INTO parts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with self._lock:
            try:
                cur = self.conn.execute(sql, [row[n] for n in names])
            except sqlite3.DatabaseError as e:
                raise ResultsLogError(f"{self.path}: cannot write the result: {e}") from None
            return int(cur.lastrowid)

    def frame_ids(self, source: str) -> set[str]:
        """The frame ids already logged from `source` (to continue an interrupted batch)."""
        try:
            return {r[0] for r in self.conn.execute("SELECT frame_id FROM parts WHERE source = ?", (source,))}
        except sqlite3.DatabaseError as e:
            raise ResultsLogError(f"{self.path}: cannot read the logged parts: {e}") from None

    def set_archive(self, part_id: int, image_path: str | None = None, overlay_path: str | None = None,
                    thumbnail_path: str | None = None, archive_error: str | None = None) -> None:
        """Record archived files of a part (only the paths given) and add an archiving error to its row."""
        sets, params = [], []
        for column, value in (("image_path", image_path), ("overlay_path", overlay_path),
                              ("thumbnail_path", thumbnail_path)):
            if value:
                sets.append(f"{column} = ?")
                params.append(value)
        if archive_error:
            sets.append("archive_error = CASE WHEN archive_error = '' THEN ? ELSE archive_error || '; ' || ? END")
            params.extend([archive_error, archive_error])
        if not sets:
            return
        with self._lock:
            try:
                self.conn.execute(f"UPDATE parts SET {', '.join(sets)} WHERE id = ?", (*params, part_id))
            except sqlite3.DatabaseError as e:
                raise ResultsLogError(f"{self.path}: cannot record archived images: {e}") from None

    def mark_false_call(self, part_id: int, is_false_call: bool = True, note: str = "") -> None:
        """Flag (or unflag) a false call with a note and the time; the verdict stays as logged."""
        with self._lock:
            try:
                cur = self.conn.execute(
                    "UPDATE parts SET false_call = ?, false_call_note = ?, false_call_time = ? WHERE id = ?",
                    (int(bool(is_false_call)), note if is_false_call else "", now_text() if is_false_call else "",
                     part_id))
            except sqlite3.DatabaseError as e:
                raise ResultsLogError(f"{self.path}: cannot mark part {part_id}: {e}") from None
            if cur.rowcount == 0:
                raise ResultsLogError(f"{self.path}: there is no part {part_id}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class ResultsReader:
    """A read-only connection for views and exports; never blocks the writer (WAL)."""

    def __init__(self, path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.is_file():
                raise ResultsLogError(f"{self.path}: no results log yet")
            try:
                self._conn = _connect(self.path, readonly=True)
            except sqlite3.DatabaseError as e:
                raise ResultsLogError(f"{self.path}: {e}") from None
        return self._conn

    def query(self, flt: ResultFilter = ResultFilter()) -> list[dict]:
        where, params = flt.where()
        limit = f" LIMIT {int(flt.limit)}" if flt.limit else ""
        try:
            rows = self.conn.execute(f"SELECT * FROM parts{where} ORDER BY id DESC{limit}", params).fetchall()
        except sqlite3.DatabaseError as e:
            raise ResultsLogError(f"{self.path}: cannot read results: {e}") from None
        return [dict(r) for r in rows]

    def count(self, flt: ResultFilter = ResultFilter()) -> int:
        where, params = flt.where()
        return int(self.conn.execute(f"SELECT COUNT(*) FROM parts{where}", params).fetchone()[0])

    def verdict_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT verdict, COUNT(*) FROM parts GROUP BY verdict").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def categories(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT category FROM parts WHERE category != '' ORDER BY category")
        return [r[0] for r in rows.fetchall()]

    def get(self, part_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM parts WHERE id = ?", (part_id,)).fetchone()
        return dict(row) if row else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _iter_rows(path: Path, flt: ResultFilter) -> Iterator[sqlite3.Row]:
    conn = _connect(path, readonly=True)
    try:
        where, params = flt.where()
        limit = f" LIMIT {int(flt.limit)}" if flt.limit else ""
        yield from conn.execute(f"SELECT * FROM parts{where} ORDER BY id{limit}", params)
    finally:
        conn.close()


def export_csv(db_path, out_path, flt: ResultFilter = ResultFilter(limit=None)) -> int:
    """Write the rows matching `flt` (oldest first) to a CSV file through its own read-only
    connection; returns the number of rows. The file appears only when complete."""
    db_path, out_path = Path(db_path), Path(out_path)
    if not db_path.is_file():
        raise ResultsLogError(f"{db_path}: no results log yet")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    n = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for row in _iter_rows(db_path, flt):
                writer.writerow([row[c] for c in CSV_COLUMNS])
                n += 1
        os.replace(tmp, out_path)
    except sqlite3.DatabaseError as e:
        tmp.unlink(missing_ok=True)
        raise ResultsLogError(f"{db_path}: cannot read results for export: {e}") from None
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return n


@dataclass
class ArchiveResult:
    image_path: str = ""
    overlay_path: str = ""
    thumbnail_path: str = ""
    error: str = ""


def _safe_stem(text: str, limit: int = 60) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).stem if text else "part").strip("._") or "part"
    return stem[:limit]


# the archived frame stays a lossless PNG (evidence, and training material); its overlay is a
# picture for people, so a JPEG: 640x480, benchmarks/bench_image_write.py, see the README
OVERLAY_SUFFIX = "_overlay.jpg"


class Archiver:
    """Saves part images under root/YYYY-MM-DD/: the frame (PNG, lossless) and its overlay (JPEG at
    `engine.imageio.JPEG_QUALITY`) for the verdicts asked for, and a small JPEG thumbnail
    (root/thumbnails/YYYY-MM-DD/) for every part. Never raises for disk problems: the first
    failure is returned in `ArchiveResult.error`."""

    def __init__(self, root, writer: Callable[[Path, np.ndarray], None] = write_image):
        self.root = Path(root)
        self.writer = writer

    def save_thumbnail(self, frame_id: str, thumbnail: np.ndarray) -> ArchiveResult:
        """A thumbnail named by the current time (written before its row exists)."""
        now = datetime.now()
        path = self.root / "thumbnails" / now.strftime("%Y-%m-%d") / f"{now:%H%M%S%f}_{_safe_stem(frame_id)}.jpg"
        try:
            self.writer(path, thumbnail)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return ArchiveResult(error=f"cannot save thumbnail {path}: {reason}")
        return ArchiveResult(thumbnail_path=str(path))

    def save(self, part_id: int, frame_id: str, verdict: str, image: np.ndarray | None = None,
             overlay: np.ndarray | None = None, thumbnail: np.ndarray | None = None) -> ArchiveResult:
        day = datetime.now().strftime("%Y-%m-%d")
        base = f"{part_id:08d}_{verdict}_{_safe_stem(frame_id)}"
        out = ArchiveResult()
        jobs = []
        if image is not None:
            jobs.append(("image_path", self.root / day / f"{base}.png", image))
        if overlay is not None:
            jobs.append(("overlay_path", self.root / day / f"{base}{OVERLAY_SUFFIX}", overlay))
        if thumbnail is not None:
            jobs.append(("thumbnail_path", self.root / "thumbnails" / day / f"{base}.jpg", thumbnail))
        for attr, path, pixels in jobs:
            try:
                self.writer(path, pixels)
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                out.error = f"cannot archive {path}: {reason}"
                break
            setattr(out, attr, str(path))
        return out


@dataclass
class ArchiveJob:
    """What to archive for one logged part. `anomaly_map` (over the whole image) is turned into
    the overlay in the archive thread; `image` None means thumbnail only."""

    part_id: int
    frame_id: str
    verdict: str
    image: np.ndarray | None = None
    anomaly_map: np.ndarray | None = None
    fail_threshold: float = 0.0
    thumbnail: np.ndarray | None = None
    review_threshold: float | None = None
    full_heatmap: bool = False   # the overlay as the window shows it: only above the review level unless True


# nice steps the archive thread runs below the rest of the app: writing rejects' images yields to
# inspection and display (a full queue drops jobs and says so, it never delays a verdict)
ARCHIVE_NICENESS = 6


def _lower_priority(steps: int) -> None:
    """Lower the calling thread's scheduling priority by `steps` (Linux; elsewhere, or when not
    permitted, the thread keeps its priority)."""
    if steps <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError:
        pass


class ArchiveQueue:
    """Archives parts in a background thread, so a slow or full disk never delays a verdict.
    Each finished job is written into its row (paths, or the error); failures also go to
    `on_error`. When more than `capacity` jobs wait, new ones are not archived and their row
    says so."""

    def __init__(self, archiver: Archiver, log_path, on_error: Callable[[str], None] | None = None,
                 capacity: int = 32):
        self.archiver = archiver
        self.on_error = on_error
        self.log = ResultsLog(log_path)
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, capacity))
        self._last_drop_report = float("-inf")
        self._thread = threading.Thread(target=self._run, daemon=True, name="archiver")
        self._thread.start()

    def submit(self, job: ArchiveJob) -> bool:
        """Queue a job (never waits); False when the queue was full and the job was dropped."""
        try:
            self._jobs.put_nowait(job)
            return True
        except queue.Full:
            try:
                self.log.set_archive(job.part_id, archive_error="not archived: the archive could not keep up "
                                                                "(queue full)")
            except ResultsLogError as e:
                self._report(str(e))
            if time.monotonic() - self._last_drop_report > 10.0:
                self._last_drop_report = time.monotonic()
                self._report("The archive cannot keep up: images of some parts are not being saved "
                             "(their results are logged, with the reason)")
            return False

    def _run(self) -> None:
        _lower_priority(ARCHIVE_NICENESS)
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                overlay = None
                if job.image is not None and job.anomaly_map is not None:
                    overlay = operator_overlay(job.image, job.anomaly_map, job.fail_threshold, job.review_threshold,
                                               job.full_heatmap)
                saved = self.archiver.save(job.part_id, job.frame_id, job.verdict, image=job.image, overlay=overlay,
                                           thumbnail=job.thumbnail)
                self._finish(job, saved)
            except Exception as e:  # noqa: BLE001 - the archive thread must outlive any bad job
                self._report(f"part {getattr(job, 'part_id', '?')}: archiving failed: {e}")
            finally:
                self._jobs.task_done()

    def _finish(self, job: ArchiveJob, saved: ArchiveResult) -> None:
        try:
            self.log.set_archive(job.part_id, saved.image_path, saved.overlay_path, saved.thumbnail_path,
                                 saved.error)
        except ResultsLogError as e:
            self._report(str(e))
        if saved.error:
            self._report(f"{job.frame_id}: {saved.error} (the result is logged as part {job.part_id})")

    def _report(self, text: str) -> None:
        if self.on_error is not None:
            self.on_error(text)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued job is done; True if that happened within `timeout` seconds."""
        end = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs (up to `timeout`), stop the thread and close the connection."""
        self.wait_idle(timeout)
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(1.0)
        self.log.close()
