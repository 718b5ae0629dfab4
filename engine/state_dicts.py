"""The one comparison of a state dict with the one a network expects (keys and shapes), for every
loader: UNet checkpoints and model folders, the classifier and the VAE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["StateDictMismatch", "compare_state_dict"]

EXAMPLES = 3   # entries named per kind of problem


@dataclass(frozen=True)
class StateDictMismatch:
    """What keeps a state dict from loading strictly: expected keys it lacks, keys the network does not
    have, and 'key: expected (shape), found (shape)' for the rest. False when it fits."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    wrong_shapes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shapes)

    def describe(self, examples: int = EXAMPLES) -> str:
        """'N missing weights (e.g. [...]); N unexpected weights (e.g. [...]); N wrong shapes (e.g. [...])'."""
        problems = []
        if self.missing:
            problems.append(f"{len(self.missing)} missing weights (e.g. {list(self.missing[:examples])})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected weights (e.g. {list(self.unexpected[:examples])})")
        if self.wrong_shapes:
            problems.append(f"{len(self.wrong_shapes)} wrong shapes (e.g. {list(self.wrong_shapes[:examples])})")
        return "; ".join(problems)


def compare_state_dict(expected: Mapping, found: Mapping, allowed_missing: tuple[str, ...] = ()) -> StateDictMismatch:
    """Compare `found` (name -> tensor) with `expected` (a module's state_dict()); expected keys
    starting with one of `allowed_missing` may be absent."""
    missing = tuple(k for k in expected if k not in found and not (allowed_missing and k.startswith(allowed_missing)))
    unexpected = tuple(k for k in found if k not in expected)
    wrong = tuple(f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
                  for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape))
    return StateDictMismatch(missing, unexpected, wrong)
