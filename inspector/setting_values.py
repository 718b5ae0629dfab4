"""Values read back from the app's settings and shown in its widgets: saved settings that may be
missing or damaged, finite numbers, booleans written as text, and shortened source names."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["finite_float", "saved_setting", "as_bool", "short_source_text"]


def finite_float(value) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def saved_setting(settings, key: str, default, convert):
    """A saved setting through `convert`; `default` when it is missing or cannot be read (a settings
    file written by another version, edited by hand or damaged)."""
    value = settings.value(key)
    if value is None:
        return default
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        return default


def as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def short_source_text(text: str, keep: int = 2) -> str:
    """'folder /a/b/c/d' -> 'folder …/c/d' (the full text goes in the tooltip)."""
    head, _, path = text.partition(" ")
    parts = Path(path).parts if path.startswith("/") or "\\" in path else ()
    if len(parts) <= keep + 1:
        return text
    return f"{head} …/{'/'.join(parts[-keep:])}"
