"""Fault injection, engine and disk: out of memory falls back to smaller batches, then to the
CPU, with a message; exceptions inside the engine worker are reported and the worker keeps
serving; a full disk while saving images is reported and the results are kept; a checkpoint
carrying code is refused by every entry point and never runs."""

from __future__ import annotations

import csv
import errno
import os
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.runtime import is_out_of_memory, move_detector
from inspector.sources import SourceSpec
from tests.gui_helpers import (SleepyDetector, db_rows, load_model, make_tiny_detector, open_inspector,
                               write_images)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(n)]


def tiny_diad(batch_size: int):
    from tests.test_diad import tiny_detector

    return tiny_detector(batch_size=batch_size)


def oom_above(det, limit: int, on_device: str | None = None) -> list[int]:
    """Make `det` run out of memory for batches larger than `limit` (or, with `on_device`, for every
    batch while it is on that device); returns the list of batch sizes it was asked to run."""
    real = det._predict_batch
    tried: list[int] = []

    def predict_batch(chunk, cats, channel_order):
        tried.append(len(chunk))
        if (on_device and det.device.type == on_device) or len(chunk) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk) * 512} MiB")
        return real(chunk, cats, channel_order)

    det._predict_batch = predict_batch
    return tried


@pytest.mark.parametrize("kind", ["deco-diff", "diad"])
def test_out_of_memory_halves_the_batch_and_keeps_it(kind):
    make = (lambda bs: make_tiny_detector(batch_size=bs)) if kind == "deco-diff" else tiny_diad
    reference = make(8).predict(frames(7), category="part0")
    det = make(8)
    notices: list[str] = []
    det.on_notice = notices.append
    tried = oom_above(det, 2)
    results = det.predict(frames(7), category="part0")
    assert tried == [7, 3, 1, 1, 1, 1, 1, 1, 1]
    assert notices == ["CPU out of memory at batch 7: continuing with batch 3",
                       "CPU out of memory at batch 3: continuing with batch 1"]
    assert det.settings.batch_size == 1  # kept: the next call does not run out of memory again
    np.testing.assert_allclose([r.score for r in results], [r.score for r in reference], rtol=1e-4, atol=1e-5)
    det.predict(frames(2), category="part0")
    assert tried[-2:] == [1, 1] and len(notices) == 2


def test_out_of_memory_at_batch_1_on_the_gpu_moves_to_the_cpu(caplog):
    det = make_tiny_detector(batch_size=4)
    expected = [r.score for r in make_tiny_detector(batch_size=4).predict(frames(5), category="part1")]
    det.device = torch.device("cuda")  # as if loaded on a GPU; the networks stay where they are
    notices: list[str] = []
    det.on_notice = notices.append
    tried = oom_above(det, 100, on_device="cuda")
    results = det.predict(frames(5), category="part1")
    assert tried[:3] == [4, 2, 1] and tried[3:] == [1] * 5
    assert notices[:2] == ["CUDA out of memory at batch 4: continuing with batch 2",
                           "CUDA out of memory at batch 2: continuing with batch 1"]
    assert notices[2].startswith("CUDA out of memory even at batch 1: the engine continues on the CPU")
    assert det.device.type == "cpu" and next(det.unet.parameters()).device.type == "cpu"
    assert det.describe().device == "CPU"
    np.testing.assert_allclose([r.score for r in results], expected, rtol=1e-4, atol=1e-5)
    assert any("continues on the CPU" in r.message for r in caplog.records)


def test_out_of_memory_on_the_cpu_at_batch_1_and_other_errors_are_raised():
    det = make_tiny_detector(batch_size=1)
    oom_above(det, 0)
    with pytest.raises(RuntimeError, match="out of memory at batch 1 on the CPU"):
        det.predict(frames(1), category="part0")
    det = make_tiny_detector(batch_size=4)
    with pytest.raises(ValueError, match="unknown category 'bolt'"):
        det.predict(frames(3), category="bolt")
    assert det.settings.batch_size == 4
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    move_detector(det, "cpu")
    assert det.device == torch.device("cpu")


