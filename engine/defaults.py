"""Defaults shared by the engine, the trainers, the inspection core and the app (no torch import,
so the app can read them before the engine is loaded)."""

__all__ = ["DEFAULT_THRESHOLD"]

# Score above which a part fails when a model or recipe names no threshold of its own: the
# reference's single-image default.
DEFAULT_THRESHOLD = 0.3
