"""The operator's session as a small observable state: folder options, the recipe in force and
whether it was changed since it was applied or saved, and whether a logged part is being replayed.

The controller changes it (`update`), the window follows it (`changed` carries the name of each
field that changed), so the truth is here and not in a checkbox.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

__all__ = ["SessionState", "state_property"]


class SessionState(QObject):
    """Observable fields; `changed(name)` is emitted once per field whose value changed."""

    changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.folder_recursive = True   # folders are searched in their subfolders
        self.folder_watch = False      # an open folder is watched for new files
        self.recipe_name = ""          # the recipe in force ('' = none)
        self.recipe_modified = False   # a setting changed since the recipe was applied or saved
        self.replaying = False         # the live view shows a part from the results, not the newest one

    def update(self, **values) -> None:
        """Set fields (by name); unknown names are a programming error."""
        for name, value in values.items():
            if not hasattr(self, name) or name.startswith("_"):
                raise AttributeError(f"SessionState has no field {name!r}")
            if getattr(self, name) != value:
                setattr(self, name, value)
                self.changed.emit(name)


def state_property(name: str, doc: str = "") -> property:
    """A controller attribute that reads and writes field `name` of its `state`."""
    return property(lambda self: getattr(self.state, name), lambda self, value: self.state.update(**{name: value}),
                    doc=doc or f"SessionState.{name}")
