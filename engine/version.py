"""The one version number of DeCo Inspector: `[project] version` in pyproject.toml.

Read from the pyproject.toml beside the packages (a checkout, an editable install, or the PyInstaller
bundle, which carries the file: installer.spec), else from the installed package's metadata."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

PACKAGE = "deco-inspector"


def _read_version() -> str:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            project = {}
        if project.get("name") == PACKAGE and project.get("version"):
            return str(project["version"])
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _read_version()
