"""Roles in the window (offscreen): an operator sees the engineer's controls disabled and the controller
refuses a threshold change whatever asks; engineers' changes, recipes, false calls and users land in
the audit trail; the automatic lock; the Statistics tab and the report export."""

from __future__ import annotations

import time

from inspection.access import ADMINISTRATOR, ENGINEER, LOCKED, OPERATOR
from inspection.audit import read_audit, verify_log
from inspector.sources import SourceSpec
from tests.gui_helpers import SleepyDetector, db_rows, load_model, open_inspector, write_images


def loader(path, **overrides):
    return SleepyDetector(0.0)


def signed_in_station(qtbot, home):
    """A window whose administrator turned sign-in on, with an engineer and an operator account."""
    window, ctl = open_inspector(qtbot, home, loader)
    load_model(qtbot, ctl)
    assert ctl.access.role == ADMINISTRATOR and not ctl.access.enabled   # sign-in is off by default
    assert not ctl.set_station_policy(sign_in=True)                      # needs an administrator first
    assert ctl.create_first_administrator("admin", "admin-pw")
    assert ctl.add_user("eve", ENGINEER, "eve-password") and ctl.add_user("olaf", OPERATOR, "olaf-password")
    assert ctl.set_station_policy(sign_in=True, start_locked=False, lock_minutes=1)
    assert ctl.access.role == OPERATOR and ctl.access.user == ""
    return window, ctl


def audit_rows(ctl):
    return read_audit(ctl.results_writer.conn)


def test_an_operator_cannot_change_a_threshold(qtbot, home):
    window, ctl = signed_in_station(qtbot, home)
    c = window.controls
    # the controls are there, disabled
    assert not c.judgement_box.isEnabled() and not c.fail_control.isEnabled() and not c.model_box.isEnabled()
    assert c.fail_control.isVisibleTo(window) or not window.isVisible()
    assert not window.act_calibrate.isEnabled() and not window.act_training_wizard.isEnabled()
    assert not ctl.line.act_outputs.isEnabled()
    assert c.recipe_list.isEnabled() and c.source_box.isEnabled() and not c.recipe_save_button.isEnabled()
    assert "operator (not signed in)" in ctl.access_bar.label.text()
    before = (ctl.context.fail_threshold, ctl.context.review_threshold)
    # ... and the controller refuses, whether the panel's signal or a direct call asks
    c.thresholds_edited.emit(0.91, 0.81)
    ctl.set_thresholds(0.92, 0.82)
    ctl.set_roi(None)
    ctl.save_recipe("sneaky")
    assert (ctl.context.fail_threshold, ctl.context.review_threshold) == before
    assert "sneaky" not in ctl.recipes.names()
    assert any("may not change thresholds, this needs the engineer role" in line for line in window.log_lines())
    assert not [a for a in audit_rows(ctl) if a.action == "threshold"]

    assert not ctl.sign_in("eve", "wrong")
    assert ctl.sign_in("eve", "eve-password")
    assert ctl.access.role == ENGINEER and c.judgement_box.isEnabled() and c.recipe_save_button.isEnabled()
    assert not ctl.access_bar.act_users.isEnabled()   # users are the administrator's
    ctl.set_thresholds(0.6, 0.45)
    assert (ctl.context.fail_threshold, ctl.context.review_threshold) == (0.6, 0.45)
    rows = [a for a in audit_rows(ctl) if a.action == "threshold"]
    assert [(a.user, a.role, a.target, a.old_value, a.new_value) for a in rows] == [
        ("eve", ENGINEER, "fail", repr(before[0]), "0.6"), ("eve", ENGINEER, "review", repr(before[1]), "0.45")]
    assert {a.station for a in rows} == {ctl.accounts.policy.station}

    # no input for longer than the lock time: back to the operator role
    ctl.access.last_input = time.monotonic() - 61
    ctl.check_idle()
    assert ctl.access.role == OPERATOR and not c.judgement_box.isEnabled()
    assert audit_rows(ctl)[-1].action == "sign_out" and "no input" in audit_rows(ctl)[-1].new_value


