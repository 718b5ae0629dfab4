"""PLC handshake timing: a real `main.py station` process (the demo model on the demo coin images,
a Modbus TCP output) and a PLC simulated with pymodbus on loopback. For each part the PLC writes
the part id, sets TRIGGER and polls RESULT_VALID every millisecond; the time from setting TRIGGER
to seeing RESULT_VALID is the trigger-to-verdict time (acquisition, inspection, results log,
outbox and the Modbus output included). The PLC then reads the verdict and part id and sets ACK.

    python benchmarks/bench_plc.py                 # 30 parts
    python benchmarks/bench_plc.py --parts 100 --ack

Writes benchmarks/results/plc.json and plc.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lineio.modbus import PART_ID_REGISTERS, Coil, Reg, decode_text, encode_text  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEMO_SOURCE = REPO / "resources" / "demo_data" / "coin" / "test"
STARTUP_S = 180.0
PART_TIMEOUT_S = 30.0
POLL_S = 0.001


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=int, default=30, help="parts to trigger (default 30)")
    p.add_argument("--ack", action="store_true", help="the output waits for the PLC's ACK before the next result")
    p.add_argument("--model", default=str(REPO / "resources" / "demo_model"))
    p.add_argument("--source", default=str(DEMO_SOURCE))
    args = p.parse_args(argv)
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    url = f"modbus://127.0.0.1:{port}?unit=1" + ("&ack=1" if args.ack else "")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DECO_INSPECTOR_HOME=tmp, PYTHONUNBUFFERED="1")
        log = Path(tmp) / "station.out"
        with open(log, "wb") as out:
            station = subprocess.Popen(
                [sys.executable, "main.py", "station", "--model", args.model, "--source", args.source, "--trigger", "plc",
                 "--sink", url, "--log", str(Path(tmp) / "results.sqlite"), "--status-every", "0"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        plc = ModbusTcpClient("127.0.0.1", port=port)
        timings, verdicts = [], []
        try:
            deadline = time.monotonic() + STARTUP_S
            while not (plc.connect() and plc.read_coils(0, count=10, device_id=1).bits[Coil.READY]):
                if station.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the station did not get ready:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
            for n in range(1, args.parts + 1):
                while not plc.read_coils(0, count=10, device_id=1).bits[Coil.READY]:
                    time.sleep(POLL_S)
                plc.write_registers(Reg.PART_ID_IN, encode_text(f"BENCH-{n:05d}"), device_id=1)
                start = time.perf_counter()
                plc.write_coil(Coil.TRIGGER, True, device_id=1)
                while not plc.read_coils(0, count=10, device_id=1).bits[Coil.RESULT_VALID]:
                    if time.perf_counter() - start > PART_TIMEOUT_S:
                        raise SystemExit(f"no result for part {n}:\n{log.read_text(errors='replace')[-3000:]}")
                    time.sleep(POLL_S)
                timings.append(1000 * (time.perf_counter() - start))
                registers = plc.read_holding_registers(0, count=Reg.PART_ID + PART_ID_REGISTERS, device_id=1).registers
                if decode_text(registers[Reg.PART_ID:]) != f"BENCH-{n:05d}":
                    raise SystemExit(f"part {n}: the registers name another part")
                verdicts.append(registers[Reg.VERDICT])
                plc.write_coil(Coil.ACK, True, device_id=1)
        finally:
            plc.close()
            station.send_signal(signal.SIGTERM)
            station.wait(60)
        engine = [float(line.rsplit(" ", 2)[-2]) for line in log.read_text(errors="replace").splitlines()
                  if line.startswith("part BENCH-") and line.endswith(" ms")]
    result = {
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.machine(),
        "cores": os.cpu_count(), "parts": len(timings), "ack": args.ack, "model": Path(args.model).name,
        "trigger_to_verdict_ms": {"median": round(statistics.median(timings), 1), "p90": round(percentile(timings, 90), 1),
                                  "min": round(min(timings), 1), "max": round(max(timings), 1),
                                  "first": round(timings[0], 1)},
        "engine_ms_median": round(statistics.median(engine), 1) if engine else None,
        "verdicts": {name: verdicts.count(code) for name, code in (("pass", 1), ("review", 2), ("fail", 3))},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "plc.json").write_text(json.dumps(result, indent=2))
    t = result["trigger_to_verdict_ms"]
    text = (f"PLC trigger to verdict ({result['parts']} parts, demo model, {result['cores']} cores, "
            f"{'ACK handshake' if args.ack else 'no ACK'}; {result['time']}): median {t['median']} ms, p90 {t['p90']} ms, "
            f"min {t['min']} ms, max {t['max']} ms, first part {t['first']} ms; engine median "
            f"{result['engine_ms_median']} ms per part")
    (RESULTS / "plc.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
