"""Dialogs for who works at the station: sign in, the first administrator, users, station settings.
They collect what the user types and emit it; the controller (controller_access) decides and does it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHBoxLayout, QInputDialog, QLabel, QLineEdit, QListWidget, QPushButton, QVBoxLayout)

from inspection.access import ADMINISTRATOR, ROLES, StationPolicy

from .dialogs import form_layout, ok_cancel_buttons

__all__ = ["SignInDialog", "NewUserDialog", "UsersDialog", "StationSettingsDialog"]


class SignInDialog(QDialog):
    """User name and password; `values()` after exec()."""

    def __init__(self, note: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("SignInDialog")
        self.setWindowTitle("Sign in")
        self.user = QLineEdit()
        self.user.setObjectName("SignInUser")
        self.password = QLineEdit()
        self.password.setObjectName("SignInPassword")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.note = QLabel(note or "Sign in to change what a good part is (engineer) or the station (administrator). "
                                   "Without signing in the station runs in the operator role.")
        self.note.setWordWrap(True)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #ff6b60;")
        form = QFormLayout()
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        buttons = ok_cancel_buttons(self, "Sign in")
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.setMinimumWidth(380)

    def values(self) -> tuple[str, str]:
        return self.user.text().strip(), self.password.text()

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.password.clear()


class NewUserDialog(QDialog):
    """Name, role and password (twice) of a new account; `role` fixes the role (the first administrator)."""

    def __init__(self, title: str = "New user", role: str | None = None, note: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.name = QLineEdit()
        self.role = QComboBox()
        self.role.addItems(ROLES)
        if role is not None:
            self.role.setCurrentText(role)
            self.role.setEnabled(False)
        self.password, self.again = QLineEdit(), QLineEdit()
        for edit in (self.password, self.again):
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        form = QFormLayout()
        form.addRow("User name", self.name)
        form.addRow("Role", self.role)
        form.addRow("Password", self.password)
        form.addRow("Password again", self.again)
        buttons = ok_cancel_buttons(self)
        layout = QVBoxLayout(self)
        if note:
            label = QLabel(note)
            label.setWordWrap(True)
            layout.addWidget(label)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def values(self) -> tuple[str, str, str, str]:
        """(name, role, password, password again)."""
        return self.name.text().strip(), self.role.currentText(), self.password.text(), self.again.text()


class UsersDialog(QDialog):
    """The accounts, with add, change role, reset password and remove; each emits its intent."""

    add_requested = Signal(str, str, str)          # name, role, password
    role_requested = Signal(str, str)              # name, new role
    password_requested = Signal(str, str)          # name, new password
    remove_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("UsersDialog")
        self.setWindowTitle("Users")
        self.list = QListWidget()
        add, role, password, remove = (QPushButton(t) for t in ("Add…", "Change role…", "Reset password…", "Remove"))
        add.clicked.connect(self._add)
        role.clicked.connect(self._role)
        password.clicked.connect(self._password)
        remove.clicked.connect(self._remove)
        buttons = QHBoxLayout()
        for b in (add, role, password, remove):
            buttons.addWidget(b)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        layout.addWidget(self.error)
        layout.addWidget(close)
        self.setMinimumWidth(420)

    def show_users(self, users: list[tuple[str, str]], error: str = "") -> None:
        self.list.clear()
        for name, role in users:
            self.list.addItem(f"{name}\t{role}")
            self.list.item(self.list.count() - 1).setData(Qt.ItemDataRole.UserRole, name)
        self.error.setText(error)
        self.error.setStyleSheet("color: #ff6b60;" if error else "")

    def _selected(self) -> str:
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""

    def _add(self) -> None:
        dialog = NewUserDialog(parent=self)
        if dialog.exec():
            name, role, password, again = dialog.values()
            if password != again:
                self.show_users_error("The two passwords differ")
                return
            self.add_requested.emit(name, role, password)

    def _role(self) -> None:
        name = self._selected()
        if name:
            role, ok = QInputDialog.getItem(self, "Change role", f"Role of {name}:", list(ROLES), 0, False)
            if ok:
                self.role_requested.emit(name, role)

    def _password(self) -> None:
        name = self._selected()
        if name:
            password, ok = QInputDialog.getText(self, "Reset password", f"New password for {name}:",
                                                QLineEdit.EchoMode.Password)
            if ok:
                self.password_requested.emit(name, password)

    def _remove(self) -> None:
        name = self._selected()
        if name:
            self.remove_requested.emit(name)

    def show_users_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setStyleSheet("color: #ff6b60;")


class StationSettingsDialog(QDialog):
    """Sign-in on/off, start locked, minutes to the automatic lock, station name, shifts."""

    def __init__(self, policy: StationPolicy, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Station settings")
        self.sign_in = QCheckBox("Require sign-in (roles: operator, engineer, administrator)")
        self.sign_in.setChecked(policy.sign_in)
        self.start_locked = QCheckBox("Start locked (nothing but signing in until someone does)")
        self.start_locked.setChecked(policy.start_locked)
        self.lock_minutes = QDoubleSpinBox()
        self.lock_minutes.setRange(0, 24 * 60)
        self.lock_minutes.setDecimals(1)
        self.lock_minutes.setSuffix(" min")
        self.lock_minutes.setValue(policy.lock_minutes)
        self.lock_minutes.setToolTip("Back to the operator role after this long without input (0: never)")
        self.station = QLineEdit(policy.station)
        self.shifts = QLineEdit(", ".join(f"{n}={t}" for n, t in policy.shifts))
        self.shifts.setToolTip("name=HH:MM, ...: each shift runs until the next one starts")
        form = form_layout(self.sign_in, self.start_locked, ("Lock after", self.lock_minutes),
                           ("Station name", self.station), ("Shifts", self.shifts))
        buttons = ok_cancel_buttons(self)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def values(self) -> dict:
        """The settings as StationPolicy fields (shifts as text, parsed by the policy)."""
        return {"sign_in": self.sign_in.isChecked(), "start_locked": self.start_locked.isChecked(),
                "lock_minutes": self.lock_minutes.value(), "station": self.station.text().strip(),
                "shifts": self.shifts.text()}


ADMIN_NOTE = ("Sign-in needs an administrator first: create the account that manages users and the station "
              f"settings (role {ADMINISTRATOR}).")
