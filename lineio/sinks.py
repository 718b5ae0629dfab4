"""Sinks: where results go. A sink delivers one message at a time and raises when it could not;
its `SinkWorker` thread takes messages from the outbox, retries with backoff and keeps the status.

Sink URLs:
    mqtt://host:1883/topic            MQTT broker, one JSON message per part, QoS 1 (mqtts://host:8883 with TLS)
    http://host/path, https://...     webhook: POST JSON
    postgresql://user@host/db         central results table (?table=NAME)
    modbus://0.0.0.0:1502?unit=1      Modbus TCP server for the PLC (coils and registers)
    opcua://0.0.0.0:4840              OPC UA server (state machine, last result, recipe, trigger)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .message import now_iso
from .outbox import Outbox, OutboxError

__all__ = ["Sink", "SinkError", "RejectedMessage", "SinkStatus", "SinkWorker", "parse_sink_url", "safe_url",
           "SCHEMES", "STATION_STATES"]

SCHEMES = ("mqtt", "mqtts", "http", "https", "postgresql", "postgres", "modbus", "opcua")
STATION_STATES = ("ready", "busy", "error", "offline")
RETRY_FIRST_S = 0.5      # first wait after a failed delivery; doubles up to RETRY_MAX_S
RETRY_MAX_S = 30.0
BATCH = 50               # messages read from the outbox at a time
PRUNE_EVERY = 1000       # deliveries between two prunes of the sink's delivered messages


class SinkError(Exception):
    """A delivery that failed for now (peer down, timeout); it will be retried."""


class RejectedMessage(Exception):
    """The peer refused this message for good (e.g. HTTP 400); it is kept as 'rejected', not retried."""


def safe_url(url: str) -> str:
    """The URL without its password (for status lines and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_sink_url(url: str) -> tuple[str, object, dict[str, str]]:
    """(scheme, urlsplit result, query as a flat dict); raises ValueError naming the problem."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{safe_url(url)}: unknown output; expected a URL starting with "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"{safe_url(url)}: no host in the URL")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{safe_url(url)}: the port is not a number from 0 to 65535") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return scheme, parts, query


@dataclass
class SinkStatus:
    """What the window, the log and the station's status lines show for one sink."""

    name: str
    connected: bool = False
    queued: int = 0
    sent: int = 0
    rejected: int = 0
    last_error: str = ""
    last_error_time: str = ""
    last_sent_time: str = ""

    def line(self) -> str:
        state = "connected" if self.connected else "not connected"
        text = f"{self.name}: {state}, queued {self.queued}, sent {self.sent}"
        if self.rejected:
            text += f", rejected {self.rejected}"
        if self.last_error:
            text += f"; last error {self.last_error_time}: {self.last_error}"
        return text


class Sink:
    """One output. Subclasses implement `deliver`; `open`/`close` hold the connection, `on_state`
    mirrors the station state (best effort, never queued), `connected` says whether the peer is
    reachable right now. `deliver` runs only in the sink's own thread."""

    scheme = ""

    def __init__(self, url: str):
        self.url = url
        self.name = safe_url(url)
        self.station = ""
        self.on_trigger: Callable[[str, str], bool] | None = None   # (part id, origin): one acquisition, please
        self.on_select_recipe: Callable[[str], str] | None = None   # '' when done, else the reason it was not
        self.stopping = threading.Event()   # set when the station stops: a delivery that waits gives up

    @property
    def connected(self) -> bool:
        return False

    def open(self) -> None:
        """Start connecting (must not block for long; `deliver` raises SinkError until connected)."""

    def deliver(self, message: dict) -> None:
        raise NotImplementedError

    def on_state(self, state: str, detail: str = "") -> None:
        """The station's state changed: ready, busy, error (detail says why) or offline."""

    def close(self) -> None:
        """Release the connection; called once, after the sink's thread has stopped."""


@dataclass
class SinkWorker:
    """The thread that drains one sink's queue in the outbox."""

    sink: Sink
    outbox: Outbox
    on_event: Callable[[str, str], None] | None = None   # (level, text): errors and recoveries, for the log
    status: SinkStatus = field(init=False)

    def __post_init__(self) -> None:
        self.status = SinkStatus(self.sink.name)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sink {self.sink.name}", daemon=True)
        self._delivered_since_prune = 0
        self._refresh_counts()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def snapshot(self) -> SinkStatus:
        """The status now (queue counts read from the outbox)."""
        try:
            self._refresh_counts()
        except OutboxError as e:
            self._error(str(e))
        with self._lock:
            self.status.connected = self.sink.connected
            return SinkStatus(**vars(self.status))

    def _refresh_counts(self) -> None:
        counts = self.outbox.counts(self.sink.name)
        with self._lock:
            self.status.queued, self.status.sent, self.status.rejected = counts["pending"], counts["sent"], \
                counts["rejected"]

    def _error(self, text: str) -> None:
        text = " ".join(text.split())   # one line (driver messages span several)
        first = not self.status.last_error
        with self._lock:
            self.status.last_error, self.status.last_error_time = text, now_iso()
        if first and self.on_event:
            self.on_event("warning", f"{self.sink.name}: {text} (results wait in the outbox)")

    def _run(self) -> None:
        try:
            self.sink.open()
        except Exception as e:  # noqa: BLE001 - a sink that cannot start still keeps its queue
            self._error(f"cannot start: {e}")
        delay = RETRY_FIRST_S
        while not self._stop.is_set():
            try:
                outcome = self._deliver_batch()
            except Exception as e:  # noqa: BLE001 - the outbox itself failed (disk, lock): try again later
                self._error(str(e))
                outcome = "failed"
            if outcome == "failed":
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            elif outcome == "idle":
                self._wake.wait(1.0)
                self._wake.clear()
            else:
                delay = RETRY_FIRST_S

    def _deliver_batch(self) -> str:
        """Deliver the oldest pending messages in order; 'idle' (none), 'delivered' or 'failed'
        (the first failure stops the batch, so the order is kept)."""
        rows = self.outbox.pending(self.sink.name, BATCH)
        if not rows:
            self._refresh_counts()
            return "idle"
        outcome = "delivered"
        for row in rows:
            if self._stop.is_set():
                break
            try:
                self.sink.deliver(row.message)
            except RejectedMessage as e:
                self.outbox.mark_rejected(row.seq, str(e))
                if self.on_event:
                    self.on_event("error", f"{self.sink.name}: message {row.message['message_id']} rejected: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - any failure of a peer is retried
                self.outbox.mark_failed(row.seq, str(e) or type(e).__name__)
                self._error(str(e) or type(e).__name__)
                outcome = "failed"
                break
            self.outbox.mark_sent([row.seq])
            if self.status.last_error and self.on_event:
                self.on_event("info", f"{self.sink.name}: delivering again")
            with self._lock:
                self.status.last_error = ""
                self.status.last_sent_time = now_iso()
            self._delivered_since_prune += 1
        self._refresh_counts()
        if self._delivered_since_prune >= PRUNE_EVERY:
            self._delivered_since_prune = 0
            self.outbox.prune(self.sink.name)
        return outcome

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the message in hand (what is still queued stays in the outbox)."""
        self._stop.set()
        self._wake.set()
        self.sink.stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001 - closing never fails the caller
            self._error(f"closing: {e}")

    def drain(self, timeout: float) -> bool:
        """Wait until this sink's queue is empty; True if it is."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.outbox.counts(self.sink.name)["pending"] == 0:
                self._refresh_counts()
                return True
            self._wake.set()
            time.sleep(0.05)
        return False
