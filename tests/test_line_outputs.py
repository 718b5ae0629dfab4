"""Line outputs without external servers: messages, sink URLs, the outbox (durable, stable ids,
catch-up with the results log), the webhook sink against a stdlib HTTP receiver on loopback."""

from __future__ import annotations

import math
import sqlite3

import pytest

from inspection import Inspection
from inspection.results_log import ResultsLog
from lineio import LineOutputs, Outbox, message_from_record, parse_sink_url, safe_url
from lineio.outputs import make_sink
from tests.line_servers import HttpReceiver, free_port, wait_until


def record(i: int, verdict: str = "pass", **extra) -> dict:
    """An inspection record as Inspection.to_dict() gives it (part_id: the results-log row)."""
    return {"part_id": None, "frame_id": f"P-{i:04d}", "source": "camera 0", "verdict": verdict, "score": 0.01 * i,
            "fail_threshold": 0.5, "review_threshold": 0.4, "category": "coin", "model_id": "m1", "recipe": "coins",
            "time": "2026-12-04T21:00:00.000+00:00", **extra}


def test_message_carries_the_fields_and_json_safe_numbers():
    part = Inspection(source="camera 0", frame_id="P-7", index=3, verdict="fail", score=float("nan"),
                      fail_threshold=0.5, review_threshold=0.4, category="coin", model_id="m1", recipe="r", part_id=12,
                      time="2026-12-04T21:00:00.000+00:00", overlay_path="/tmp/o.png")
    m = message_from_record(part, "st1")
    assert m["part_id"] == "P-7" and m["log_id"] == 12 and m["station"] == "st1" and m["verdict"] == "fail"
    assert m["score"] is None and m["fail_threshold"] == 0.5 and m["review_threshold"] == 0.4
    assert m["overlay_path"] == "/tmp/o.png" and m["recipe"] == "r" and m["model_id"] == "m1"
    with pytest.raises(ValueError, match="unknown verdict"):
        message_from_record(record(1, verdict="maybe"), "st1")
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("url, problem", [
    ("ftp://host/x", "unknown output"), ("mqtt:///topic", "no host"), ("mqtt://host:99999/t", "port"),
    ("modbus://host:502?unit=300", "unit must be"), ("postgresql://u@h/db?table=a;drop", "plain SQL name"),
])
def test_bad_sink_urls_are_refused_with_the_reason(url, problem):
    with pytest.raises(ValueError, match=problem):
        make_sink(url)


def test_passwords_never_show():
    assert safe_url("postgresql://plant:s3cret@db:5432/q") == "postgresql://plant:***@db:5432/q"
    scheme, parts, query = parse_sink_url("mqtt://u:pw@broker:1884/line/3?client_id=x")
    assert (scheme, parts.port, query) == ("mqtt", 1884, {"client_id": "x"})
    assert "pw" not in make_sink("mqtt://u:pw@broker/line").name


