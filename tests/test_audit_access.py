"""Roles, accounts and the audit trail (Qt-free): permissions, scrypt hashes, the hash chain that
finds edited, deleted and inserted rows, and the migration of a schema-1 results log."""

from __future__ import annotations

import sqlite3

import pytest

from inspection.access import (ADMINISTRATOR, ENGINEER, LOCKED, OPERATOR, AccessState, AccountError, AccountStore,
                               PermissionDenied, allowed, hash_password, parse_shifts, verify_password)
from inspection.audit import AuditTrail, GENESIS_HASH, read_audit, row_hash, verify_log
from inspection.results_log import SCHEMA_VERSION, ResultsLog, ResultsLogError


def test_roles_are_ordered_and_operators_may_not_change_thresholds():
    assert allowed(OPERATOR, "run") and allowed(OPERATOR, "false_call") and allowed(OPERATOR, "choose_recipe")
    assert not allowed(OPERATOR, "thresholds") and not allowed(OPERATOR, "roi") and not allowed(OPERATOR, "model")
    assert allowed(ENGINEER, "thresholds") and allowed(ENGINEER, "training") and not allowed(ENGINEER, "users")
    assert allowed(ADMINISTRATOR, "users") and allowed(ADMINISTRATOR, "thresholds")
    assert not allowed(LOCKED, "run")
    with pytest.raises(KeyError):
        allowed(OPERATOR, "no such action")


def test_password_hash_is_salted_scrypt_and_verifies():
    a, b = hash_password("secret1"), hash_password("secret1")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("secret1", a) and not verify_password("secret2", a)
    assert not verify_password("secret1", "garbage") and not verify_password("x", "scrypt$1$2$3$$")


def test_accounts_sign_in_idle_lock_and_last_administrator(tmp_path):
    store = AccountStore(tmp_path / "accounts.json")
    assert store.needs_first_administrator()
    store.add("admin", ADMINISTRATOR, "adminpw")
    store.add("eve", ENGINEER, "engineer1")
    with pytest.raises(AccountError, match="at least"):
        store.add("olaf", OPERATOR, "123")
    with pytest.raises(AccountError, match="exists"):
        store.add("eve", OPERATOR, "whatever")
    store.set_policy(sign_in=True, start_locked=True, lock_minutes=1)
    reloaded = AccountStore(tmp_path / "accounts.json")
    assert not reloaded.needs_first_administrator() and reloaded.policy.sign_in
    assert "adminpw" not in (tmp_path / "accounts.json").read_text()
    state = AccessState(reloaded, now=0.0)
    assert state.role == LOCKED and not state.may("run")
    with pytest.raises(AccountError, match="wrong"):
        state.sign_in("eve", "wrong-password")
    state.sign_in("eve", "engineer1", now=10.0)
    assert state.role == ENGINEER and state.may("thresholds") and state.who == "eve"
    assert not state.idle_lock(now=60.0)
    assert state.idle_lock(now=71.0)
    assert state.role == OPERATOR and state.user == ""
    with pytest.raises(PermissionDenied, match="engineer role"):
        state.require("thresholds")
    with pytest.raises(AccountError, match="last administrator"):
        reloaded.set_role("admin", OPERATOR)
    with pytest.raises(AccountError, match="last administrator"):
        reloaded.remove("admin")


def test_sign_in_off_means_everything_is_allowed(tmp_path):
    state = AccessState(AccountStore(tmp_path / "accounts.json"))
    assert not state.enabled and state.role == ADMINISTRATOR and state.may("users")


def test_shift_parsing():
    assert parse_shifts("night=22:00, early=6:00,late=14:00") == (("early", "06:00"), ("late", "14:00"),
                                                                    ("night", "22:00"))
    with pytest.raises(AccountError, match="not a time"):
        parse_shifts("early=25:00")


@pytest.fixture
def log(tmp_path):
    log = ResultsLog(tmp_path / "results.sqlite")
    trail = AuditTrail(log, station="st1")
    for k in range(5):
        trail.record("eve", ENGINEER, "threshold", "fail", 0.5 + k / 10, 0.6 + k / 10, recipe="coins")
    yield log
    log.close()


def _tamper(log: ResultsLog, *statements) -> None:
    """What someone with the sqlite3 shell could do: drop the triggers, change rows."""
    conn = log.conn
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for sql in statements:
        conn.execute(sql)


