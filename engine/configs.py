"""Configuration dataclasses read back from JSON (model.json and the like)."""

from __future__ import annotations

from dataclasses import fields

__all__ = ["config_from_dict"]


def config_from_dict(cls, d: dict):
    """`cls(**d)` for a dataclass `cls`; a field it does not have is a ValueError naming it (a file
    written by another version or edited by hand), never silently dropped."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**d)
