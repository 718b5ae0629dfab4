"""Fault injection on the line outputs, with real servers on loopback:

* the MQTT broker is killed (SIGKILL) in the middle of a 200-part run and started again;
* the PostgreSQL server is stopped like a crash (immediate mode) in the middle of a 200-part run
  and started again;
* the app itself (`main.py inspect --log --resume --sink ...`, a separate process) is killed with
  SIGKILL several times and started again until the batch is done.

Each time every part's message arrives (none lost) and a part that arrives twice has the same
message id both times. The figures are printed (pytest -s)."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lineio import LineOutputs
from tests.line_servers import Mosquitto, Postgres, wait_until
from tests.test_line_outputs import record
from tests.test_line_servers import Subscriber

PARTS = 200
KILL_AT = 70            # the part after which the server goes down
OUTAGE_S = 1.5          # how long it stays down
PART_INTERVAL_S = 0.01  # one part every 10 ms: the run goes on while the server is away
DELIVERY_TIMEOUT_S = 90.0


def _persistent_broker(tmp_path: Path) -> Mosquitto:
    """A broker that keeps the plant's subscription (and what is queued for it) across a restart."""
    broker = Mosquitto(tmp_path)
    broker.config.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {tmp_path}/\nautosave_interval 1\nautosave_on_changes true\n")
    return broker.start()


def _run_parts(outputs: LineOutputs, outage, at: int = KILL_AT) -> tuple[list[str], float]:
    """Publish PARTS records, calling `outage()` (in a thread) after part `at`; the message ids in
    order and the time the outage ended (time.monotonic())."""
    ids, ended = [], []

    def down_and_up():
        outage()
        ended.append(time.monotonic())

    helper = threading.Thread(target=down_and_up)
    for i in range(PARTS):
        ids.append(outputs.publish(record(i, verdict="fail" if i % 7 == 0 else "pass", part_id=i + 1)))
        if i == at:
            helper.start()
        time.sleep(PART_INTERVAL_S)
    helper.join()
    return ids, ended[0]


def _check(received: list[str], ids: list[str]) -> dict:
    counts = Counter(received)
    assert set(counts) == set(ids), f"lost {len(set(ids) - set(counts))}, strangers {len(set(counts) - set(ids))}"
    return {"received": len(received), "distinct": len(counts), "repeats": sum(n - 1 for n in counts.values())}


@pytest.mark.slow
def test_broker_killed_mid_run_loses_nothing(tmp_path):
    broker = _persistent_broker(tmp_path)
    plant = Subscriber(broker.port, "line/st1", client_id="plant-mes")
    time.sleep(1.2)   # the broker saves the plant's subscription (autosave) before it is killed
    outputs = LineOutputs([f"{broker.url}/line/st1"], tmp_path / "o.sqlite", station="st1")
    queued_peak = []
    try:
        outputs.start()

        def outage():
            broker.kill()
            time.sleep(OUTAGE_S)
            queued_peak.append(outputs.status()[0].queued)
            broker.start()

        ids, restarted = _run_parts(outputs, outage)
        received = []

        def all_in():
            while not plant.messages.empty():
                received.append(plant.messages.get()[1]["message_id"])
            return set(received) >= set(ids)

        wait_until(all_in, DELIVERY_TIMEOUT_S, "every part at the plant")
        caught_up = time.monotonic() - restarted
        time.sleep(0.5)
        all_in()
        figures = _check(received, ids)
        # the payload of a repeat is the same message
        assert outputs.drain(10)
    finally:
        outputs.close()
        plant.close()
        broker.kill()
    print(f"\nbroker killed after part {KILL_AT + 1} of {PARTS} for {OUTAGE_S} s: {figures['distinct']} of {PARTS} "
          f"parts arrived, {figures['repeats']} repeats (same message id), {queued_peak[0]} queued during the "
          f"outage, all delivered {caught_up:.1f} s after the restart")


