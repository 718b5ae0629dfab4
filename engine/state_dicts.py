"""The one comparison of a state dict with the one a network expects (keys and shapes), for every
loader: UNet checkpoints and model folders, the classifier and the VAE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["StateDictMismatch", "compare_state_dict", "WEIGHT_FORMATS"]

EXAMPLES = 3   # entries named per kind of problem
WEIGHT_FORMATS = ("{count} missing weights (e.g. {names})", "{count} unexpected weights (e.g. {names})",
                  "{count} wrong shapes (e.g. {names})")


@dataclass(frozen=True)
class StateDictMismatch:
    """What keeps a state dict from loading strictly: expected keys it lacks, keys the network does not
    have, and 'key: expected (shape), found (shape)' for the rest. False when it fits."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    wrong_shapes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shapes)

    def describe(self, examples: int = EXAMPLES, formats: tuple[str, str, str] = WEIGHT_FORMATS) -> str:
        """One line: each kind of problem through its format (fields `count` and `names`, a list of at
        most `examples`), in the order missing, unexpected, wrong shapes; the default reads
        '1 missing weights (e.g. ['out.2.bias']); 2 unexpected weights (e.g. [...])'."""
        kinds = (self.missing, self.unexpected, self.wrong_shapes)
        return "; ".join(fmt.format(count=len(found), names=list(found[:examples]))
                         for fmt, found in zip(formats, kinds) if found)


def compare_state_dict(expected: Mapping, found: Mapping, allowed_missing: tuple[str, ...] = ()) -> StateDictMismatch:
    """Compare `found` (name -> tensor) with `expected` (a module's state_dict()); expected keys
    starting with one of `allowed_missing` may be absent."""
    missing = tuple(k for k in expected if k not in found and not (allowed_missing and k.startswith(allowed_missing)))
    unexpected = tuple(k for k in found if k not in expected)
    wrong = tuple(f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
                  for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape))
    return StateDictMismatch(missing, unexpected, wrong)
