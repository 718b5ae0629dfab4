"""The window's engine worker and `main.py inspect` are two drivers of one InspectionSession: the same
images through the same model give the same verdicts and scores in both results logs, and every
batch of both goes through `InspectionSession.inspect`."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PIL import Image

import main
from inspection import Frame, InspectionRecipe, InspectionSession
from inspector import headless
from inspector.frame_queue import FrameQueue
from inspector.imageio import read_image
from tests.gui_helpers import make_tiny_detector


def logged(db) -> dict[str, tuple[str, float | None]]:
    """file name -> (verdict, score) of every row of a results log."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT frame_id, verdict, score FROM parts ORDER BY id").fetchall()
    conn.close()
    return {frame_id.replace("\\", "/").rsplit("/", 1)[-1]: (verdict, score) for frame_id, verdict, score in rows}


def test_the_window_worker_and_the_inspect_command_drive_the_same_session(tmp_path, monkeypatch, qtbot):
    from inspector.worker import EngineWorker

    rng = np.random.default_rng(3)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / f"part_{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    detector = make_tiny_detector(ncls=1, batch_size=2)
    scores = [r.score for r in detector.predict([read_image(p) for p in sorted(folder.glob("part_*.png"))])]
    threshold = float(np.median(scores))   # some parts pass, some fail

    batches: list[tuple[int, int]] = []    # (session, frames) per call of InspectionSession.inspect
    original = InspectionSession.inspect

    def spy(self, frames):
        batches.append((id(self), len(frames)))
        return original(self, frames)

    monkeypatch.setattr(InspectionSession, "inspect", spy)

    # main.py inspect, with this detector
    monkeypatch.setattr(headless, "_load_detector", lambda args, err: detector)
    detector.with_settings(threshold=threshold)
    code = main.main(["inspect", str(folder), "--log", str(tmp_path / "cli.sqlite"), "--quiet"])
    cli_sessions = {s for s, _ in batches}
    assert code == 2 and len(cli_sessions) == 1   # a failing part and an unreadable file: exit code 2

    # the window's engine worker, fed the same files as the folder source would
    frames = FrameQueue("every", capacity=64)
    worker = EngineWorker(frames, tmp_path / "window.sqlite", tmp_path / "archive", loader=lambda path, **kw: detector)
    shown = []
    worker.inspected.connect(shown.append)
    worker.load_model("tiny")
    worker.configure(InspectionRecipe(fail_threshold=threshold, review_threshold=threshold, view_max_side=0))
    for index, path in enumerate(sorted(folder.iterdir())):
        try:
            frames.put(Frame(read_image(path), "folder", str(path), index, file=str(path)))
        except Exception as e:  # noqa: BLE001 - an unreadable file is a frame with an error, as the reader makes it
            frames.put(Frame(None, "folder", str(path), index, error=str(e), file=str(path)))
    while len(frames):
        worker._drain()
    worker.close_log()
    window_sessions = {s for s, _ in batches} - cli_sessions
    assert len(window_sessions) == 1 and worker.session is not None

    cli, window = logged(tmp_path / "cli.sqlite"), logged(tmp_path / "window.sqlite")
    assert set(cli) == set(window) == {p.name for p in folder.iterdir()}
    for name in cli:
        (v1, s1), (v2, s2) = cli[name], window[name]
        assert v1 == v2, name
        assert (s1 is None and s2 is None) or s1 == pytest.approx(s2, abs=1e-5), name
    verdicts = [v for v, _ in cli.values()]
    assert {"pass", "fail", "error"} <= set(verdicts)
    assert [p.verdict for p in shown] == [window[p.file.replace("\\", "/").rsplit("/", 1)[-1]][0] for p in shown]
    assert sum(n for s, n in batches if s in window_sessions) == len(window) == 6
