"""The audit trail: every change of what a good part is, and who made it (Qt-free).

One row per change in the results log's `audit` table: when, who (and their role), the station and
the recipe in force, the action (threshold, roi, model, recipe, calibration, user, false_call ...),
what it changed (target) and the old -> new value. SQLite triggers refuse UPDATE and DELETE on the
table, and every row carries a SHA-256 hash over its own fields and the previous row's hash, so that
`verify` finds a row edited, deleted or inserted by someone who went around the triggers (the
sqlite3 shell can drop them). The newest row's id and hash are also kept in an anchor file beside the
log (`<log>.audit-anchor`), which catches rows cut off the end of the chain or appended after it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .results_log import ResultsLog, ResultsLogError, now_text

__all__ = ["AuditEntry", "AuditTrail", "AUDIT_FIELDS", "GENESIS_HASH", "row_hash", "verify_rows", "verify_log",
           "read_audit", "write_audit_csv", "anchor_path"]

GENESIS_HASH = "0" * 64
AUDIT_FIELDS = ("id", "time", "user", "role", "station", "recipe", "action", "target", "old_value", "new_value")
MAX_VALUE_CHARS = 4000   # an old or new value longer than this is cut (recipes as JSON fit)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str
    user: str
    role: str
    station: str
    recipe: str
    action: str
    target: str
    old_value: str
    new_value: str
    prev_hash: str
    hash: str


def row_hash(fields: dict, prev_hash: str) -> str:
    """SHA-256 (hex) of the row's fields (AUDIT_FIELDS, in order) and the previous row's hash."""
    payload = json.dumps([fields[k] for k in AUDIT_FIELDS] + [prev_hash], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def value_text(value) -> str:
    """How an old or new value is stored: text as it is, None as '', anything else as JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def anchor_path(log_path) -> Path:
    return Path(str(log_path) + ".audit-anchor")


class AuditTrail:
    """Appends audit rows to a results log (its writer connection and lock)."""

    def __init__(self, log: ResultsLog, station: str = ""):
        self.log = log
        self.station = station

    def record(self, user: str, role: str, action: str, target: str = "", old=None, new=None,
               recipe: str = "", station: str | None = None) -> AuditEntry:
        """Append one row (chained to the newest) and commit it; returns it."""
        fields = {"time": now_text(), "user": str(user), "role": str(role),
                  "station": self.station if station is None else str(station), "recipe": str(recipe or ""),
                  "action": str(action), "target": str(target), "old_value": value_text(old),
                  "new_value": value_text(new)}
        conn = self.log.conn
        with self.log._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
                    fields["id"] = (last[0] + 1) if last else 1
                    prev = last[1] if last else GENESIS_HASH
                    digest = row_hash(fields, prev)
                    conn.execute(f"INSERT INTO audit ({', '.join(AUDIT_FIELDS)}, prev_hash, hash) "
                                 f"VALUES ({', '.join('?' * (len(AUDIT_FIELDS) + 2))})",
                                 [fields[k] for k in AUDIT_FIELDS] + [prev, digest])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as e:
                raise ResultsLogError(f"{self.log.path}: cannot write the audit trail: {e}") from None
            _write_anchor(self.log.path, fields["id"], digest)
        return AuditEntry(**fields, prev_hash=prev, hash=digest)


def _write_anchor(log_path: Path, last_id: int, digest: str) -> None:
    path = anchor_path(log_path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps({"last_id": last_id, "hash": digest}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)   # the chain itself is the record; the anchor is a second check


def read_audit(conn: sqlite3.Connection, since: str = "", until: str = "") -> list[AuditEntry]:
    """Rows in id order, `since` <= time < `until` (ISO text; '' = open)."""
    clauses, params = [], []
    if since:
        clauses.append("time >= ?")
        params.append(since)
    if until:
        clauses.append("time < ?")
        params.append(until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {', '.join(AUDIT_FIELDS)}, prev_hash, hash FROM audit{where} ORDER BY id", params)
    return [AuditEntry(*r) for r in rows.fetchall()]


def verify_rows(rows: Iterable[AuditEntry], anchor: dict | None = None) -> list[str]:
    """One line per problem in the chain ([] = intact): a row whose fields do not match its hash
    (edited), whose link does not match the row before it or whose id skips (deleted or inserted),
    and rows missing at or added after the anchor's newest row."""
    problems: list[str] = []
    prev_hash, prev_id = GENESIS_HASH, 0
    last = None
    for row in rows:
        fields = {k: getattr(row, k) for k in AUDIT_FIELDS}
        if row.id != prev_id + 1:
            problems.append(f"row {row.id}: follows row {prev_id} (rows {prev_id + 1}-{row.id - 1} deleted, "
                            f"or this row inserted)" if row.id > prev_id + 1 else
                            f"row {row.id}: out of order after row {prev_id}")
        if row.prev_hash != prev_hash:
            problems.append(f"row {row.id}: its link does not match the row before it (a row was deleted or "
                            f"inserted before it)")
        if row_hash(fields, row.prev_hash) != row.hash:
            problems.append(f"row {row.id}: its contents do not match its hash (edited)")
        prev_hash, prev_id, last = row.hash, row.id, row
    if anchor:
        a_id, a_hash = int(anchor.get("last_id", 0)), str(anchor.get("hash", ""))
        if last is None or last.id < a_id:
            problems.append(f"the newest row should be {a_id} but is {last.id if last else 'none'} "
                            f"(rows deleted at the end)")
        elif last.id > a_id:
            problems.append(f"rows {a_id + 1}-{last.id} were added after the newest recorded row {a_id} "
                            f"(inserted outside the app)")
        elif last.hash != a_hash:
            problems.append(f"row {a_id}: differs from the recorded newest row (the chain was rewritten)")
    return problems


def _read_anchor(log_path: Path) -> dict | None:
    path = anchor_path(log_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {"last_id": -1, "hash": ""}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"last_id": -1, "hash": "(unreadable anchor file)"}


def verify_log(log: ResultsLog) -> tuple[int, list[str]]:
    """(rows checked, problems) for the log's whole audit trail."""
    try:
        rows = read_audit(log.conn)
    except sqlite3.DatabaseError as e:
        raise ResultsLogError(f"{log.path}: cannot read the audit trail: {e}") from None
    return len(rows), verify_rows(rows, _read_anchor(log.path))


def write_audit_csv(rows: Iterable[AuditEntry], out) -> int:
    """The rows as CSV (with their hashes) to a text stream; returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(AUDIT_FIELDS + ("prev_hash", "hash"))
    n = 0
    for row in rows:
        writer.writerow([getattr(row, k) for k in AUDIT_FIELDS] + [row.prev_hash, row.hash])
        n += 1
    return n
