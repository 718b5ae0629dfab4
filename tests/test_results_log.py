"""The SQLite results log: WAL, schema, false calls, concurrent readers, CSV export, archiving."""

from __future__ import annotations

import csv
import errno
import os
import sqlite3
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.imageio import read_image
from engine.version import __version__
from inspection.results_log import (CSV_COLUMNS, SCHEMA_VERSION, ArchiveJob, ArchiveQueue, Archiver, ResultFilter,
                                   ResultsLog, ResultsLogError, ResultsReader, export_csv)


def add_part(db: ResultsLog, verdict="pass", score=0.1, **extra) -> int:
    fields = dict(source="folder x", frame_id="/data/a.png", category="bottle", score=score, threshold=0.3,
                  review_threshold=0.2, verdict=verdict, model_id="m1", recipe="bottle-line-1", latency_ms=12.0)
    fields.update(extra)
    return db.add(**fields)


@pytest.fixture
def db(tmp_path):
    log = ResultsLog(tmp_path / "results.sqlite")
    yield log
    log.close()


def test_wal_mode_schema_version_and_app_version(db):
    add_part(db)
    assert db.journal_mode() == "wal"
    assert db.schema_version() == SCHEMA_VERSION
    row = db.conn.execute("SELECT app_version FROM schema_version").fetchone()
    assert row[0] == __version__
    reader = ResultsReader(db.path)
    assert reader.query()[0]["app_version"] == __version__
    reader.close()


def test_rows_are_committed_immediately_and_visible_to_another_connection(db):
    part = add_part(db, verdict="fail", score=0.9, error="")
    other = sqlite3.connect(db.path)
    assert other.execute("SELECT verdict, score FROM parts WHERE id = ?", (part,)).fetchone() == ("fail", 0.9)
    other.close()


def test_false_call_keeps_the_original_verdict(db):
    part = add_part(db, verdict="fail", score=0.8)
    db.mark_false_call(part, True, "dust on the lens")
    reader = ResultsReader(db.path)
    row = reader.get(part)
    assert row["verdict"] == "fail" and row["score"] == 0.8
    assert row["false_call"] == 1 and row["false_call_note"] == "dust on the lens" and row["false_call_time"]
    assert [r["id"] for r in reader.query(ResultFilter(verdict="false_call"))] == [part]
    db.mark_false_call(part, False)
    row = reader.get(part)
    assert row["verdict"] == "fail" and row["false_call"] == 0 and row["false_call_note"] == ""
    with pytest.raises(ResultsLogError, match="there is no part 999"):
        db.mark_false_call(999)
    reader.close()


def test_a_long_reader_transaction_does_not_block_writes(db):
    add_part(db)
    reader = sqlite3.connect(db.path, timeout=0.1, isolation_level=None)
    reader.execute("BEGIN")
    before = reader.execute("SELECT COUNT(*) FROM parts").fetchone()[0]
    started = time.perf_counter()
    for _ in range(20):
        add_part(db)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert reader.execute("SELECT COUNT(*) FROM parts").fetchone()[0] == before  # its snapshot is stable
    reader.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*) FROM parts").fetchone()[0] == before + 20
    reader.close()


