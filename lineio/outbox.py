"""The outbox: messages waiting for their outputs, in SQLite (the results log's own file when there is one).

A message is written once per sink, in one transaction, before any sink sees it, and leaves the
'pending' state only when its sink has confirmed delivery ('sent') or refused it for good
('rejected', kept with the reason). Each sink's thread has its own connection; WAL mode lets
them and the results log's writer work side by side. After a crash, `catch_up` enqueues the
results-log rows that were logged but never reached the outbox, so nothing logged is lost.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .message import decode, encode, message_from_log_row, now_iso

__all__ = ["Outbox", "OutboxError", "OutboxRow", "PENDING", "SENT", "REJECTED", "KEEP_SENT"]

PENDING, SENT, REJECTED = "pending", "sent", "rejected"
KEEP_SENT = 10_000       # delivered messages kept per sink (for inspection of what went out), older ones pruned
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS line_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    sink        TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    log_id      INTEGER,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'rejected')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     TEXT NOT NULL,
    sent        TEXT NOT NULL DEFAULT '',
    last_error  TEXT NOT NULL DEFAULT '',
    UNIQUE (sink, message_id)
);
CREATE INDEX IF NOT EXISTS line_outbox_state ON line_outbox (sink, state, seq);
CREATE INDEX IF NOT EXISTS line_outbox_log ON line_outbox (sink, log_id);
CREATE TABLE IF NOT EXISTS line_outbox_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS line_sinks (
    name         TEXT PRIMARY KEY,
    since_log_id INTEGER NOT NULL DEFAULT 0,
    added        TEXT NOT NULL
);
"""


class OutboxError(Exception):
    """The outbox database cannot be used; the message names the file."""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    message: dict
    attempts: int


