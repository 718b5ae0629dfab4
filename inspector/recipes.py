"""Recipes: named product settings (model, category, thresholds, ROI, source), one JSON file
each in user_data_dir()/recipes (Qt-free)."""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.defaults import DEFAULT_THRESHOLD
from inspection import Roi

from .imageio import natural_key
from .paths import user_data_dir
from .sources import SourceSpec

__all__ = ["Recipe", "RecipeError", "RecipeStore"]

RECIPE_FORMAT = "deco-inspector-recipe"


class RecipeError(Exception):
    """A recipe that cannot be read, saved or found; the message names it."""


@dataclass
class Recipe:
    """A named product setting. `source` and `roi` are optional; `category` None = automatic."""

    name: str
    model: str = ""
    category: str | None = None
    fail_threshold: float = DEFAULT_THRESHOLD
    review_threshold: float = DEFAULT_THRESHOLD
    roi: list[float] | None = None
    source: dict | None = None
    reverse_steps: int | None = None
    gate_fusion: bool | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    revision: int = 0   # +1 each time the recipe is saved (parts log it as their recipe version, 'r3')

    def __post_init__(self) -> None:
        self.name = str(self.name).strip()
        if not self.name:
            raise RecipeError("a recipe needs a name")
        self.fail_threshold = _finite(self.fail_threshold, "fail_threshold")
        self.review_threshold = min(_finite(self.review_threshold, "review_threshold"), self.fail_threshold)
        if self.reverse_steps is not None:
            if isinstance(self.reverse_steps, bool) or int(self.reverse_steps) != self.reverse_steps \
                    or self.reverse_steps < 1:
                raise ValueError(f"reverse_steps must be a whole number of at least 1, got {self.reverse_steps!r}")
            self.reverse_steps = int(self.reverse_steps)
        if self.gate_fusion is not None and not isinstance(self.gate_fusion, bool):
            raise ValueError(f"gate_fusion must be true, false or null, got {self.gate_fusion!r}")
        if isinstance(self.revision, bool) or not isinstance(self.revision, int) or self.revision < 0:
            raise ValueError(f"revision must be a whole number of at least 0, got {self.revision!r}")
        self.notes = "" if self.notes is None else str(self.notes)
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be an object, got {self.extra!r}")
        if self.roi is not None:
            self.roi = Roi.from_list(self.roi).to_list() if self.roi else None
        if self.source is not None:
            SourceSpec.from_dict(self.source)

    @property
    def roi_value(self) -> Roi | None:
        return Roi.from_list(self.roi) if self.roi else None

    @property
    def source_spec(self) -> SourceSpec | None:
        return SourceSpec.from_dict(self.source) if self.source else None

    def to_dict(self) -> dict:
        return {"format": RECIPE_FORMAT, "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "recipe") -> "Recipe":
        if not isinstance(d, dict) or d.get("format") != RECIPE_FORMAT:
            raise RecipeError(f"{where}: not a DeCo Inspector recipe")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where}: {e}") from None


def _finite(value, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


STEM_CHARS = 80


def _file_stem(name: str) -> str:
    """A file name for a recipe name: letters (any script), digits, '._- ' kept; when anything had
    to change, a hash of the name keeps names apart ('Ä line' and 'Ö line' are two files)."""
    stem = re.sub(r"[^\w.\- ]+", "_", name).strip(" .")[:STEM_CHARS] or "recipe"
    if stem != name:
        stem = f"{stem}-{zlib.crc32(name.encode('utf-8', 'surrogatepass')):08x}"
    return stem


class RecipeStore:
    """Recipes on disk, listed by name."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder is not None else user_data_dir() / "recipes"

    def _path(self, name: str) -> Path:
        """The file holding the recipe `name`: the one on disk (older versions named files
        differently), else a new one."""
        if self.folder.is_dir():
            for path in self.folder.glob("*.json"):
                try:
                    if self._read(path).name == name:
                        return path
                except RecipeError:
                    continue
        return self.folder / f"{_file_stem(name)}.json"

    def names(self) -> list[str]:
        return [r.name for r in self.load_all()[0]]

    def load_all(self) -> tuple[list[Recipe], list[str]]:
        """All readable recipes sorted by name, and one message per unreadable file."""
        recipes, problems = [], []
        if not self.folder.is_dir():
            return recipes, problems
        for path in sorted(self.folder.glob("*.json"), key=lambda p: natural_key(p.name)):
            try:
                recipes.append(self._read(path))
            except RecipeError as e:
                problems.append(str(e))
        return sorted(recipes, key=lambda r: natural_key(r.name)), problems

    def _read(self, path: Path) -> Recipe:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecipeError(f"{path}: cannot read recipe ({e})") from None
        return Recipe.from_dict(data, str(path))

    def load(self, name: str) -> Recipe:
        for recipe in self.load_all()[0]:
            if recipe.name == name:
                return recipe
        raise RecipeError(f"no recipe named {name!r} in {self.folder}")

    def save(self, recipe: Recipe) -> Path:
        """Write `recipe` with its revision one above the saved one's (set on `recipe` too)."""
        path = self._path(recipe.name)
        try:
            recipe.revision = self._read(path).revision + 1 if path.is_file() else 1
        except RecipeError:
            recipe.revision = 1
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(recipe.to_dict(), indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RecipeError(f"{path}: cannot save recipe ({e.strerror or e})") from None
        return path

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise RecipeError(f"no recipe named {name!r}") from None
        except OSError as e:
            raise RecipeError(f"{path}: cannot delete recipe ({e.strerror or e})") from None
