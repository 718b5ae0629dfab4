"""Fault injection, crashes: `main.py inspect --log` is killed with SIGKILL at random moments,
several times over. After each kill the results database must open and pass SQLite's integrity
check, every part the run reported (its CSV rows, written after the commit) must be in it, at
most the one part in flight may be logged but not yet reported, nothing is logged twice, and
`--resume` continues where the killed run stopped until every file has exactly one row. The test
reads the database (polling, a CSV export) from its own process while the runs write.

Each run is a separate process running `main.main(["inspect", ...])`, exactly what
`python main.py inspect ...` runs; they are forked from one interpreter that has already
imported the engine, so six runs cost one PyTorch start-up instead of six."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.imageio import list_images
from inspection.results_log import export_csv

REPO = Path(__file__).resolve().parents[1]
KILLS = 5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.test_detector import make_detector

    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_detector(ncls=2, threshold=0.5).save(folder)
    return folder


def _logged(db: Path) -> list[str]:
    """Frame ids in the order they were committed; [] before the database exists."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT frame_id FROM parts ORDER BY id")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        conn.close()


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def _reported(csv_path: Path) -> list[str]:
    """Files the run reported as done: complete CSV rows (a kill can cut the last line)."""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [r["file"] for r in csv.DictReader(f) if r.get("error") is not None]


FORK_SERVER = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
import main, engine.detector, inspector.headless  # the slow imports, once
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = main.main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class Runner:
    """Starts `main.py inspect` runs as forked processes; `kill` sends SIGKILL; `wait` gives the
    exit code (negative: killed by that signal)."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=REPO, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def start(self, argv: list[str], log: Path) -> int:
        self.server.stdin.write(json.dumps([argv, str(log)]) + "\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline())

    def running(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def wait(self) -> int:
        status = int(self.server.stdout.readline())
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _argv(folder: Path, model: Path, db: Path, out_csv: Path) -> list[str]:
    return ["inspect", str(folder), "--model", str(model), "--category", "part0", "--threshold", "100",
            "--batch-size", "1", "--quiet", "--log", str(db), "--resume", "--csv", str(out_csv)]


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_committed_row(tmp_path, tiny_model):
    folder = tmp_path / "batch"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"part_{i:03d}.png")
    files = [str(p) for p in list_images(folder)]
    db = tmp_path / "results.sqlite"
    pick = random.Random(9)
    kills = []
    runner = Runner()
    try:
        for run in range(KILLS):
            before = _logged(db)
            out_csv = tmp_path / f"run_{run}.csv"
            pid = runner.start(_argv(folder, tiny_model, db, out_csv), tmp_path / f"run_{run}.log")
            target = len(before) + pick.randint(1, 3)
            deadline = time.monotonic() + 120
            while len(_logged(db)) < target and runner.running(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            exported = export_csv(db, tmp_path / "export.csv")  # a reader in this process, the writer in that one
            time.sleep(pick.uniform(0.0, 0.2))  # somewhere inside the next part's inspect/commit/report
            assert runner.running(pid), f"run {run} ended before it was killed: {_tail(tmp_path / f'run_{run}.log')}"
            os.kill(pid, signal.SIGKILL)
            assert runner.wait() == -signal.SIGKILL

            assert _integrity(db) == "ok"
            logged = _logged(db)
            reported = _reported(out_csv)
            new = logged[len(before):]
            assert logged[:len(before)] == before, "committed rows changed"
            assert len(set(logged)) == len(logged), "a part was logged twice"
            assert logged == files[:len(logged)], "rows are not the files in order (a gap or a stranger)"
            assert set(reported) <= set(new), "a reported part is missing from the database"
            assert 0 <= len(new) - len(reported) <= 1, (len(new), len(reported))
            assert len(before) < exported <= len(logged)
            kills.append((len(before), len(new), len(reported)))

        runner.start(_argv(folder, tiny_model, db, tmp_path / "final.csv"), tmp_path / "final.log")
        assert runner.wait() == 0, _tail(tmp_path / "final.log")
    finally:
        runner.close()
    logged = _logged(db)
    assert logged == files and _integrity(db) == "ok"
    assert f"{len(files) - len(_reported(tmp_path / 'final.csv'))} skipped" in (tmp_path / "final.log").read_text()
    assert all(new >= 1 for _, new, _ in kills), kills
    print(f"kill -9 at rows {[before + new for before, new, _ in kills]}: 0 rows lost, "
          f"{sum(new - rep for _, new, rep in kills)} committed but not yet reported")
