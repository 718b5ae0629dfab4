"""Command lines for child processes of this app, from a Python checkout or a PyInstaller bundle.

In a bundle `sys.executable` is the app binary, not a Python interpreter; main.py accepts the
interpreter's module form (`APP [-u] -m MODULE ARGS...`, see `training.launch.run_python_style`), so
the same command line works frozen or not. The training jobs and the runtime check
(`engine.runtime_choice`) start their children with these. No Qt here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PROJECT_ROOT", "is_frozen", "python_module_command", "launch_environment"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def is_frozen() -> bool:
    """True inside a PyInstaller bundle (sys.executable is then the app, not Python)."""
    return bool(getattr(sys, "frozen", False))


def python_module_command(module: str, args: Sequence[str] = (), nproc: int | None = None) -> list[str]:
    """The argv that runs `python -m MODULE ARGS` (nproc None) or `torchrun --standalone
    --nproc_per_node=NPROC -m MODULE ARGS` with this interpreter, or with the bundle's own binary when
    frozen (main.py then acts as the interpreter). Run it with `env=launch_environment()` so that a
    checkout that is not pip-installed finds its packages.

        subprocess.Popen(python_module_command("training.train_deco_diff", ["--data-dir", "d"], nproc=2),
                         env=launch_environment())
    """
    if nproc is not None and int(nproc) < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    launcher = [sys.executable]
    if nproc is None:
        return [*launcher, "-m", module, *map(str, args)]
    return [*launcher, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
            "-m", module, *map(str, args)]


def launch_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) in which the child finds the project's packages: from a
    checkout, the project root goes first on PYTHONPATH (torchrun's workers inherit it); frozen, the
    bundle needs nothing and PYTHONPATH/PYTHONHOME are dropped so a local Python cannot interfere."""
    env = dict(os.environ if base is None else base)
    if is_frozen():
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        return env
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    root = str(PROJECT_ROOT)
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