def test_an_intact_chain_verifies_and_the_table_refuses_update_and_delete(log):
    assert verify_log(log) == (5, [])
    rows = read_audit(log.conn)
    assert rows[0].prev_hash == GENESIS_HASH and rows[1].prev_hash == rows[0].hash
    assert rows[2].old_value == "0.7" and rows[2].new_value == "0.8" and rows[2].station == "st1"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log.conn.execute("UPDATE audit SET new_value = '0.9' WHERE id = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log.conn.execute("DELETE FROM audit WHERE id = 2")


def test_verify_finds_an_edited_row(log):
    _tamper(log, "UPDATE audit SET new_value = '0.99' WHERE id = 3")
    n, problems = verify_log(log)
    assert n == 5 and problems == ["row 3: its contents do not match its hash (edited)"]


def test_verify_finds_a_deleted_row(log):
    _tamper(log, "DELETE FROM audit WHERE id = 2")
    problems = verify_log(log)[1]
    assert any("row 3: follows row 1" in p for p in problems)
    assert any("row 3: its link" in p for p in problems)


def test_verify_finds_the_last_row_deleted_through_the_anchor(log):
    _tamper(log, "DELETE FROM audit WHERE id = 5")
    assert verify_log(log)[1] == ["the newest row should be 5 but is 4 (rows deleted at the end)"]


def test_verify_finds_an_inserted_row(log):
    # shift rows 3.. up by one and put a forged row 3 with a correctly computed hash in the gap
    rows = read_audit(log.conn)
    forged = {"id": 3, "time": rows[2].time, "user": "mallory", "role": ENGINEER, "station": "st1",
              "recipe": "coins", "action": "threshold", "target": "fail", "old_value": "0.6", "new_value": "0.95"}
    digest = row_hash(forged, rows[1].hash)
    _tamper(log, *[f"UPDATE audit SET id = {r.id + 1} WHERE id = {r.id}" for r in reversed(rows[2:])],
            "INSERT INTO audit (id, time, user, role, station, recipe, action, target, old_value, new_value, prev_hash,"
            f" hash) VALUES (3, '{forged['time']}', 'mallory', 'engineer', 'st1', 'coins', 'threshold', 'fail', "
            f"'0.6', '0.95', '{rows[1].hash}', '{digest}')")
    problems = verify_log(log)[1]
    assert "row 4: its contents do not match its hash (edited)" in problems   # old row 3 under a new id
    assert any("row 4: its link" in p for p in problems)


def test_verify_finds_a_row_appended_outside_the_app(log):
    rows = read_audit(log.conn)
    extra = {"id": 6, "time": rows[-1].time, "user": "mallory", "role": ADMINISTRATOR, "station": "st1", "recipe": "",
             "action": "user", "target": "mallory", "old_value": "", "new_value": "administrator"}
    log.conn.execute("INSERT INTO audit VALUES (6, ?, 'mallory', 'administrator', 'st1', '', 'user', 'mallory', '', "
                     "'administrator', ?, ?)", (extra["time"], rows[-1].hash, row_hash(extra, rows[-1].hash)))
    assert verify_log(log)[1] == ["rows 6-6 were added after the newest recorded row 5 (inserted outside the app)"]


def test_a_schema_1_log_opens_and_gains_the_new_columns_and_the_audit_table(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE schema_version (version INTEGER NOT NULL, app_version TEXT NOT NULL, applied TEXT NOT NULL);
        INSERT INTO schema_version VALUES (1, '0.9', '2026-01-01');
        CREATE TABLE parts (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
            frame_id TEXT NOT NULL DEFAULT '', category TEXT NOT NULL DEFAULT '', score REAL, threshold REAL,
            review_threshold REAL, verdict TEXT NOT NULL, model_id TEXT NOT NULL DEFAULT '',
            recipe TEXT NOT NULL DEFAULT '', latency_ms REAL, error TEXT NOT NULL DEFAULT '',
            image_path TEXT NOT NULL DEFAULT '', overlay_path TEXT NOT NULL DEFAULT '',
            thumbnail_path TEXT NOT NULL DEFAULT '', archive_error TEXT NOT NULL DEFAULT '',
            app_version TEXT NOT NULL DEFAULT '', false_call INTEGER NOT NULL DEFAULT 0,
            false_call_note TEXT NOT NULL DEFAULT '', false_call_time TEXT NOT NULL DEFAULT '');
        INSERT INTO parts (time, verdict, score) VALUES ('2026-01-01T10:00:00.000+00:00', 'pass', 0.1);
    """)
    conn.commit()
    conn.close()
    log = ResultsLog(path)
    assert log.schema_version() == SCHEMA_VERSION == 2
    columns = {r[1] for r in log.conn.execute("PRAGMA table_info(parts)")}
    assert {"recipe_version", "defect_x", "defect_y"} <= columns
    new = log.add(time="2026-01-01T11:00:00.000+00:00", verdict="fail", score=0.9, recipe_version="r3", defect_x=0.2,
                  defect_y=0.7)
    assert tuple(log.conn.execute("SELECT recipe_version, defect_x FROM parts WHERE id = ?", (new,)).fetchone()) == ("r3", 0.2)
    assert log.conn.execute("SELECT recipe_version FROM parts WHERE id = 1").fetchone()[0] == ""
    AuditTrail(log).record("eve", ENGINEER, "threshold", "fail", 0.5, 0.6)
    assert verify_log(log) == (1, [])
    log.close()


def test_a_newer_schema_is_refused(tmp_path):
    log = ResultsLog(tmp_path / "r.sqlite")
    log.conn.execute("INSERT INTO schema_version VALUES (99, 'future', 'now')")
    log.close()
    with pytest.raises(ResultsLogError, match="newer"):
        ResultsLog(tmp_path / "r.sqlite").conn


def test_the_station_logs_the_recipe_revision_it_judges_with():
    from inspector.recipes import Recipe
    from inspector.station import inspection_recipe

    recipe = Recipe("coins", revision=3)
    assert inspection_recipe(recipe, None).recipe_version == "r3"
    assert inspection_recipe(recipe, 0.7).recipe_version == "r3*"   # --threshold changed the recipe's judgement
    assert inspection_recipe(None, None, 0.5).recipe_version == ""
