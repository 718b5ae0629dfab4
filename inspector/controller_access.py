"""The controller's access concern: who is signed in, what the role may do (the controller refuses what
it may not, whatever asks), the automatic lock, users and station settings, and the audit trail that
records every change of what a good part is. A part of InspectorController."""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from inspection.access import (ADMINISTRATOR, LOCKED, AccessState, AccountError, AccountStore, PermissionDenied,
                               StationPolicy)
from inspection.audit import AuditTrail
from inspection.results_log import ResultsLogError

from .access_dialogs import ADMIN_NOTE, NewUserDialog, SignInDialog, StationSettingsDialog, UsersDialog
from .access_ui import AccessBar
from .records_cli import ACCOUNTS_FILE

IDLE_CHECK_MS = 5000
INPUT_EVENTS = (QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Wheel)


class _InputWatch(QObject):
    """Notes the time of every key press and click in the application (for the automatic lock)."""

    def __init__(self, touch: Callable[[], None], parent=None):
        super().__init__(parent)
        self.touch = touch

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in INPUT_EVENTS:
            self.touch()
        return False


class AccessControl:
    """Roles, sign-in, users, station settings and the audit trail: a part of InspectorController."""

    def _init_access(self) -> None:
        try:
            self.accounts = AccountStore(self.data_dir / ACCOUNTS_FILE)
        except AccountError as e:   # a damaged file: start locked down rather than open
            self.message(f"{e}; the station starts in the operator role", "error")
            self.accounts = AccountStore(self.data_dir / f"{ACCOUNTS_FILE}.unreadable-fallback")
            self.accounts.policy = StationPolicy(sign_in=True, start_locked=False)
        self.access = AccessState(self.accounts, time.monotonic())
        self.audit_trail = AuditTrail(self.results_writer, station=self.accounts.policy.station)
        self.access_bar = AccessBar(self.window)
        for signal, handler in ((self.access_bar.sign_in_requested, self.choose_sign_in),
                                (self.access_bar.sign_out_requested, self.sign_out),
                                (self.access_bar.users_requested, self.manage_users),
                                (self.access_bar.settings_requested, self.choose_station_settings)):
            signal.connect(handler)
        self._input_watch = _InputWatch(lambda: self.access.touch(time.monotonic()), self)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self._input_watch)
        self.idle_timer = QTimer(self)
        self.idle_timer.timeout.connect(self.check_idle)
        self.idle_timer.start(IDLE_CHECK_MS)
        self._show_access()

    # ----------------------------------------------------------------- permissions and the audit trail
    def permit(self, action: str) -> bool:
        """Whether the signed-in role may do `action`; when not, the operator is told why."""
        try:
            self.access.require(action)
        except PermissionDenied as e:
            self.message(str(e), "warning")
            return False
        return True

    def guarded(self, action: str, handler: Callable) -> Callable:
        """`handler`, run only when the role may do `action` (for the window's intents)."""
        def run(*args):
            if self.permit(action):
                return handler(*args)
            return None
        return run

    def audit(self, action: str, target: str = "", old=None, new=None) -> None:
        """One audit row: who (and their role) changed what, at this station, under the recipe in force."""
        try:
            self.audit_trail.record(self.access.who, self.access.role, action, target, old, new,
                                    recipe=self.recipe_name, station=self.accounts.policy.station)
        except ResultsLogError as e:
            self.message(f"Audit trail: {e}", "error")

    # ----------------------------------------------------------------- signing in and out
    def _show_access(self) -> None:
        a = self.access
        self.access_bar.show_user(a.describe(), a.role, bool(a.user), a.enabled)
        self.access_bar.show_permissions(a.may)
        self.line.act_outputs.setEnabled(a.may("line_outputs"))   # Line ▸ Outputs… (the line panel's)
        self.window.show_station(self.accounts.policy.shifts, a.role != LOCKED)

    def sign_in(self, name: str, password: str) -> bool:
        """Sign in (audited); False with a message on a wrong name or password."""
        try:
            account = self.access.sign_in(name, password, time.monotonic())
        except AccountError as e:
            self.message(f"Sign-in as {name!r} refused: {e}", "warning")
            self.audit("sign_in_refused", name)
            return False
        self.audit("sign_in", account.name, "", account.role)
        self.message(f"Signed in: {account.name} ({account.role})", "ok")
        self._show_access()
        return True

    def sign_out(self, reason: str = "") -> None:
        who = self.access.user
        if not who:
            return
        self.audit("sign_out", who, "", reason or "signed out")
        self.access.sign_out()
        self.message(f"{who} signed out{': ' + reason if reason else ''}; the station is in the operator role")
        self._show_access()

    def check_idle(self) -> None:
        """Lock back to the operator role after the station settings' minutes without input."""
        if self.access.idle(time.monotonic()):
            self.sign_out(f"no input for {self.accounts.policy.lock_minutes:g} min")

    def choose_sign_in(self) -> None:
        if not self.access.enabled:
            self.message("Sign-in is off on this station (Station ▸ Station settings turns it on)")
            return
        dialog = SignInDialog(parent=self.window)
        while dialog.exec():
            if self.sign_in(*dialog.values()):
                return
            dialog.show_error("Wrong user name or password")

    # ----------------------------------------------------------------- users and station settings
    def add_user(self, name: str, role: str, password: str) -> bool:
        if not self.permit("users") or not self._add_account(name, role, password):
            return False
        self.message(f"User {name} ({role}) added", "ok")
        return True

    def _add_account(self, name: str, role: str, password: str) -> bool:
        """Add the account and audit it; an AccountError becomes one message."""
        try:
            self.accounts.add(name, role, password, time.strftime("%Y-%m-%dT%H:%M:%S"))
        except AccountError as e:
            self.message(str(e), "error")
            return False
        self.audit("user", name, "", role)
        return True

    def set_user_role(self, name: str, role: str) -> bool:
        if not self.permit("users"):
            return False
        try:
            old = self.accounts.set_role(name, role)
        except AccountError as e:
            self.message(str(e), "error")
            return False
        self.audit("user", name, old, role)
        return True

    def reset_password(self, name: str, password: str) -> bool:
        if not self.permit("users"):
            return False
        try:
            self.accounts.set_password(name, password)
        except AccountError as e:
            self.message(str(e), "error")
            return False
        self.audit("user_password", name, "", "reset")
        return True

    def remove_user(self, name: str) -> bool:
        if not self.permit("users"):
            return False
        try:
            account = self.accounts.remove(name)
        except AccountError as e:
            self.message(str(e), "error")
            return False
        self.audit("user", name, account.role, "removed")
        return True

    def manage_users(self) -> None:
        if not self.permit("users"):
            return
        dialog = UsersDialog(self.window)

        def show(ok: bool = True) -> None:
            users = [(a.name, a.role) for a in self.accounts.accounts.values()]
            dialog.show_users(users, "" if ok else self.window.statusBar().currentMessage())

        dialog.add_requested.connect(lambda *a: show(self.add_user(*a)))
        dialog.role_requested.connect(lambda *a: show(self.set_user_role(*a)))
        dialog.password_requested.connect(lambda *a: show(self.reset_password(*a)))
        dialog.remove_requested.connect(lambda name: show(self.remove_user(name)))
        show()
        dialog.exec()

    def create_first_administrator(self, name: str, password: str) -> bool:
        """The first account, while there is no administrator (before sign-in is turned on)."""
        if not self.accounts.needs_first_administrator():
            self.message("There is an administrator already: sign in as one to add users", "warning")
            return False
        return self._add_account(name, ADMINISTRATOR, password)

    def set_station_policy(self, **values) -> bool:
        """Change the station settings (administrator; turning sign-in on needs an administrator account)."""
        if not self.permit("station_settings"):
            return False
        if values.get("sign_in") and self.accounts.needs_first_administrator():
            self.message("Create the first administrator before turning sign-in on", "warning")
            return False
        try:
            old = self.accounts.set_policy(**values)
        except (AccountError, TypeError) as e:
            self.message(f"Station settings: {e}", "error")
            return False
        new = self.accounts.policy
        for field in ("sign_in", "start_locked", "lock_minutes", "station", "shifts"):
            if getattr(old, field) != getattr(new, field):
                self.audit("station_setting", field, getattr(old, field), getattr(new, field))
        self.audit_trail.station = new.station
        self.access.policy_changed()
        self._show_access()
        return True

    def choose_station_settings(self) -> None:
        if not self.permit("station_settings"):
            return
        dialog = StationSettingsDialog(self.accounts.policy, self.window)
        if not dialog.exec():
            return
        values = dialog.values()
        if values["sign_in"] and self.accounts.needs_first_administrator():
            first = NewUserDialog("First administrator", ADMINISTRATOR, ADMIN_NOTE, self.window)
            if not first.exec():
                return
            name, _, password, again = first.values()
            if password != again:
                QMessageBox.warning(self.window, "First administrator", "The two passwords differ")
                return
            if not self.create_first_administrator(name, password):
                return
        self.set_station_policy(**values)
