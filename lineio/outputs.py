"""LineOutputs: the sinks of one station, fed through the outbox. It is a listener of the
inspection session (`session.subscribe(outputs)`), or call `publish` with each part's record."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Callable

from .message import message_from_record
from .outbox import Outbox
from .sinks import STATION_STATES, Sink, SinkStatus, SinkWorker, parse_sink_url, safe_url

__all__ = ["LineOutputs", "make_sink", "SINK_CLASSES"]

# scheme -> (module, class, the pip package it needs)
SINK_CLASSES = {
    "mqtt": ("lineio.mqtt", "MqttSink", "paho-mqtt"),
    "mqtts": ("lineio.mqtt", "MqttSink", "paho-mqtt"),
    "http": ("lineio.webhook", "WebhookSink", ""),
    "https": ("lineio.webhook", "WebhookSink", ""),
    "postgresql": ("lineio.postgres", "PostgresSink", "psycopg[binary]"),
    "postgres": ("lineio.postgres", "PostgresSink", "psycopg[binary]"),
    "modbus": ("lineio.modbus", "ModbusSink", ""),
    "opcua": ("lineio.opcua", "OpcUaSink", "asyncua"),
}


def make_sink(url: str) -> Sink:
    """The sink for a URL; ValueError names the URL and the problem (unknown scheme, bad query,
    a Python package missing)."""
    scheme, _, _ = parse_sink_url(url)
    module_name, class_name, package = SINK_CLASSES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{safe_url(url)}: this output needs the Python package {package or e.name} "
                         f"(pip install {package or e.name})") from None
    return getattr(module, class_name)(url)


class LineOutputs:
    """Sinks, their threads and the outbox they share.

    outbox_path: the SQLite file of the outbox (the results log's file, so that `start` can catch
    up with parts that were logged but not yet queued when the app stopped)."""

    def __init__(self, urls: list[str], outbox_path, station: str = "station",
                 on_event: Callable[[str, str], None] | None = None):
        self.station = station
        self.sinks = [make_sink(url) for url in urls]
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"the same output is listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        for sink in self.sinks:
            sink.station = station
        self.outbox = Outbox(Path(outbox_path))
        self.on_event = on_event
        self.workers = [SinkWorker(sink, self.outbox, on_event) for sink in self.sinks]
        self.caught_up = 0
        self._started = False

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sinks]

    def set_trigger_handler(self, handler: Callable[[str, str], bool] | None) -> None:
        """`handler(part_id, origin)` is called when a PLC or the plant asks for one acquisition (Modbus
        coil, OPC UA method: origin 'plc'; MQTT command: 'mqtt'); it returns False when refused."""
        for sink in self.sinks:
            sink.on_trigger = handler

    def set_recipe_handler(self, handler: Callable[[str], str] | None) -> None:
        """`handler(name)` selects a recipe; returns '' when done, else the reason it was not."""
        for sink in self.sinks:
            sink.on_select_recipe = handler

    def start(self) -> int:
        """Register the sinks, queue what a previous run logged but did not queue, start the
        threads. Returns the number of messages queued by that catch-up."""
        for name in self.names:
            self.outbox.register_sink(name)
        self.caught_up = self.outbox.catch_up(self.station, self.names)
        if self.caught_up and self.on_event:
            self.on_event("info", f"{self.caught_up} results logged before the last stop were queued for the outputs")
        for worker in self.workers:
            worker.start()
        self._started = True
        return self.caught_up

    def publish(self, record: Any) -> str:
        """Queue one inspected part for every sink (durable when this returns); returns its message id."""
        message = message_from_record(record, self.station)
        message_id = self.outbox.enqueue(message, self.names) if self.sinks else ""
        for worker in self.workers:
            worker.wake()
        return message_id

    def on_inspection(self, inspection) -> None:
        """inspection.InspectionListener: every part of a session, after its row is committed."""
        self.publish(inspection)

    def on_session_end(self, summary) -> None:
        """inspection.InspectionListener: the session ended; the outputs stay open (their owner closes them)."""

    def set_state(self, state: str, detail: str = "") -> None:
        """The station's state for the sinks that show it (MQTT retained state, OPC UA, Modbus)."""
        if state not in STATION_STATES:
            raise ValueError(f"unknown station state {state!r}; expected one of {', '.join(STATION_STATES)}")
        for sink in self.sinks:
            try:
                sink.on_state(state, detail)
            except Exception as e:  # noqa: BLE001 - a state mirror never stops the station
                if self.on_event:
                    self.on_event("warning", f"{sink.name}: cannot show the station state: {e}")

    def status(self) -> list[SinkStatus]:
        return [w.snapshot() for w in self.workers]

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queue is empty (within `timeout` seconds in all); True if so."""
        end = time.monotonic() + timeout
        return all(w.drain(max(0.0, end - time.monotonic())) for w in self.workers)

    def close(self, drain_timeout: float = 0.0) -> None:
        """Stop the threads (after up to `drain_timeout` seconds of delivering); what is still
        queued stays in the outbox for the next start."""
        if drain_timeout > 0 and self._started:
            self.drain(drain_timeout)
        self.set_state("offline")
        for worker in self.workers:
            worker.stop()
        self.outbox.close()
