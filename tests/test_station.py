"""`main.py station` as the line sees it: a real station process (demo model, demo images) with a
Modbus TCP and an OPC UA output. The PLC (pymodbus) triggers parts and reads the verdict bits; an
OPC UA client reads the state and the last result and selects a recipe; SIGTERM stops the
station cleanly. Prints the trigger-to-verdict times."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspector.paths import DEMO_DATA_DIR, DEMO_MODEL_DIR
from inspector.recipes import Recipe, RecipeStore
from lineio.modbus import Coil, PART_ID_REGISTERS, Reg, decode_text, encode_text
from tests.line_servers import free_port, vision_system, wait_until

REPO = Path(__file__).resolve().parents[1]
STARTUP_S = 120.0   # model load and the OPC UA address space on a busy 2-core machine


def _start_station(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, DECO_INSPECTOR_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "station.out"
    with open(log, "wb") as f:
        process = subprocess.Popen([sys.executable, "main.py", "station", *argv], cwd=REPO, env=env,
                                   stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return process, log


@pytest.mark.slow
def test_plc_triggers_the_station_over_modbus_and_opcua_selects_a_recipe(tmp_path):
    from asyncua import Client
    from pymodbus.client import ModbusTcpClient

    store = RecipeStore(tmp_path / "home" / "recipes")
    source = {"kind": "folder", "target": str(DEMO_DATA_DIR / "coin" / "test" / "good")}
    store.save(Recipe("coins", model=str(DEMO_MODEL_DIR), category="coin", fail_threshold=0.5, review_threshold=0.4,
                      source=source))
    store.save(Recipe("coins-strict", model=str(DEMO_MODEL_DIR), category="coin", fail_threshold=0.01,
                      review_threshold=0.01, source=source))
    modbus_port, opcua_port = free_port(), free_port()
    db = tmp_path / "results.sqlite"
    station, log = _start_station(tmp_path, [
        "--recipe", "coins", "--station", "line1-st2", "--log", str(db), "--status-every", "0",
        "--sink", f"modbus://127.0.0.1:{modbus_port}?unit=1", "--sink", f"opcua://127.0.0.1:{opcua_port}"])
    plc = ModbusTcpClient("127.0.0.1", port=modbus_port)
    timings = []
    try:
        def coils():
            return plc.read_coils(0, count=10, device_id=1).bits[:10]

        wait_until(lambda: station.poll() is None and plc.connect() and coils()[Coil.READY], STARTUP_S,
                   f"the station's READY coil: {log.read_text(errors='replace')[-2000:]}")
        for n in range(1, 4):
            part = f"PLC-{n:03d}"
            plc.write_registers(Reg.PART_ID_IN, encode_text(part), device_id=1)
            start = time.perf_counter()
            plc.write_coil(Coil.TRIGGER, True, device_id=1)
            while not coils()[Coil.RESULT_VALID]:
                assert time.perf_counter() - start < 30, log.read_text(errors="replace")[-2000:]
                time.sleep(0.002)
            timings.append(1000 * (time.perf_counter() - start))
            bits = coils()
            registers = plc.read_holding_registers(0, count=Reg.PART_ID + PART_ID_REGISTERS, device_id=1).registers
            assert registers[Reg.RESULT_COUNTER] == n and registers[Reg.VERDICT] in (1, 2, 3)
            assert sum(bits[c] for c in (Coil.PASS, Coil.REVIEW, Coil.FAIL, Coil.ERROR)) == 1
            assert bits[(Coil.PASS, Coil.REVIEW, Coil.FAIL)[registers[Reg.VERDICT] - 1]]
            assert decode_text(registers[Reg.PART_ID:]) == part
            plc.write_coil(Coil.ACK, True, device_id=1)

        async def opcua() -> dict:
            async with Client(f"opc.tcp://127.0.0.1:{opcua_port}/deco-inspector/") as client:
                value, call = await vision_system(client)
                seen = {"state": await value("system", "State"), "station": await value("system", "Station"),
                        "last": json.loads(await value("results", "LastResult"))}
                seen["missing"] = await call("recipes", "SelectRecipe", "bolts")
                seen["select"] = await call("recipes", "SelectRecipe", "coins-strict")
                seen["accepted"] = await call("system", "StartSingleJob", "UA-1")
                for _ in range(600):
                    if await value("results", "PartId") == "UA-1":
                        break
                    await asyncio.sleep(0.05)
                seen["after"] = json.loads(await value("results", "LastResult"))
                return seen

        seen = asyncio.run(opcua())
    finally:
        plc.close()
        if station.poll() is None:
            station.send_signal(signal.SIGTERM)
        code = station.wait(60)
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert seen["state"] == "ResultAvailable" and seen["station"] == "line1-st2"
    assert seen["last"]["part_id"] == "PLC-003" and seen["last"]["recipe"] == "coins"
    assert seen["missing"].startswith("no recipe named 'bolts'") and seen["select"] == ""
    assert seen["accepted"] is True
    assert seen["after"]["recipe"] == "coins-strict" and seen["after"]["verdict"] == "fail"
    assert seen["after"]["fail_threshold"] == 0.01
    rows = sqlite3.connect(db).execute("SELECT frame_id, recipe FROM parts ORDER BY id").fetchall()
    assert rows == [("PLC-001", "coins"), ("PLC-002", "coins"), ("PLC-003", "coins"), ("UA-1", "coins-strict")]
    assert "station stopped after 4 parts" in output
    print(f"\nPLC trigger to verdict (Modbus TRIGGER coil -> RESULT_VALID, demo model, CPU): "
          f"{', '.join(f'{t:.0f}' for t in timings)} ms, median {statistics.median(timings):.0f} ms")


def test_triggers_queue_one_part_and_name_it():
    from lineio.triggers import PartCounter, TriggerQueue

    taken = []
    triggers = TriggerQueue(on_accept=taken.append)
    assert triggers.accept("  BC\t42  ", "barcode") and not triggers.accept("P-2", "plc")   # one waits at most
    assert triggers.refused == 1 and taken[0].part_id == "BC 42"
    assert triggers.next(0.01).origin == "barcode" and triggers.next(0.01) is None
    counter = PartCounter()
    assert counter.next().endswith("-00001") and counter.next().endswith("-00002")


@pytest.mark.slow
def test_barcode_lines_trigger_the_station_and_name_the_parts(tmp_path):
    db = tmp_path / "results.sqlite"
    env = dict(os.environ, DECO_INSPECTOR_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    station = subprocess.Popen(
        [sys.executable, "main.py", "station", "--source", str(DEMO_DATA_DIR / "coin" / "test" / "good"),
         "--trigger", "software", "--log", str(db), "--status-every", "0"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        while "trigger software" not in "".join(lines):
            line = station.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        for scan in ("4006381333931", "", "LOT7-0012"):   # two scanned barcodes and a bare Enter
            station.stdin.write(scan + "\n")
            station.stdin.flush()
            while not (line := station.stdout.readline()).startswith("part "):
                assert line, "".join(lines)
                lines.append(line)
            lines.append(line)
        station.send_signal(signal.SIGTERM)
        rest, _ = station.communicate(timeout=60)
    finally:
        if station.poll() is None:
            station.kill()
    assert station.returncode == 0, "".join(lines) + rest
    parts = [line.split()[1] for line in lines if line.startswith("part ")]
    assert parts[0] == "4006381333931" and parts[2] == "LOT7-0012" and parts[1].endswith("-00001")
    assert [line.split()[2] for line in lines if line.startswith("part ")] == ["[barcode]", "[software]", "[barcode]"]
    rows = [r[0] for r in sqlite3.connect(db).execute("SELECT frame_id FROM parts ORDER BY id")]
    assert rows == parts and "station stopped after 3 parts" in rest


def test_the_station_runs_on_the_chosen_runtime_or_the_machine_default(tmp_path, monkeypatch):
    import argparse
    import io

    from inspector.station import add_station_arguments, run_station

    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(tmp_path / "home"))
    parser = argparse.ArgumentParser()
    add_station_arguments(parser)
    source = str(DEMO_DATA_DIR / "coin" / "test" / "good")

    def station(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = run_station(parser.parse_args(["--source", source, "--max-parts", "1", "--status-every", "0",
                                              "--log", str(tmp_path / "log.sqlite"), *argv]), out, err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = station("--runtime", "torch", "--precision", "int8")   # a pair the engine does not have
    assert code == 2 and "cannot start the station" in err and "int8 needs runtime openvino" in err
    monkeypatch.setenv("DECO_INSPECTOR_RUNTIME", "torch bf16")   # stands for the machine default (measured once)
    code, out, err = station()
    assert code == 0 and "runtime: torch bf16 ($DECO_INSPECTOR_RUNTIME)" in out, out + err
    code, out, err = station("--runtime", "torch", "--precision", "fp32")   # asked for: no default applied
    assert code == 0 and "runtime:" not in out, out + err
