"""The window's part of roles: the Station menu (sign in, lock, users, station settings), the status-bar
field that says who is signed in, and showing each control enabled or disabled for the role (a control
the role may not use stays visible, greyed out). It displays and emits; controller_access decides."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel

__all__ = ["AccessBar", "ROLE_COLORS"]

ROLE_COLORS = {"operator": "#8b949e", "engineer": "#58a6ff", "administrator": "#f2a900", "locked": "#ff6b60"}


class AccessBar(QObject):
    """Attached to a MainWindow: Station menu and the signed-in field."""

    sign_in_requested = Signal()
    sign_out_requested = Signal()
    users_requested = Signal()
    settings_requested = Signal()

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.label = QLabel("")
        self.label.setObjectName("SignedInField")
        self.label.setToolTip("Who is signed in (Station ▸ Sign in)")
        window.statusBar().insertPermanentWidget(0, self.label)
        menu = window.menuBar().addMenu("S&tation")
        menu.setObjectName("StationMenu")
        self.act_sign_in = QAction("&Sign in…", window)
        self.act_sign_in.setShortcut("Ctrl+L")
        self.act_sign_out = QAction("&Lock (back to operator)", window)
        self.act_users = QAction("&Users…", window)
        self.act_settings = QAction("Station &settings…", window)
        for action, signal in ((self.act_sign_in, self.sign_in_requested), (self.act_sign_out, self.sign_out_requested),
                               (self.act_users, self.users_requested), (self.act_settings, self.settings_requested)):
            menu.addAction(action)
            window.addAction(action)
            action.triggered.connect(lambda _=False, s=signal: s.emit())
        # move the Station menu before Help
        bar = window.menuBar()
        actions = bar.actions()
        if len(actions) >= 2:
            bar.insertAction(actions[-2], actions[-1])

    def show_user(self, text: str, role: str, signed_in: bool, sign_in_on: bool) -> None:
        colour = ROLE_COLORS.get(role, ROLE_COLORS["operator"])
        self.label.setText(f"<span style='color:{colour}'>● {text}</span>")
        self.act_sign_out.setEnabled(signed_in)
        self.act_sign_in.setEnabled(sign_in_on)

    def widgets(self) -> dict[str, list]:
        """Action (inspection.access.PERMISSIONS) -> the window's controls that do it."""
        w, c = self.window, self.window.controls
        return {
            "model": [c.model_box, w.act_open_model, w.act_open_checkpoint, w.act_demo_model, w.act_gate_fusion],
            "thresholds": [c.judgement_box, w.act_calibrate, w.act_roi, w.act_clear_roi],
            "recipe_edit": [c.recipe_save_button, c.recipe_delete_button],
            "choose_recipe": [c.recipe_list],
            "run": [c.source_box, w.act_run, w.act_step, w.act_stop],
            "source": [w.act_open_folder, w.act_open_image, w.act_open_video, w.act_camera, w.act_stream],
            "training": [w.act_training_wizard],
            "users": [self.act_users],
            "station_settings": [self.act_settings],
        }

    def show_permissions(self, may: Callable[[str], bool]) -> None:
        """Enable what the role may use and disable the rest (never hidden)."""
        for action, widgets in self.widgets().items():
            allowed = may(action)
            for widget in widgets:
                widget.setEnabled(allowed)
