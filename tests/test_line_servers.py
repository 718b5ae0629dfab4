"""Line outputs against real servers on loopback: a Mosquitto broker, a throw-away PostgreSQL
cluster, and the PLC side of Modbus TCP (pymodbus client) and OPC UA (asyncua client)."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import sqlite3
import threading
import time

import pytest

from lineio import LineOutputs
from lineio.modbus import Coil, PART_ID_REGISTERS, Reg, decode_text, encode_text
from tests.line_servers import Mosquitto, Postgres, free_port, make_tls_files, vision_system, wait_until
from tests.test_line_outputs import record


def _json_or_bytes(payload: bytes):
    try:
        return json.loads(payload)
    except ValueError:
        return payload


class Subscriber:
    """An MQTT client (the plant side) that keeps every message of a topic filter."""

    def __init__(self, port: int, topic: str, client_id: str = "plant"):
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, _json_or_bytes(m.payload), m.retain))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), f"could not subscribe to {topic}"

    def take(self, count: int, timeout: float = 20.0) -> list:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_one_message_per_part_and_retained_station_state(tmp_path):
    broker = Mosquitto(tmp_path).start()
    outputs = LineOutputs([f"{broker.url}/line3/st1"], tmp_path / "o.sqlite", station="st1")
    try:
        plant = Subscriber(broker.port, "line3/st1")
        outputs.start()
        outputs.set_state("busy")
        ids = [outputs.publish(record(i, verdict=v)) for i, v in enumerate(["pass", "review", "fail"])]
        assert outputs.drain(20)
        outputs.set_state("ready")
        results = plant.take(3)
        assert [m["message_id"] for _, m, _ in results] == ids
        first = results[0][1]
        assert {k: first[k] for k in ("part_id", "station", "recipe", "category", "verdict", "model_id")} == \
            {"part_id": "P-0000", "station": "st1", "recipe": "coins", "category": "coin", "verdict": "pass",
             "model_id": "m1"}
        assert (first["fail_threshold"], first["review_threshold"], first["score"]) == (0.5, 0.4, 0.0)
        plant.close()
        time.sleep(0.5)   # the state is published without waiting for the broker
        late = Subscriber(broker.port, "line3/st1/state", client_id="late")   # retained: a newcomer gets it
        topic, state, retained = late.take(1)[0]
        assert (topic, state["state"], state["station"], retained) == ("line3/st1/state", "ready", "st1", True)
        late.close()
        assert outputs.status()[0].connected and outputs.status()[0].sent == 3
    finally:
        outputs.close()
        broker.kill()


def test_mqtt_over_tls_checks_the_broker_certificate(tmp_path):
    tls = make_tls_files()
    broker = Mosquitto(tmp_path, tls=tls).start()
    trusted = LineOutputs([f"mqtts://127.0.0.1:{broker.port}/line/tls?ca={tls['ca']}"], tmp_path / "a.sqlite",
                          station="st1")
    untrusted = LineOutputs([f"mqtts://127.0.0.1:{broker.port}/line/tls"], tmp_path / "b.sqlite", station="st1")
    try:
        trusted.start()
        untrusted.start()
        trusted.publish(record(1))
        untrusted.publish(record(1))
        assert trusted.drain(20) and trusted.status()[0].connected
        time.sleep(1.0)
        status = untrusted.status()[0]   # the system's CAs do not know this broker: nothing goes out
        assert not status.connected and status.queued == 1
    finally:
        trusted.close()
        untrusted.close()
        broker.kill()
        shutil.rmtree(tls["folder"], ignore_errors=True)


def test_postgres_rows_keyed_by_message_id_never_double(tmp_path):
    import psycopg

    server = Postgres().start()
    try:
        outputs = LineOutputs([f"{server.url}?table=plant_results"], tmp_path / "o.sqlite", station="st1")
        outputs.start()
        ids = [outputs.publish(record(i, part_id=i + 1)) for i in range(4)]
        assert outputs.drain(20)
        sent = sqlite3.connect(tmp_path / "o.sqlite").execute(
            "SELECT payload FROM line_outbox WHERE message_id = ?", (ids[0],)).fetchone()[0]
        outputs.sinks[0].deliver(json.loads(sent))   # a resend after a lost acknowledgement: no second row
        outputs.close()
        with psycopg.connect(server.url) as conn:
            rows = conn.execute("SELECT message_id, part_id, log_id, verdict, score FROM plant_results "
                                "ORDER BY log_id").fetchall()
        assert [r[0] for r in rows] == ids and [r[1] for r in rows] == [f"P-{i:04d}" for i in range(4)]
        assert [r[2] for r in rows] == [1, 2, 3, 4] and rows[1][4] == pytest.approx(0.01)
    finally:
        server.stop()
        server.remove()


class Station:
    """The station side of a handshake test: takes triggers from the outputs and answers each with
    a result after `inspect_s` seconds, as the real station does (busy, publish, ready)."""

    def __init__(self, outputs: LineOutputs):
        self.outputs = outputs
        self.triggers: queue.Queue = queue.Queue()
        self.recipes: list[str] = []
        outputs.set_trigger_handler(self.trigger)
        outputs.set_recipe_handler(self.select)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.count = 0

    def trigger(self, part_id: str, origin: str = "plc") -> bool:
        self.triggers.put(part_id)
        self.outputs.set_state("busy")
        return True

    def select(self, name: str) -> str:
        if name != "coins":
            return f"no recipe named {name!r}"
        self.recipes.append(name)
        return ""

    def _run(self) -> None:
        while (part_id := self.triggers.get()) is not None:
            self.count += 1
            self.outputs.publish(record(self.count, verdict="fail") | {"frame_id": part_id or f"#{self.count}"})
            self.outputs.set_state("ready")

    def start(self) -> "Station":
        self._thread.start()
        self.outputs.set_state("ready")
        return self

    def stop(self) -> None:
        self.triggers.put(None)
        self._thread.join(5)


def test_modbus_plc_handshake_with_pymodbus(tmp_path):
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    outputs = LineOutputs([f"modbus://127.0.0.1:{port}?unit=1&ack=1"], tmp_path / "o.sqlite", station="st1")
    station = Station(outputs).start()
    outputs.start()
    plc = ModbusTcpClient("127.0.0.1", port=port)
    try:
        wait_until(lambda: plc.connect(), 10, "the station's Modbus server")

        def coils():
            return plc.read_coils(0, count=10, device_id=1).bits[:10]

        def registers(start, count):
            return plc.read_holding_registers(start, count=count, device_id=1).registers

        wait_until(lambda: coils()[Coil.READY], 10, "READY")
        for n, part in enumerate(["A-1", "A-2"], start=1):
            plc.write_registers(Reg.PART_ID_IN, encode_text(part), device_id=1)
            plc.write_coil(Coil.TRIGGER, True, device_id=1)
            wait_until(lambda: coils()[Coil.RESULT_VALID], 10, "RESULT_VALID")
            bits = coils()
            assert not bits[Coil.TRIGGER] and bits[Coil.FAIL] and not bits[Coil.PASS] and bits[Coil.READY]
            assert registers(Reg.RESULT_COUNTER, 3) == [n, 3, round(0.01 * n * 1000)]
            assert decode_text(registers(Reg.PART_ID, PART_ID_REGISTERS)) == part
            plc.write_coil(Coil.ACK, True, device_id=1)
            wait_until(lambda: not coils()[Coil.RESULT_VALID], 5, "RESULT_VALID cleared by ACK")
        assert plc.write_coil(Coil.READY, True, device_id=1).isError()   # station outputs are read-only
        assert outputs.drain(10) and outputs.status()[0].sent == 2
    finally:
        plc.close()
        station.stop()
        outputs.close()


def test_modbus_ack_mode_holds_each_result_until_the_plc_has_read_it(tmp_path):
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    outputs = LineOutputs([f"modbus://127.0.0.1:{port}?unit=1&ack=1"], tmp_path / "o.sqlite", station="st1")
    outputs.start()
    plc = ModbusTcpClient("127.0.0.1", port=port)
    try:
        wait_until(lambda: plc.connect(), 10, "the station's Modbus server")
        for i in range(3):
            outputs.publish(record(i, verdict=("pass", "review", "fail")[i]))

        def shown():
            registers = plc.read_holding_registers(0, count=Reg.PART_ID + PART_ID_REGISTERS, device_id=1).registers
            return registers[Reg.RESULT_COUNTER], registers[Reg.VERDICT], decode_text(registers[Reg.PART_ID:])

        for n, (verdict, part) in enumerate([(1, "P-0000"), (2, "P-0001"), (3, "P-0002")], start=1):
            wait_until(lambda: shown()[0] == n, 15, f"result {n}")
            time.sleep(0.3)   # the next result waits for the ACK, however long the PLC takes
            assert shown() == (n, verdict, part) and outputs.status()[0].queued == 3 - n + 1
            plc.write_coil(Coil.ACK, True, device_id=1)
        assert outputs.drain(15)
    finally:
        plc.close()
        outputs.close()


def test_modbus_server_answers_bad_requests_with_modbus_exceptions(tmp_path):
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    outputs = LineOutputs([f"modbus://127.0.0.1:{port}?unit=3&coils=100&registers=200"], tmp_path / "o.sqlite",
                          station="st1")
    outputs.start()
    outputs.set_state("ready")
    plc = ModbusTcpClient("127.0.0.1", port=port, retries=0)
    try:
        wait_until(lambda: plc.connect(), 10, "the station's Modbus server")
        assert plc.read_coils(100 + Coil.READY, count=1, device_id=3).bits[0]           # moved blocks
        assert plc.read_discrete_inputs(100, count=10, device_id=3).bits[Coil.READY]    # coils as inputs
        assert plc.read_input_registers(200 + Reg.STATE, count=1, device_id=3).registers == [1]
        assert plc.read_coils(0, count=1, device_id=3).isError()                        # outside the block
        assert plc.read_holding_registers(200 + Reg.PART_ID_IN, count=30, device_id=3).isError()
        assert plc.write_register(200 + Reg.VERDICT, 1, device_id=3).isError()         # station output
        assert plc.read_coils(100, count=1, device_id=4).isError()                      # another unit
        assert not plc.write_registers(200 + Reg.PART_ID_IN, encode_text("X-1"), device_id=3).isError()
        assert decode_text(plc.read_holding_registers(200 + Reg.PART_ID_IN, count=PART_ID_REGISTERS,
                                                      device_id=3).registers) == "X-1"
    finally:
        plc.close()
        outputs.close()


def test_opcua_client_reads_state_and_result_selects_a_recipe_and_triggers(tmp_path):
    from asyncua import Client

    port = free_port()
    outputs = LineOutputs([f"opcua://127.0.0.1:{port}"], tmp_path / "o.sqlite", station="st1")
    station = Station(outputs).start()
    outputs.start()
    wait_until(lambda: outputs.status()[0].connected, 60, "the OPC UA server")

    async def plc() -> dict:
        async with Client(f"opc.tcp://127.0.0.1:{port}/deco-inspector/") as client:
            value, call = await vision_system(client)
            seen = {"state_before": await value("system", "State")}
            seen["refused"] = await call("recipes", "SelectRecipe", "bolts")
            seen["selected"] = await call("recipes", "SelectRecipe", "coins")
            seen["active"] = await value("recipes", "ActiveRecipe")
            seen["accepted"] = await call("system", "StartSingleJob", "B-7")
            for _ in range(200):
                if await value("results", "ResultCounter") == 1:
                    break
                await asyncio.sleep(0.05)
            for name in ("ResultCounter", "PartId", "Verdict", "VerdictCode", "Score", "LastResult"):
                seen[name] = await value("results", name)
            seen["state_after"] = await value("system", "State")
            return seen

    try:
        seen = asyncio.run(plc())
    finally:
        station.stop()
        outputs.close()
    assert seen["state_before"] == "Ready" and seen["refused"] == "no recipe named 'bolts'"
    assert seen["selected"] == "" and seen["active"] == "coins" and station.recipes == ["coins"]
    assert seen["accepted"] is True
    assert (seen["ResultCounter"], seen["PartId"], seen["Verdict"], seen["VerdictCode"]) == (1, "B-7", "fail", 3)
    assert seen["Score"] == pytest.approx(0.01) and json.loads(seen["LastResult"])["part_id"] == "B-7"
    assert seen["state_after"] == "ResultAvailable"


def test_mqtt_commands_trigger_and_switch_recipes(tmp_path):
    broker = Mosquitto(tmp_path).start()
    outputs = LineOutputs([f"{broker.url}/line4/st1?commands=1"], tmp_path / "o.sqlite", station="st1")
    station = Station(outputs).start()
    plant = Subscriber(broker.port, "line4/st1/#")
    try:
        outputs.start()
        wait_until(lambda: outputs.status()[0].connected, 10, "the broker")
        time.sleep(0.3)   # the station's subscription to its command topic
        for request in ({"command": "trigger", "part_id": "M-1", "request_id": "a"},
                        {"command": "select_recipe", "name": "bolts", "request_id": "b"},
                        {"command": "select_recipe", "name": "coins", "request_id": "c"}, {"command": "dance"}):
            plant.client.publish("line4/st1/command", json.dumps(request), qos=1)
        plant.client.publish("line4/st1/command", b"\xff not json", qos=1)
        seen = {}
        wait_until(lambda: _collect(plant, seen) >= 6, 20, "the replies and the result")
    finally:
        station.stop()
        outputs.close()
        plant.close()
        broker.kill()
    replies = {m.get("request_id"): m for topic, m in seen.values() if topic.endswith("/reply")}
    assert replies["a"]["ok"] and replies["c"]["ok"] and station.recipes == ["coins"]
    assert not replies["b"]["ok"] and "no recipe named 'bolts'" in replies["b"]["detail"]
    anonymous = [m["detail"] for topic, m in seen.values() if topic.endswith("/reply") and m["request_id"] is None]
    assert sorted(d.split(" ")[0] for d in anonymous) == ["not", "unknown"]
    assert any("unknown command 'dance'" in d for d in anonymous)
    results = [m for topic, m in seen.values() if topic == "line4/st1"]
    assert [m["part_id"] for m in results] == ["M-1"]


def _collect(plant: Subscriber, seen: dict) -> int:
    """Messages so far (by arrival), state messages left out."""
    while not plant.messages.empty():
        topic, message, _ = plant.messages.get()
        if not topic.endswith("/state") and not topic.endswith("/command"):
            seen[len(seen)] = (topic, message)
    return len(seen)
