"""Fault injection on the line outputs, with real servers on loopback:

* the MQTT broker is killed (SIGKILL) in the middle of a 200-part run and started again;
* the PostgreSQL server is stopped like a crash (immediate mode) in the middle of a 200-part run
  and started again;
* the app itself (`main.py inspect --log --resume --sink ...`, a separate process) is killed with
  SIGKILL several times and started again until the batch is done.

Each time every part's message arrives (none lost), every part has one message id, and a part that
arrives twice has the same message id and the same contents both times. Each test also makes repeats
happen on purpose: the last few delivered messages are set back to pending in the outbox, as when the
app dies after the peer took a message but before the outbox recorded it, and the outputs start again
on that outbox; the repeats must carry the message id of the first copy (PostgreSQL: no second row).
The figures (sent, received, duplicates, lost) are printed (pytest -s)."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter, defaultdict
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
LOST_ACKS = 5           # delivered messages whose acknowledgement the outbox "never recorded": resent


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


def _forget_acknowledgements(outbox: Path, count: int = LOST_ACKS) -> list[str]:
    """Set the last `count` delivered messages of every sink back to pending, as when the app dies
    after the peer took them but before the outbox recorded it; their message ids (per sink)."""
    conn = sqlite3.connect(outbox)
    try:
        with conn:
            rows = conn.execute(
                "SELECT seq, message_id FROM line_outbox o WHERE state = 'sent' AND seq IN (SELECT seq FROM "
                "line_outbox WHERE sink = o.sink AND state = 'sent' ORDER BY seq DESC LIMIT ?)", (count,)).fetchall()
            conn.executemany("UPDATE line_outbox SET state = 'pending' WHERE seq = ?", [(seq,) for seq, _ in rows])
    finally:
        conn.close()
    return [message_id for _, message_id in rows]


def _attempts(outbox: Path, message_ids: list[str]) -> dict[str, int]:
    """Delivery attempts of these messages (all sinks together)."""
    conn = sqlite3.connect(outbox)
    try:
        return {mid: conn.execute("SELECT SUM(attempts) FROM line_outbox WHERE message_id = ?", (mid,)).fetchone()[0]
                for mid in message_ids}
    finally:
        conn.close()


def _figures(messages: list[dict], ids: list[str]) -> dict:
    """What arrived against what was sent: sent, received (messages), distinct (message ids),
    duplicates (received - distinct), lost (sent ids that never arrived), strangers (ids never sent).
    Asserts none lost, no stranger, one message id per part and each repeat equal to its first copy."""
    first: dict[str, dict] = {}
    ids_of_part: dict[str, set] = defaultdict(set)
    for message in messages:
        original = first.setdefault(message["message_id"], message)
        assert message == original, f"message {message['message_id']} arrived twice with different contents"
        ids_of_part[message["part_id"]].add(message["message_id"])
    figures = {"sent": len(ids), "received": len(messages), "distinct": len(first),
               "duplicates": len(messages) - len(first), "lost": len(set(ids) - set(first)),
               "strangers": len(set(first) - set(ids))}
    print(f"\n  sent {figures['sent']}, received {figures['received']}, duplicates (same message id) "
          f"{figures['duplicates']}, lost {figures['lost']}, unknown ids {figures['strangers']}")
    assert figures["lost"] == 0 and figures["strangers"] == 0, figures
    several = {part: sorted(mids) for part, mids in ids_of_part.items() if len(mids) > 1}
    assert not several, f"parts that arrived under more than one message id: {several}"
    return figures


def _plant_messages(plant: Subscriber, into: list[dict]) -> list[dict]:
    """Move what the plant's subscriber got so far into `into` (results only, not the station state)."""
    while not plant.messages.empty():
        topic, message, _ = plant.messages.get()
        if not topic.endswith("/state"):
            into.append(message)
    return into


def _table_rows(url: str, table: str) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return [{"message_id": r["message_id"], "part_id": r["part_id"]}
                for r in conn.execute(f"SELECT message_id, part_id FROM {table}")]