@pytest.mark.slow
def test_database_restarted_mid_run_loses_nothing(tmp_path):
    import psycopg

    server = Postgres().start()
    outputs = LineOutputs([f"{server.url}?table=plant"], tmp_path / "o.sqlite", station="st1")
    queued_peak = []
    try:
        outputs.start()

        def outage():
            server.stop("immediate")   # like a crash: no shutdown checkpoint, recovery at the start
            time.sleep(OUTAGE_S)
            queued_peak.append(outputs.status()[0].queued)
            server.start()

        ids, restarted = _run_parts(outputs, outage)
        assert outputs.drain(DELIVERY_TIMEOUT_S), outputs.status()[0].line()
        caught_up = time.monotonic() - restarted
        failures = outputs.outbox._conn().execute(
            "SELECT COUNT(*), COALESCE(SUM(attempts - 1), 0) FROM line_outbox WHERE attempts > 1").fetchone()
        with psycopg.connect(server.url) as conn:
            rows = [r[0] for r in conn.execute("SELECT message_id FROM plant")]
    finally:
        outputs.close()
        server.stop()
        server.remove()
    figures = _check(rows, ids)
    assert figures["repeats"] == 0   # the primary key: a resend never doubles a row
    print(f"\ndatabase down after part {KILL_AT + 1} of {PARTS} for {OUTAGE_S} s (immediate stop): {len(rows)} rows "
          f"for {PARTS} parts, {queued_peak[0]} queued during the outage, {failures[0]} messages needed "
          f"{failures[1]} retries, all stored {caught_up:.1f} s after the restart")


@pytest.mark.slow
def test_app_killed_with_sigkill_and_restarted_delivers_every_logged_part(tmp_path):
    import psycopg

    from tests.test_detector import make_detector
    from tests.test_faults_kill import Runner, _logged

    model = tmp_path / "tiny"
    make_detector(ncls=2, threshold=0.5).save(model)
    folder = tmp_path / "batch"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(PARTS):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"part_{i:03d}.png")
    broker = _persistent_broker(tmp_path)
    plant = Subscriber(broker.port, "line/st1", client_id="plant-mes")
    server = Postgres().start()
    time.sleep(1.2)
    db = tmp_path / "results.sqlite"
    argv = ["inspect", str(folder), "--model", str(model), "--category", "part0", "--batch-size", "1", "--quiet",
            "--log", str(db), "--resume", "--station", "st1", "--sink-wait", "20",
            "--sink", f"{broker.url}/line/st1", "--sink", f"{server.url}?table=plant"]
    pick = random.Random(20)
    runner = Runner()
    kills = []
    try:
        for run in range(4):
            before = len(_logged(db))
            pid = runner.start(argv, str(tmp_path / f"run_{run}.log"))
            target = before + pick.randint(15, 40)
            wait_until(lambda: len(_logged(db)) >= target or not runner.running(pid), 120, "parts being logged")
            time.sleep(pick.uniform(0.0, 0.1))
            assert runner.running(pid), (tmp_path / f"run_{run}.log").read_text()[-2000:]
            os.kill(pid, signal.SIGKILL)
            assert runner.wait() == -signal.SIGKILL
            kills.append(len(_logged(db)))
        runner.start(argv, str(tmp_path / "final.log"))
        assert runner.wait() in (0, 1), (tmp_path / "final.log").read_text()[-2000:]
    finally:
        runner.close()
    try:
        logged = _logged(db)
        assert len(logged) == PARTS
        conn = sqlite3.connect(db)
        expected = {mid for (mid,) in conn.execute(
            "SELECT message_id FROM line_outbox WHERE sink = ?", (f"{broker.url}/line/st1",))}
        assert len(expected) == PARTS
        received = []

        def all_in():
            while not plant.messages.empty():
                received.append(plant.messages.get()[1]["message_id"])
            return set(received) >= expected

        wait_until(all_in, DELIVERY_TIMEOUT_S, "every logged part at the plant")
        mqtt = _check(received, sorted(expected))
        with psycopg.connect(server.url) as pg:
            rows = [r[0] for r in pg.execute("SELECT message_id FROM plant")]
        database = _check(rows, sorted(expected))
        caught_up = sum(int(m) for run in tmp_path.glob("*.log")
                        for m in re.findall(r"(\d+) results logged before the last stop", run.read_text()))
    finally:
        plant.close()
        broker.kill()
        server.stop()
        server.remove()
    print(f"\napp killed with SIGKILL at {kills} logged parts, then finished: {PARTS} parts logged; MQTT "
          f"{mqtt['distinct']} of {PARTS} arrived, {mqtt['repeats']} repeats (same message id); PostgreSQL "
          f"{database['distinct']} rows, {database['repeats']} repeats; {caught_up} parts logged but not yet queued "
          "when a run was killed were queued by the next run's catch-up")