def test_outbox_keeps_one_row_per_sink_and_message_and_stable_ids(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    m = message_from_record(record(1, part_id=41), "st1")
    first = box.enqueue(m, ["a", "b"])
    assert first == box.enqueue(m, ["a", "b"]) == box.message_id(41)   # same log row, same id, no second row
    assert box.counts("a") == {"pending": 1, "sent": 0, "rejected": 0}
    no_log = box.enqueue(message_from_record(record(2), "st1"), ["a"])
    assert no_log != first and len(box.pending("a")) == 2
    box.mark_sent([box.pending("a")[0].seq])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")   # a restart: same station id, same message ids, queue intact
    assert again.message_id(41) == first
    assert [r.message["message_id"] for r in again.pending("a")] == [no_log]


def test_catch_up_queues_logged_parts_that_never_reached_the_outbox(tmp_path):
    db = tmp_path / "results.sqlite"
    log = ResultsLog(db)
    log.add(source="camera 0", frame_id="old", verdict="pass", score=0.1, threshold=0.5)
    box = Outbox(db)
    box.register_sink("a")                      # a new sink does not get the log's history
    ids = [log.add(source="camera 0", frame_id=f"P-{i}", verdict="fail", score=0.9, threshold=0.5) for i in range(3)]
    box.enqueue(message_from_record({"part_id": ids[0], "frame_id": "P-0", "verdict": "fail"}, "st1"), ["a"])
    assert box.catch_up("st1", ["a"]) == 2      # the two logged after the crash point
    queued = [r.message for r in box.pending("a")]
    assert [m["part_id"] for m in queued] == ["P-0", "P-1", "P-2"]
    assert [m["message_id"] for m in queued] == [box.message_id(i) for i in ids]
    assert box.catch_up("st1", ["a"]) == 0
    log.close()


def test_webhook_delivers_retries_and_keeps_refused_messages(tmp_path):
    receiver = HttpReceiver()
    receiver.answers = [503, 200, 400]   # the first message: retried, then taken; the second: refused for good
    events = []
    outputs = LineOutputs([receiver.url], tmp_path / "o.sqlite", station="st1", on_event=lambda *e: events.append(e))
    try:
        outputs.start()
        ids = [outputs.publish(record(i)) for i in range(5)]
        assert outputs.drain(20)
        status = outputs.status()[0]
        assert (status.sent, status.rejected, status.queued) == (4, 1, 0) and status.connected
    finally:
        outputs.close()
        receiver.close()
    received = [b["message_id"] for b in receiver.bodies]
    assert received == [ids[0]] + ids[2:] and receiver.keys == received
    assert receiver.bodies[0]["part_id"] == "P-0000" and receiver.bodies[0]["station"] == "st1"
    conn = sqlite3.connect(tmp_path / "o.sqlite")
    assert conn.execute("SELECT message_id, last_error FROM line_outbox WHERE state = 'rejected'").fetchall() == \
        [(ids[1], "HTTP 400 Bad Request: ok")]
    assert any("rejected" in text for _, text in events)


def test_results_wait_in_the_outbox_while_the_receiver_is_away(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/results"
    outputs = LineOutputs([url], tmp_path / "o.sqlite", station="st1")   # nobody listens there
    outputs.start()
    ids = [outputs.publish(record(i)) for i in range(3)]
    wait_until(lambda: outputs.status()[0].last_error, 10, "the failed delivery")
    status = outputs.status()[0]
    assert status.queued == 3 and not status.connected and "cannot reach" in status.last_error
    outputs.close()
    receiver = HttpReceiver(port)   # the app starts again later, the receiver is back
    outputs = LineOutputs([url], tmp_path / "o.sqlite", station="st1")
    try:
        outputs.start()
        assert outputs.drain(20)
    finally:
        outputs.close()
        receiver.close()
    assert [b["message_id"] for b in receiver.bodies] == ids


def test_outputs_command_lists_queues_and_requeues_rejected(tmp_path, capsys):
    import main

    box = Outbox(tmp_path / "o.sqlite")
    for i in range(3):
        box.enqueue(message_from_record(record(i, part_id=i + 1), "st1"), ["http://mes/x", "mqtt://b/t"])
    rows = box.pending("http://mes/x")
    box.mark_sent([rows[0].seq])
    box.mark_rejected(rows[1].seq, "HTTP 400 Bad Request: no such line")
    box.mark_failed(rows[2].seq, "cannot reach mes: refused")
    box.close()
    assert main.main(["outputs", "--outbox", str(tmp_path / "o.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "http://mes/x: 1 pending, 1 sent, 1 rejected; oldest pending since" in out
    assert "last error: cannot reach mes: refused" in out and "mqtt://b/t: 3 pending, 0 sent, 0 rejected" in out
    assert main.main(["outputs", "--outbox", str(tmp_path / "o.sqlite"), "--retry-rejected", "http://mes/x"]) == 0
    assert "1 rejected messages queued again" in capsys.readouterr().out
    assert Outbox(tmp_path / "o.sqlite").counts("http://mes/x") == {"pending": 2, "sent": 1, "rejected": 0}
    assert main.main(["outputs", "--outbox", str(tmp_path / "missing.sqlite")]) == 2
