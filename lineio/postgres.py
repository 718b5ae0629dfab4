"""PostgreSQL output (psycopg 3): a central results table for plants with many stations.

    postgresql://user:password@host:5432/plant?table=inspection_results

The table (created when missing) has the message id as its primary key and rows are inserted
with ON CONFLICT DO NOTHING, so a resend after a lost acknowledgement never doubles a row.
Other query parameters go to libpq (sslmode, connect_timeout ...).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from .message import MESSAGE_FIELDS
from .sinks import RejectedMessage, Sink, SinkError, parse_sink_url

__all__ = ["PostgresSink", "DEFAULT_TABLE", "COLUMN_TYPES"]

DEFAULT_TABLE = "inspection_results"
CONNECT_TIMEOUT_S = 5
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

COLUMN_TYPES = {
    "message_id": "TEXT PRIMARY KEY", "part_id": "TEXT NOT NULL DEFAULT ''", "time": "TIMESTAMPTZ NOT NULL",
    "station": "TEXT NOT NULL", "recipe": "TEXT NOT NULL DEFAULT ''", "source": "TEXT NOT NULL DEFAULT ''",
    "frame_id": "TEXT NOT NULL DEFAULT ''", "category": "TEXT NOT NULL DEFAULT ''", "score": "DOUBLE PRECISION",
    "verdict": "TEXT NOT NULL", "fail_threshold": "DOUBLE PRECISION", "review_threshold": "DOUBLE PRECISION",
    "model_id": "TEXT NOT NULL DEFAULT ''", "overlay_path": "TEXT NOT NULL DEFAULT ''",
    "error": "TEXT NOT NULL DEFAULT ''", "log_id": "BIGINT",
}
if tuple(COLUMN_TYPES) != MESSAGE_FIELDS:
    raise ImportError("lineio.postgres: COLUMN_TYPES must list MESSAGE_FIELDS in order")


class PostgresSink(Sink):
    scheme = "postgresql"

    def __init__(self, url: str):
        super().__init__(url)
        _, parts, _ = parse_sink_url(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        self.table = dict(params).get("table", DEFAULT_TABLE)
        if not TABLE_NAME.match(self.table):
            raise ValueError(f"{self.name}: table must be a plain SQL name (letters, digits, _), got {self.table!r}")
        libpq = [(k, v) for k, v in params if k != "table"]
        if not any(k == "connect_timeout" for k, _ in libpq):
            libpq.append(("connect_timeout", str(CONNECT_TIMEOUT_S)))
        self.conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))
        self._conn: psycopg.Connection | None = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def _connection(self) -> psycopg.Connection:
        if self.connected:
            return self._conn
        self._drop()
        conn = psycopg.connect(self.conninfo, autocommit=True)
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
                                     for name, kind in COLUMN_TYPES.items())
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, received TIMESTAMPTZ NOT NULL DEFAULT now())")
                     .format(sql.Identifier(self.table), columns))
        self._conn = conn
        return conn

    def deliver(self, message: dict) -> None:
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (message_id) DO NOTHING").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, MESSAGE_FIELDS)),
            sql.SQL(", ").join([sql.Placeholder()] * len(MESSAGE_FIELDS)))
        try:
            self._connection().execute(statement, [message.get(name) for name in MESSAGE_FIELDS])
        except psycopg.errors.DataError as e:      # a value the table cannot hold: never going to work
            raise RejectedMessage(str(e).strip()) from None
        except psycopg.Error as e:
            self._drop()
            raise SinkError(f"{urlsplit(self.conninfo).hostname}: {str(e).strip() or type(e).__name__}") from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def close(self) -> None:
        self._drop()