def test_export_while_writing_from_another_thread(db, tmp_path):
    for i in range(50):
        add_part(db, verdict=("pass", "review", "fail")[i % 3], frame_id=f"/data/{i}.png")
    stop = threading.Event()
    written = []
    writer_log = ResultsLog(db.path)

    def keep_writing():
        while not stop.is_set():
            written.append(add_part(writer_log))

    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        n = export_csv(db.path, tmp_path / "out" / "all.csv")
        fails = export_csv(db.path, tmp_path / "fails.csv", ResultFilter(verdict="fail", limit=None))
    finally:
        stop.set()
        t.join()
        writer_log.close()
    assert n >= 50 and written, "the writer kept going during the export"
    with open(tmp_path / "out" / "all.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == n
    assert rows[0]["frame_id"] == "/data/0.png" and rows[0]["recipe"] == "bottle-line-1"
    assert fails == 16


def test_filters_text_and_category(db):
    add_part(db, category="bottle", frame_id="/a/scratch_01.png")
    add_part(db, category="screw", frame_id="/a/good_01.png", verdict="error", score=None, error="truncated")
    reader = ResultsReader(db.path)
    assert [r["category"] for r in reader.query(ResultFilter(category="screw"))] == ["screw"]
    assert len(reader.query(ResultFilter(text="scratch"))) == 1
    assert len(reader.query(ResultFilter(text="truncated"))) == 1
    assert reader.verdict_counts() == {"pass": 1, "error": 1}
    assert reader.categories() == ["bottle", "screw"]
    reader.close()


def test_unknown_fields_and_bad_verdicts_are_refused(db):
    with pytest.raises(ValueError, match="unknown results log fields"):
        db.add(verdict="pass", colour="red")
    with pytest.raises(ResultsLogError, match="cannot write the result"):
        db.add(verdict="maybe")


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    db = ResultsLog(path)
    db.conn.execute("INSERT INTO schema_version VALUES (99, 'future', 'now')")
    db.close()
    with pytest.raises(ResultsLogError, match="newer DeCo Inspector"):
        ResultsLog(path).conn


def test_archive_failure_is_reported_and_the_row_kept(db, tmp_path):
    def disk_full(path, rgb):
        raise OSError(errno.ENOSPC, "No space left on device")

    part = add_part(db, verdict="fail", score=0.9)
    saved = Archiver(tmp_path / "archive", writer=disk_full).save(part, "/data/a.png", "fail",
                                                                   image=np.zeros((8, 8, 3), np.uint8))
    assert "No space left on device" in saved.error and saved.image_path == ""
    db.set_archive(part, saved.image_path, saved.overlay_path, saved.thumbnail_path, saved.error)
    row = ResultsReader(db.path).get(part)
    assert row["verdict"] == "fail" and "No space left" in row["archive_error"]


def test_archiver_writes_images_overlays_and_thumbnails(tmp_path):
    img = np.full((20, 30, 3), 128, np.uint8)
    saved = Archiver(tmp_path).save(7, "/x/part one.png", "review", image=img, overlay=img, thumbnail=img[:8, :8])
    assert not saved.error
    assert saved.image_path.endswith("00000007_review_part_one.png")
    assert saved.overlay_path.endswith("00000007_review_part_one_overlay.jpg")
    for p in (saved.image_path, saved.overlay_path, saved.thumbnail_path):
        assert (tmp_path / p).is_file()
    assert np.array_equal(read_image(saved.image_path), img)   # the frame is kept lossless
    assert Image.open(saved.overlay_path).format == "JPEG"


def test_archive_queue_fills_in_rows_in_the_background(db, tmp_path):
    problems = []
    img = np.full((30, 40, 3), 90, np.uint8)
    amap = np.zeros((30, 40), np.float32)
    amap[10:20, 10:20] = 0.9
    archive = ArchiveQueue(Archiver(tmp_path / "archive"), db.path, on_error=problems.append)
    ok = add_part(db, verdict="fail", score=0.9)
    thumb_only = add_part(db, verdict="pass")
    archive.submit(ArchiveJob(ok, "/x/a.png", "fail", image=img, anomaly_map=amap, fail_threshold=0.5,
                              thumbnail=img[:8, :8]))
    archive.submit(ArchiveJob(thumb_only, "/x/b.png", "pass", thumbnail=img[:8, :8]))
    assert archive.wait_idle(5.0)
    reader = ResultsReader(db.path)
    row = reader.get(ok)
    assert row["image_path"] and row["overlay_path"] and row["thumbnail_path"] and not row["archive_error"]
    assert reader.get(thumb_only)["image_path"] == "" and reader.get(thumb_only)["thumbnail_path"]

    def disk_full(path, rgb):
        raise OSError(errno.ENOSPC, "No space left on device")

    archive.archiver.writer = disk_full
    failing = add_part(db, verdict="review", score=0.25)
    archive.submit(ArchiveJob(failing, "/x/c.png", "review", image=img, anomaly_map=amap, thumbnail=img))
    assert archive.wait_idle(5.0)
    row = reader.get(failing)
    assert row["verdict"] == "review" and "No space left on device" in row["archive_error"]
    assert problems and "the result is logged as part" in problems[0]
    archive.close()
    reader.close()


def test_a_full_archive_queue_drops_images_not_rows(db, tmp_path):
    release = threading.Event()

    def slow_writer(path, rgb):
        release.wait(5)

    archive = ArchiveQueue(Archiver(tmp_path, writer=slow_writer), db.path, capacity=1)
    ids = [add_part(db, verdict="fail") for _ in range(4)]
    def job(part):
        return ArchiveJob(part, "/x/a.png", "fail", thumbnail=np.zeros((4, 4, 3), np.uint8))

    assert archive.submit(job(ids[0]))
    deadline = time.monotonic() + 5
    while archive._jobs.qsize() and time.monotonic() < deadline:  # the thread is now busy with the first job
        time.sleep(0.01)
    assert [archive.submit(job(i)) for i in ids[1:]] == [True, False, False]
    release.set()
    assert archive.wait_idle(5.0)
    rows = {r["id"]: r for r in ResultsReader(db.path).query()}
    assert len(rows) == 4 and "queue full" in rows[ids[3]]["archive_error"]
    archive.close()


def test_archived_overlays_colour_only_above_the_review_level_unless_full(db, tmp_path):
    img = np.full((64, 64, 3), 90, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[40:56, 40:56] = 0.9          # far from the top-left corner's 8x8 JPEG blocks
    archive = ArchiveQueue(Archiver(tmp_path / "archive"), db.path)
    parts = {}
    for full in (False, True):
        parts[full] = add_part(db, verdict="fail", score=0.9)
        archive.submit(ArchiveJob(parts[full], "/x/a.png", "fail", image=img, anomaly_map=amap, fail_threshold=0.5,
                                  review_threshold=0.3, full_heatmap=full))
    assert archive.wait_idle(5.0)
    reader = ResultsReader(db.path)
    overlays = {full: np.asarray(Image.open(reader.get(part)["overlay_path"])).astype(int) for full, part in parts.items()}
    archive.close()
    jpeg_noise = 3   # the overlay is a JPEG: a flat area comes back within a few levels
    corner = (slice(0, 16), slice(0, 16))
    assert np.abs(overlays[False][corner] - img[corner]).max() <= jpeg_noise   # below the review level: as it is
    assert np.abs(overlays[True][corner] - img[corner]).mean() > 2 * jpeg_noise   # tinted everywhere
    assert np.abs(overlays[False][48, 48] - img[48, 48]).max() > 10 * jpeg_noise


def test_file_names_that_are_not_utf8_are_logged_and_exported(db, tmp_path):
    name = os.fsdecode(b"/parts/scratch \xff\xfe 1.png")   # a name written by a non-UTF-8 system
    part = db.add(source="folder", frame_id=name, verdict="pass", error=f"{name}: odd")
    row = ResultsReader(db.path).get(part)
    assert row["frame_id"] == "/parts/scratch \\xff\\xfe 1.png" and row["error"].startswith(row["frame_id"])
    assert export_csv(db.path, tmp_path / "out.csv") >= 1
    assert "scratch \\xff\\xfe 1.png" in (tmp_path / "out.csv").read_text(encoding="utf-8")