@pytest.mark.slow
def test_broker_killed_mid_run_loses_nothing(tmp_path):
    broker = _persistent_broker(tmp_path)
    plant = Subscriber(broker.port, "line/st1", client_id="plant-mes")
    time.sleep(1.2)   # the broker saves the plant's subscription (autosave) before it is killed
    url, outbox = f"{broker.url}/line/st1", tmp_path / "o.sqlite"
    outputs = LineOutputs([url], outbox, station="st1")
    queued_peak, received = [], []
    try:
        outputs.start()

        def outage():
            broker.kill()
            time.sleep(OUTAGE_S)
            queued_peak.append(outputs.status()[0].queued)
            broker.start()

        ids, restarted = _run_parts(outputs, outage)
        wait_until(lambda: {m["message_id"] for m in _plant_messages(plant, received)} >= set(ids),
                   DELIVERY_TIMEOUT_S, "every part at the plant")
        caught_up = time.monotonic() - restarted
        assert outputs.drain(10), outputs.status()[0].line()
        outputs.close()
        time.sleep(0.5)   # a repeat of the outage (paho resending what the dead broker never acknowledged)
        natural = len(_plant_messages(plant, received)) - len(ids)
        # the app "dies" after the broker took the last messages, before the outbox recorded it
        resent = _forget_acknowledgements(outbox)
        outputs = LineOutputs([url], outbox, station="st1")
        outputs.start()
        assert outputs.drain(20), outputs.status()[0].line()
        wait_until(lambda: len(_plant_messages(plant, received)) >= len(ids) + natural + len(resent), 20,
                   "the resent messages at the plant")
        time.sleep(0.5)
        _plant_messages(plant, received)
    finally:
        outputs.close()
        plant.close()
        broker.kill()
    print(f"\nbroker killed (SIGKILL) after part {KILL_AT + 1} of {PARTS} for {OUTAGE_S} s, {queued_peak[0]} "
          f"queued during the outage, all delivered {caught_up:.1f} s after the restart; {natural} repeats from the "
          f"outage itself, then {len(resent)} acknowledgements forgotten and the outputs restarted:", end="")
    figures = _figures(received, ids)
    copies = Counter(m["message_id"] for m in received)
    assert len(resent) == LOST_ACKS and all(copies[mid] >= 2 for mid in resent)
    assert figures["duplicates"] >= natural + len(resent)


@pytest.mark.slow
def test_database_restarted_mid_run_loses_nothing(tmp_path):
    server = Postgres().start()
    url, outbox = f"{server.url}?table=plant", tmp_path / "o.sqlite"
    outputs = LineOutputs([url], outbox, station="st1")
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
        outputs.close()
        resent = _forget_acknowledgements(outbox)   # inserted, but the outbox never recorded it
        attempts_before = _attempts(outbox, resent)
        outputs = LineOutputs([url], outbox, station="st1")
        outputs.start()
        assert outputs.drain(20), outputs.status()[0].line()
        attempts_after = _attempts(outbox, resent)
        again = sum(attempts_after[mid] > attempts_before[mid] for mid in resent)
        rows = _table_rows(server.url, "plant")
    finally:
        outputs.close()
        server.stop()
        server.remove()
    print(f"\ndatabase stopped (immediate) after part {KILL_AT + 1} of {PARTS} for {OUTAGE_S} s, {queued_peak[0]} "
          f"queued during the outage, {failures[0]} messages needed {failures[1]} retries, all stored "
          f"{caught_up:.1f} s after the restart; then {again} of {len(resent)} inserted messages sent again "
          f"(acknowledgement forgotten), {len(rows)} rows:", end="")
    figures = _figures(rows, ids)
    assert again == len(resent) == LOST_ACKS
    assert figures["duplicates"] == 0   # the primary key: a resend never doubles a row


@pytest.mark.slow
def test_app_killed_with_sigkill_and_restarted_delivers_every_logged_part(tmp_path):
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
    mqtt_url = f"{broker.url}/line/st1"
    argv = ["inspect", str(folder), "--model", str(model), "--category", "part0", "--batch-size", "1", "--quiet",
            "--log", str(db), "--resume", "--station", "st1", "--sink-wait", "20",
            "--sink", mqtt_url, "--sink", f"{server.url}?table=plant"]
    pick = random.Random(20)
    runner = Runner()
    kills, resent = [], []
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
        # the last kill "landed" after the peers took the last messages, before the outbox recorded it
        resent = _forget_acknowledgements(db)
        runner.start(argv, str(tmp_path / "final.log"))
        assert runner.wait() in (0, 1), (tmp_path / "final.log").read_text()[-2000:]
    finally:
        runner.close()
    received = []
    try:
        logged = _logged(db)
        assert len(logged) == PARTS
        conn = sqlite3.connect(db)
        expected = sorted({mid for (mid,) in conn.execute(
            "SELECT message_id FROM line_outbox WHERE sink = ?", (mqtt_url,))})
        pending = conn.execute("SELECT COUNT(*) FROM line_outbox WHERE state != 'sent'").fetchone()[0]
        conn.close()
        assert len(expected) == PARTS and pending == 0
        wait_until(lambda: {m["message_id"] for m in _plant_messages(plant, received)} >= set(expected),
                   DELIVERY_TIMEOUT_S, "every logged part at the plant")
        time.sleep(0.5)
        _plant_messages(plant, received)
        rows = _table_rows(server.url, "plant")
        caught_up = sum(int(m) for run in tmp_path.glob("*.log")
                        for m in re.findall(r"(\d+) results logged before the last stop", run.read_text()))
    finally:
        plant.close()
        broker.kill()
        server.stop()
        server.remove()
    print(f"\napp killed with SIGKILL at {kills} logged parts, {len(resent)} acknowledgements (both outputs) forgotten "
          f"after the last kill, then finished: {len(logged)} parts logged, {caught_up} logged but not yet queued at a "
          "kill and queued by the next run's catch-up;\nMQTT:", end="")
    mqtt = _figures(received, expected)
    print("PostgreSQL rows:", end="")
    database = _figures(rows, expected)
    assert mqtt["duplicates"] >= LOST_ACKS and database["duplicates"] == 0