class Outbox:
    """One SQLite file; thread-safe (a connection per thread)."""

    def __init__(self, path):
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        try:
            row = conn.execute("SELECT value FROM line_outbox_meta WHERE key = 'station_uuid'").fetchone()
            if row is None:
                conn.execute("INSERT OR IGNORE INTO line_outbox_meta VALUES ('station_uuid', ?)", (str(uuid.uuid4()),))
                row = conn.execute("SELECT value FROM line_outbox_meta WHERE key = 'station_uuid'").fetchone()
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: {e}") from None
        self.namespace = uuid.UUID(row[0])

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")   # a confirmed enqueue survives a power cut
                conn.executescript(_SCHEMA)
            except sqlite3.DatabaseError as e:
                raise OutboxError(f"{self.path}: {e}") from None
            except OSError as e:
                raise OutboxError(f"{self.path}: {e.strerror or e}") from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def message_id(self, log_id: int | None) -> str:
        """A stable id: derived from the results-log row when there is one (so a catch-up after a
        crash gives the same id), random otherwise."""
        if log_id is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(self.namespace, f"log:{int(log_id)}"))

    def register_sink(self, name: str) -> None:
        """Known sinks keep their pending messages; a new sink starts after the last logged part
        (it does not receive the log's history)."""
        conn = self._conn()
        try:
            conn.execute("INSERT OR IGNORE INTO line_sinks (name, since_log_id, added) VALUES (?, ?, ?)",
                         (name, self._last_log_id(conn), now_iso()))
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot register output {name}: {e}") from None

    @staticmethod
    def _last_log_id(conn: sqlite3.Connection) -> int:
        try:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM parts").fetchone()[0])
        except sqlite3.OperationalError:  # no results log in this file
            return 0

    def enqueue(self, message: dict, sinks: list[str]) -> str:
        """Store `message` for every sink in one transaction; returns its message id (filled in
        here when empty). A message already queued for a sink (same id) is not queued twice."""
        if not message.get("message_id"):
            message = {**message, "message_id": self.message_id(message.get("log_id"))}
        payload, created = encode(message), now_iso()
        conn = self._conn()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR IGNORE INTO line_outbox (sink, message_id, log_id, payload, created) VALUES (?, ?, ?, ?, ?)",
                    [(sink, message["message_id"], message.get("log_id"), payload, created) for sink in sinks])
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot queue message {message['message_id']}: {e}") from None
        return message["message_id"]

    def catch_up(self, station: str, sinks: list[str]) -> int:
        """Queue results-log rows that each sink should have but does not (the app stopped between
        logging a part and queueing it); returns how many messages were queued."""
        conn = self._conn()
        queued = 0
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'parts'").fetchone():
                return 0
            conn.row_factory = sqlite3.Row
            for sink in sinks:
                since = conn.execute("SELECT since_log_id FROM line_sinks WHERE name = ?", (sink,)).fetchone()
                rows = conn.execute(
                    "SELECT * FROM parts WHERE id > ? AND NOT EXISTS "
                    "(SELECT 1 FROM line_outbox o WHERE o.sink = ? AND o.log_id = parts.id) ORDER BY id",
                    (since[0] if since else 0, sink)).fetchall()
                for row in rows:
                    message = message_from_log_row(row, station)
                    self.enqueue(message, [sink])
                    queued += 1
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot catch up with the results log: {e}") from None
        finally:
            conn.row_factory = None
        return queued

    def pending(self, sink: str, limit: int = 50) -> list[OutboxRow]:
        """The oldest pending messages of a sink."""
        try:
            rows = self._conn().execute(
                "SELECT seq, payload, attempts FROM line_outbox WHERE sink = ? AND state = 'pending' ORDER BY seq LIMIT ?",
                (sink, limit)).fetchall()
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot read the outbox: {e}") from None
        return [OutboxRow(seq, decode(payload), attempts) for seq, payload, attempts in rows]

    def mark_sent(self, seqs: list[int]) -> None:
        self._update("UPDATE line_outbox SET state = 'sent', sent = ?, attempts = attempts + 1 WHERE seq = ?",
                     [(now_iso(), seq) for seq in seqs])

    def mark_failed(self, seq: int, error: str) -> None:
        self._update("UPDATE line_outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", [(error, seq)])

    def mark_rejected(self, seq: int, error: str) -> None:
        self._update("UPDATE line_outbox SET state = 'rejected', attempts = attempts + 1, last_error = ? WHERE seq = ?",
                     [(error, seq)])

    def _update(self, sql: str, params: list[tuple]) -> None:
        conn = self._conn()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, params)
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot update the outbox: {e}") from None

    def counts(self, sink: str) -> dict[str, int]:
        """{'pending': n, 'sent': n, 'rejected': n} for one sink."""
        out = {PENDING: 0, SENT: 0, REJECTED: 0}
        try:
            for state, n in self._conn().execute(
                    "SELECT state, COUNT(*) FROM line_outbox WHERE sink = ? GROUP BY state", (sink,)):
                out[state] = int(n)
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot read the outbox: {e}") from None
        return out

    def summary(self) -> list[dict]:
        """One entry per sink known to this outbox: name, pending, sent, rejected, the oldest pending
        message's time and the last error of a pending or rejected message."""
        conn = self._conn()
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM line_sinks UNION SELECT DISTINCT sink FROM line_outbox ORDER BY 1")]
            out = []
            for name in names:
                oldest = conn.execute("SELECT MIN(created) FROM line_outbox WHERE sink = ? AND state = 'pending'",
                                      (name,)).fetchone()[0]
                error = conn.execute("SELECT last_error FROM line_outbox WHERE sink = ? AND state != 'sent' "
                                     "AND last_error != '' ORDER BY seq DESC LIMIT 1", (name,)).fetchone()
                out.append({"sink": name, **self.counts(name), "oldest_pending": oldest or "",
                            "last_error": error[0] if error else ""})
            return out
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot read the outbox: {e}") from None

    def retry_rejected(self, sink: str | None = None) -> int:
        """Queue rejected messages again (after the receiver was fixed); returns how many."""
        conn = self._conn()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute("UPDATE line_outbox SET state = 'pending' WHERE state = 'rejected'"
                                   + (" AND sink = ?" if sink else ""), (sink,) if sink else ())
                return cur.rowcount
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot update the outbox: {e}") from None

    def prune(self, sink: str, keep: int = KEEP_SENT) -> int:
        """Forget delivered messages beyond the newest `keep` of a sink; the catch-up mark moves past
        them so they are not queued again. Returns the number removed."""
        conn = self._conn()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                cut = conn.execute("SELECT seq FROM line_outbox WHERE sink = ? AND state = 'sent' "
                                   "ORDER BY seq DESC LIMIT 1 OFFSET ?", (sink, keep)).fetchone()
                if cut is None:
                    return 0
                last_log = conn.execute("SELECT MAX(log_id) FROM line_outbox WHERE sink = ? AND state = 'sent' "
                                        "AND seq <= ?", (sink, cut[0])).fetchone()[0]
                if last_log is not None:
                    conn.execute("UPDATE line_sinks SET since_log_id = MAX(since_log_id, ?) WHERE name = ?",
                                 (last_log, sink))
                cur = conn.execute("DELETE FROM line_outbox WHERE sink = ? AND state = 'sent' AND seq <= ?",
                                   (sink, cut[0]))
                return cur.rowcount
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: cannot prune the outbox: {e}") from None

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
