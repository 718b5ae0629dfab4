"""Triggers: what starts one acquisition on a station, and the part id that travels with it.

    free      the station inspects frame after frame (no trigger)
    software  one acquisition per line on standard input: a barcode scanner typing into the station
              (the line is the part id) or an operator pressing Enter (the counter names the part);
              `TriggerQueue.accept` is the same trigger for any other caller (a button, a hotkey)
    plc       a PLC asks: the Modbus TRIGGER coil (part id from PART_ID_IN) or the OPC UA method
              StartSingleJob(PartId)

In the software and plc modes the outputs' commands trigger too (`TriggerQueue.accept` is their
handler): the PLC's, and a plant system's MQTT command {"command": "trigger", "part_id": ...}.

One trigger waits at most: a trigger that comes while the station is busy is refused (the PLC
sees that: the Modbus coil stays set until the station takes it, StartSingleJob returns False).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, TextIO

__all__ = ["TRIGGER_MODES", "Trigger", "TriggerQueue", "PartCounter", "StdinTrigger"]

TRIGGER_MODES = ("free", "software", "plc")
PART_ID_CHARS = 64     # a longer part id (a runaway barcode scan) is cut


@dataclass(frozen=True)
class Trigger:
    """One acquisition request: the part id ('' = let the counter name it), where it came from
    ('free', 'software', 'barcode', 'plc', 'mqtt') and when (time.monotonic())."""

    part_id: str
    origin: str
    time: float


class PartCounter:
    """Part ids for parts nobody named: <run start yymmddHHMMSS>-<n>, unique across runs."""

    def __init__(self, start: datetime | None = None):
        self.tag = (start or datetime.now()).strftime("%y%m%d%H%M%S")
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.tag}-{self.count:05d}"


class TriggerQueue:
    """Holds at most one waiting trigger. `on_accept` runs when one is taken (the station shows busy)."""

    def __init__(self, on_accept: Callable[[Trigger], None] | None = None):
        self._queue: queue.Queue[Trigger] = queue.Queue(maxsize=1)
        self.on_accept = on_accept
        self.refused = 0

    def accept(self, part_id: str = "", origin: str = "software") -> bool:
        """Queue a trigger; False (refused) while another one waits."""
        trigger = Trigger(" ".join(str(part_id).split())[:PART_ID_CHARS], origin, time.monotonic())
        try:
            self._queue.put_nowait(trigger)
        except queue.Full:
            self.refused += 1
            return False
        if self.on_accept is not None:
            self.on_accept(trigger)
        return True

    def next(self, timeout: float) -> Trigger | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class StdinTrigger:
    """Reads lines from a text stream in its own thread: each line is one software trigger (a
    non-empty line is a barcode, the part id). Stops at the end of the stream."""

    def __init__(self, stream: TextIO, triggers: TriggerQueue, on_refused: Callable[[str], None] | None = None):
        self.stream = stream
        self.triggers = triggers
        self.on_refused = on_refused
        self._thread = threading.Thread(target=self._run, name="stdin trigger", daemon=True)

    def start(self) -> "StdinTrigger":
        self._thread.start()
        return self

    def _run(self) -> None:
        for line in self.stream:
            text = line.strip()
            if not self.triggers.accept(text, "barcode" if text else "software") and self.on_refused:
                self.on_refused(text)
