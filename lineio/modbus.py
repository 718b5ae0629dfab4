"""Modbus TCP output: the station is a Modbus TCP server (slave) that the PLC polls — the usual
vision-system handshake over coils and holding registers.

    modbus://0.0.0.0:1502?unit=1&coils=0&registers=0&ack=1

`coils` and `registers` move the two blocks below to another start address; `ack=1` makes the
station wait for the PLC's acknowledgement of each result before it presents the next one
(a result is then delivered only once the PLC has read it).

Coils (0-based offsets from `coils`; also readable as discrete inputs)
    0 TRIGGER       PLC writes 1: take one picture. The station resets it to 0 when it takes the
                    trigger (while busy the trigger waits until the station is ready)
    1 READY         station: ready for a trigger
    2 BUSY          station: inspecting
    3 RESULT_VALID  station: a new result is in the registers below
    4 PASS  5 REVIEW  6 FAIL  7 ERROR   the verdict of that result (exactly one is 1)
    8 ACK           PLC writes 1 after reading the result; the station clears RESULT_VALID and ACK
    9 FAULT         station: something is wrong (no model, camera lost); see STATE
Holding registers (0-based offsets from `registers`; also readable as input registers)
    0 RESULT_COUNTER  +1 per result (wraps at 65535)
    1 VERDICT         0 none, 1 pass, 2 review, 3 fail, 4 error
    2 SCORE           score x 1000 (0..65535)
    3 STATE           0 offline, 1 ready, 2 busy, 3 error
    4..23  PART_ID    the result's part id, ASCII, 2 characters per register (high byte first), NUL padded
    24..43 PART_ID_IN PLC writes the next part's id here before setting TRIGGER (optional)

Implemented on asyncio streams (function codes 1, 2, 3, 4, 5, 6, 15, 16); the tests drive it
with pymodbus as the PLC.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time

from .message import VERDICT_CODES
from .sinks import Sink, SinkError, parse_sink_url

__all__ = ["ModbusSink", "Coil", "Reg", "COIL_COUNT", "REGISTER_COUNT", "PART_ID_REGISTERS", "encode_text",
           "decode_text", "STATE_CODES"]


class Coil:
    TRIGGER, READY, BUSY, RESULT_VALID, PASS, REVIEW, FAIL, ERROR, ACK, FAULT = range(10)


class Reg:
    RESULT_COUNTER, VERDICT, SCORE, STATE, PART_ID, PART_ID_IN = 0, 1, 2, 3, 4, 24


COIL_COUNT = 10
PART_ID_REGISTERS = 20           # 40 characters
REGISTER_COUNT = Reg.PART_ID_IN + PART_ID_REGISTERS
PLC_WRITABLE_COILS = {Coil.TRIGGER, Coil.ACK}
PLC_WRITABLE_REGISTERS = set(range(Reg.PART_ID_IN, Reg.PART_ID_IN + PART_ID_REGISTERS))
STATE_CODES = {"offline": 0, "ready": 1, "busy": 2, "error": 3}
VERDICT_COILS = {"pass": Coil.PASS, "review": Coil.REVIEW, "fail": Coil.FAIL, "error": Coil.ERROR}
SCORE_SCALE = 1000
ACK_TIMEOUT_S = 10.0             # with ack=1: how long a result waits for the PLC before it is presented again
START_TIMEOUT_S = 10.0
MAX_PDU = 253

# exception codes
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


def encode_text(text: str, registers: int = PART_ID_REGISTERS) -> list[int]:
    """ASCII text -> registers, 2 characters each (high byte first), NUL padded, cut to fit."""
    data = text.encode("ascii", "replace")[:2 * registers].ljust(2 * registers, b"\0")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def decode_text(values: list[int]) -> str:
    data = b"".join(struct.pack(">H", v & 0xFFFF) for v in values)
    return data.split(b"\0", 1)[0].decode("ascii", "replace").strip()


class ModbusSink(Sink):
    scheme = "modbus"

    def __init__(self, url: str):
        super().__init__(url)
        _, parts, query = parse_sink_url(url)
        self.host, self.port = parts.hostname, parts.port or 502
        try:
            self.unit = int(query.get("unit", 1))
            self.coil_base = int(query.get("coils", 0))
            self.register_base = int(query.get("registers", 0))
        except ValueError:
            raise ValueError(f"{self.name}: unit, coils and registers must be whole numbers") from None
        if not 0 <= self.unit <= 255:
            raise ValueError(f"{self.name}: unit must be 0..255, got {self.unit}")
        if not (0 <= self.coil_base <= 65535 - COIL_COUNT and 0 <= self.register_base <= 65535 - REGISTER_COUNT):
            raise ValueError(f"{self.name}: coils/registers start address out of range")
        self.ack = query.get("ack", "0").lower() in ("1", "true", "yes")
        self.coils = [False] * COIL_COUNT
        self.registers = [0] * REGISTER_COUNT
        self._lock = threading.Lock()
        self._acked = threading.Event()
        self._last_message_id = ""
        self._clients = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._state = "offline"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.bound_port: int | None = None

    @property
    def connected(self) -> bool:
        return self._server is not None and self._clients > 0

    # --- the server ---------------------------------------------------------------------------

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"modbus {self.port}", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, self.host, self.port), self._loop)
        try:
            self._server = future.result(START_TIMEOUT_S)
        except OSError as e:
            raise SinkError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.bound_port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients += 1
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                transaction, protocol, length, unit = struct.unpack(">HHHB", header)
                if length < 2 or length > MAX_PDU + 1:
                    break
                pdu = await reader.readexactly(length - 1)
                if protocol != 0:
                    continue
                reply = self._handle(unit, pdu)
                writer.write(struct.pack(">HHHB", transaction, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients -= 1
            self._writers.discard(writer)
            writer.close()

    def _handle(self, unit: int, pdu: bytes) -> bytes:
        function = pdu[0]
        if unit not in (self.unit, 0, 255):
            return bytes([function | 0x80, 0x0B])   # gateway target device failed to respond
        try:
            if function in (1, 2, 3, 4):
                address, count = struct.unpack(">HH", pdu[1:5])
                return bytes([function]) + self._read(function, address, count)
            if function == 5:
                address, value = struct.unpack(">HH", pdu[1:5])
                if value not in (0x0000, 0xFF00):
                    raise _Exception(ILLEGAL_VALUE)
                self._write_coils(address, [value == 0xFF00])
                return pdu[:5]
            if function == 6:
                address, value = struct.unpack(">HH", pdu[1:5])
                self._write_registers(address, [value])
                return pdu[:5]
            if function == 15:
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                bits = [bool(pdu[6 + i // 8] >> (i % 8) & 1) for i in range(count)]
                if nbytes != (count + 7) // 8 or len(pdu) < 6 + nbytes:
                    raise _Exception(ILLEGAL_VALUE)
                self._write_coils(address, bits)
                return pdu[:5]
            if function == 16:
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                if nbytes != 2 * count or len(pdu) < 6 + nbytes:
                    raise _Exception(ILLEGAL_VALUE)
                self._write_registers(address, list(struct.unpack(f">{count}H", pdu[6:6 + nbytes])))
                return pdu[:5]
            raise _Exception(ILLEGAL_FUNCTION)
        except _Exception as e:
            return bytes([function | 0x80, e.code])
        except (struct.error, IndexError):
            return bytes([function | 0x80, ILLEGAL_VALUE])

    def _read(self, function: int, address: int, count: int) -> bytes:
        bits = function in (1, 2)
        base, size = (self.coil_base, COIL_COUNT) if bits else (self.register_base, REGISTER_COUNT)
        limit = 2000 if bits else 125
        if not 1 <= count <= limit:
            raise _Exception(ILLEGAL_VALUE)
        start = address - base
        if start < 0 or start + count > size:
            raise _Exception(ILLEGAL_ADDRESS)
        with self._lock:
            if bits:
                values = self.coils[start:start + count]
                packed = bytearray((count + 7) // 8)
                for i, v in enumerate(values):
                    if v:
                        packed[i // 8] |= 1 << (i % 8)
                return bytes([len(packed)]) + bytes(packed)
            values = self.registers[start:start + count]
        return bytes([2 * count]) + struct.pack(f">{count}H", *values)

    def _write_coils(self, address: int, values: list[bool]) -> None:
        start = address - self.coil_base
        offsets = range(start, start + len(values))
        if start < 0 or start + len(values) > COIL_COUNT or not set(offsets) <= PLC_WRITABLE_COILS:
            raise _Exception(ILLEGAL_ADDRESS)
        trigger = ack = False
        with self._lock:
            for offset, value in zip(offsets, values):
                if offset == Coil.TRIGGER and value and not self.coils[Coil.TRIGGER]:
                    trigger = True
                if offset == Coil.ACK and value:
                    ack = True
                self.coils[offset] = value
            if ack:
                self.coils[Coil.ACK] = False
                self.coils[Coil.RESULT_VALID] = False
        if ack:
            self._acked.set()
        if trigger:
            self._take_trigger()

    def _write_registers(self, address: int, values: list[int]) -> None:
        start = address - self.register_base
        if start < 0 or not set(range(start, start + len(values))) <= PLC_WRITABLE_REGISTERS:
            raise _Exception(ILLEGAL_ADDRESS)
        with self._lock:
            self.registers[start:start + len(values)] = values

    def _take_trigger(self) -> None:
        """Hand a waiting trigger to the station when it is ready; the coil goes back to 0 when taken."""
        with self._lock:
            if not self.coils[Coil.TRIGGER] or self._state != "ready" or self.on_trigger is None:
                return
            part_id = decode_text(self.registers[Reg.PART_ID_IN:Reg.PART_ID_IN + PART_ID_REGISTERS])
        if self.on_trigger(part_id, "plc"):
            with self._lock:
                self.coils[Coil.TRIGGER] = False
                self.registers[Reg.PART_ID_IN:Reg.PART_ID_IN + PART_ID_REGISTERS] = [0] * PART_ID_REGISTERS
                self.coils[Coil.RESULT_VALID] = False

    # --- the station side -------------------------------------------------------------------

    def on_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self._state = state
            self.coils[Coil.READY] = state == "ready"
            self.coils[Coil.BUSY] = state == "busy"
            self.coils[Coil.FAULT] = state == "error"
            self.registers[Reg.STATE] = STATE_CODES[state]
        if state == "ready":
            self._take_trigger()

    def deliver(self, message: dict) -> None:
        if self._server is None:
            raise SinkError(f"the Modbus server on {self.host}:{self.port} is not running")
        if self.ack and self.coils[Coil.RESULT_VALID] and message["message_id"] != self._last_message_id:
            raise SinkError("the PLC has not acknowledged the previous result (ACK coil)")
        score = message.get("score")
        with self._lock:
            if message["message_id"] != self._last_message_id:
                self.registers[Reg.RESULT_COUNTER] = (self.registers[Reg.RESULT_COUNTER] + 1) & 0xFFFF
                self._last_message_id = message["message_id"]
            self.registers[Reg.VERDICT] = VERDICT_CODES[message["verdict"]]
            self.registers[Reg.SCORE] = 0 if score is None else max(0, min(0xFFFF, round(score * SCORE_SCALE)))
            self.registers[Reg.PART_ID:Reg.PART_ID + PART_ID_REGISTERS] = encode_text(message.get("part_id") or "")
            for verdict, coil in VERDICT_COILS.items():
                self.coils[coil] = verdict == message["verdict"]
            self.coils[Coil.RESULT_VALID] = True
            self._acked.clear()
        if self.ack:
            deadline = time.monotonic() + ACK_TIMEOUT_S
            while not self._acked.wait(0.05):
                if self.stopping.is_set():
                    raise SinkError("stopped before the PLC acknowledged the result")
                if time.monotonic() > deadline:
                    raise SinkError(f"the PLC did not acknowledge result {self.registers[Reg.RESULT_COUNTER]} "
                                    f"within {ACK_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)
        self._loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._server = None


class _Exception(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code