def test_audit_of_recipes_false_calls_users_and_rows_record_what_judged_them(qtbot, home, tmp_path):
    window, ctl = signed_in_station(qtbot, home)
    write_images(tmp_path / "imgs", 4, bright={1})
    assert ctl.sign_in("eve", "eve-password")
    ctl.set_thresholds(0.5, 0.3)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
    ctl.save_recipe("widgets")
    ctl.set_thresholds(0.55, 0.3)
    ctl.save_recipe("widgets")
    assert ctl.recipes.load("widgets").revision == 2 and ctl.context.recipe_version == "r2"
    ctl.sign_out()
    ctl.apply_recipe("widgets")          # an operator may choose a recipe
    ctl.start()
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    rows = db_rows(home)
    assert {(r["recipe"], r["recipe_version"], r["threshold"], r["model_id"]) for r in rows} == {
        ("widgets", "r2", 0.55, "sleepy-fake")}
    failed = [r for r in rows if r["verdict"] == "fail"][0]
    ctl.mark_false_call([failed["id"]], True, "")              # a reason is needed
    assert db_rows(home)[rows.index(failed)]["false_call"] == 0
    ctl.mark_false_call([failed["id"]], True, "glare on the tray")
    assert db_rows(home)[rows.index(failed)]["false_call"] == 1
    assert not ctl.add_user("mallory", ADMINISTRATOR, "mallory-pw")   # operators manage no users
    assert ctl.sign_in("admin", "admin-pw") and ctl.set_user_role("olaf", ENGINEER)
    actions = [(a.action, a.target, a.user) for a in audit_rows(ctl)]
    assert ("recipe", "widgets", "eve") in actions and ("recipe_selected", "widgets", "operator (not signed in)") in actions
    assert ("false_call", f"part {failed['id']}", "operator (not signed in)") in actions
    assert ("user", "olaf", "admin") in actions and ("station_setting", "sign_in", "admin") not in actions
    saved = [a for a in audit_rows(ctl) if a.action == "recipe"]
    assert saved[0].old_value == "" and '"fail_threshold": 0.5' in saved[0].new_value
    assert '"fail_threshold": 0.5' in saved[1].old_value and '"fail_threshold": 0.55' in saved[1].new_value
    assert verify_log(ctl.results_writer) == (len(audit_rows(ctl)), [])


def test_a_station_set_to_start_locked_allows_nothing_until_sign_in(qtbot, home):
    window, ctl = signed_in_station(qtbot, home)
    ctl.sign_in("admin", "admin-pw")
    assert ctl.set_station_policy(start_locked=True)
    window.close()
    window, ctl = open_inspector(qtbot, home, loader)
    assert ctl.access.role == LOCKED and "locked" in ctl.access_bar.label.text()
    assert not window.controls.source_box.isEnabled() and not window.controls.recipe_list.isEnabled()
    ctl.window.run_toggle_requested.emit()
    assert any("may not start or stop inspection" in line for line in window.log_lines())
    assert ctl.sign_in("olaf", "olaf-password") and window.controls.source_box.isEnabled()


def test_statistics_tab_and_report_export(qtbot, home, tmp_path):
    window, ctl = open_inspector(qtbot, home, loader)
    load_model(qtbot, ctl)
    write_images(tmp_path / "imgs", 6, bright={1, 4})
    ctl.set_thresholds(0.5, 0.3)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")))
    qtbot.waitUntil(lambda: ctl.run_reported, timeout=30000)
    window.statistics_view.period_combo.setCurrentText("All")
    window.show_tab("statistics")
    s = ctl.last_statistics
    assert s is not None and s.totals.total == 6 and s.totals.fail == 2
    assert "6 parts" in window.statistics_view.summary.text()
    assert window.statistics_view.table.rowCount() >= 2
    assert ctl.statistics_seconds < 1.0
    pdf = tmp_path / "report.pdf"
    assert ctl.export_report(str(pdf), *window.statistics_selection())
    assert pdf.read_bytes().startswith(b"%PDF") and any("Report written" in line for line in window.log_lines())