def test_the_window_says_when_the_engine_runs_out_of_memory(qtbot, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(home))

    def loader(path, **overrides):
        det = make_tiny_detector(batch_size=4)
        oom_above(det, 1)
        return det

    write_images(tmp_path / "imgs", 6, size=(60, 80))
    window, ctl = open_inspector(qtbot, home, loader)
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=60000)
    rows = db_rows(home)
    assert len(rows) == 6 and all(r["verdict"] != "error" for r in rows)
    # the worker batches what is queued when it drains (up to 4 here), so the first batch that runs
    # out of memory may be 2, 3 or 4 frames; each halving is reported until batch 1 works
    halvings = [tuple(map(int, m.groups())) for line in window.log_lines()
                for m in [re.search(r"Engine: CPU out of memory at batch (\d+): continuing with batch (\d+)", line)]
                if m]
    assert halvings and all(after == before // 2 for before, after in halvings)
    assert halvings[-1][1] == 1 and ctl.worker.detector.settings.batch_size == 1


def test_worker_reports_unexpected_exceptions_and_keeps_serving(qtbot, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(home))
    write_images(tmp_path / "imgs", 8)
    window, ctl = open_inspector(qtbot, home, lambda path, **kw: SleepyDetector(0.0, batch_size=2))
    load_model(qtbot, ctl)
    worker = ctl.worker
    real_take, real_add = worker.frames.take, worker.results_log.add
    faults = {"take": 1, "add": 1}

    def take(*args, **kwargs):  # a bug in the queue code: the drain itself blows up once
        if faults["take"]:
            faults["take"] -= 1
            raise KeyError("frame bookkeeping")
        return real_take(*args, **kwargs)

    def add(**fields):  # the database hits a disk error once
        if faults["add"]:
            faults["add"] -= 1
            from inspection.results_log import ResultsLogError

            raise ResultsLogError(f"{worker.results_log.path}: cannot write the result: disk I/O error")
        return real_add(**fields)

    monkeypatch.setattr(worker.frames, "take", take)
    monkeypatch.setattr(worker.results_log, "add", add)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    lines = window.log_lines()
    assert any("Engine error: KeyError: 'frame bookkeeping'" in line for line in lines)
    assert any("Result NOT logged" in line and "disk I/O error" in line for line in lines)
    assert faults == {"take": 0, "add": 0}
    # the worker kept serving: the run went on after both faults, and it still serves the next run
    assert len(db_rows(home)) == 7
    assert window.counters.text("inspected") == "8"
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    assert len(db_rows(home)) == 15


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.test_detector import make_detector

    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_detector(ncls=2, threshold=0.5).save(folder)
    return folder


def test_the_inspect_command_says_when_it_runs_out_of_memory(tiny_model, tmp_path, capsys, monkeypatch):
    import main
    from engine.detector import Detector

    real = Detector._predict_batch

    def predict_batch(self, chunk, cats, channel_order):
        if len(chunk) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real(self, chunk, cats, channel_order)

    monkeypatch.setattr(Detector, "_predict_batch", predict_batch)
    write_images(tmp_path / "imgs", 5, size=(40, 50))
    out_csv = tmp_path / "rows.csv"
    code = main.main(["inspect", str(tmp_path / "imgs"), "--model", str(tiny_model), "--category", "part0",
                      "--threshold", "100", "--batch-size", "4", "--csv", str(out_csv)])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: CPU out of memory at batch 4: continuing with batch 2" in err
    assert "warning: CPU out of memory at batch 2: continuing with batch 1" in err
    assert [r["verdict"] for r in csv.DictReader(out_csv.open())] == ["pass"] * 5


def test_disk_full_while_saving_overlays_keeps_every_row(tiny_model, tmp_path, capsys, monkeypatch):
    import main
    model = tiny_model
    write_images(tmp_path / "imgs", 3, size=(40, 50))
    real_write = Path.write_bytes

    def write_on_full_disk(self, data):
        if "overlays" in str(self):  # half a file lands, then the disk is full
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_on_full_disk)
    db, out_csv = tmp_path / "results.sqlite", tmp_path / "rows.csv"
    code = main.main(["inspect", str(tmp_path / "imgs"), "--model", str(model), "--category", "part0",
                      "--threshold", "100", "--save-overlays", str(tmp_path / "overlays"), "--log", str(db),
                      "--csv", str(out_csv)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("No space left on device (the result is kept)") == 3
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["verdict"] for r in rows] == ["pass"] * 3 and all(r["overlay"] == "" for r in rows)
    conn = sqlite3.connect(db)
    logged = conn.execute("SELECT verdict, overlay_path, archive_error FROM parts").fetchall()
    conn.close()
    assert len(logged) == 3 and all(v == "pass" and not o and "No space left on device" in e for v, o, e in logged)
    assert list((tmp_path / "overlays").iterdir()) == []  # no half-written overlay is left behind


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_code_never_runs_in_the_inspect_command_or_the_window(qtbot, tmp_path, capsys,
                                                                                       monkeypatch):
    import main

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": {"x": torch.zeros(1)}, "epoch": 3, "args": _Exploit(marker)}))
    write_images(tmp_path / "imgs", 1)
    code = main.main(["inspect", str(tmp_path / "imgs"), "--model", str(evil)])
    err = capsys.readouterr().err
    assert code == 2 and "refused: not a weights-only checkpoint" in err and str(evil) in err
    home = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(home))
    from inspector.worker import default_loader

    window, ctl = open_inspector(qtbot, home, default_loader)
    with qtbot.waitSignal(ctl.worker.model_failed, timeout=30000):
        ctl.open_model(str(evil))
    qtbot.waitUntil(lambda: not ctl.model_loading)
    assert any("refused: not a weights-only checkpoint" in line for line in window.log_lines())
    assert not marker.exists()
