"""Starting the training entry points as child processes, from a Python checkout or a PyInstaller bundle.

In a bundle `sys.executable` is the app binary, not a Python interpreter. main.py therefore accepts
the interpreter's module form (`APP [-u] -m MODULE ARGS...`, see `run_python_style`), so the same
command line works frozen or not, and `torch.distributed.run` can start its workers with
`sys.executable -u -m MODULE` from inside the bundle too. No Qt here: the GUI and scripts share it.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from collections.abc import Sequence

from engine.child_process import PROJECT_ROOT, is_frozen, launch_environment, python_module_command

# the process helpers live in engine.child_process (the runtime check starts children too); named here as before
__all__ = ["SHIPPED_VAE", "GENERAL_VAE", "is_frozen", "python_module_command", "launch_environment", "run_python_style"]

# The VAE the app ships for training new models (fit's default, the wizard's default, the start
# point of a fine-tuned VAE): the compact codec (2.7 M parameters) that demo-v5 and the ELPV
# figures were built on. The demo model itself (demo-v6) runs the small live-speed codec.
SHIPPED_VAE = PROJECT_ROOT / "resources" / "compact_vae"
# The general-purpose compact codec (same shape as SHIPPED_VAE: 8 latent channels, 8x down),
# fine-tuned from it on 2,770 crops of photos, wallpapers and textures (scripts/make_general_vae.py;
# its training.json lists the corpus and PSNR on image kinds it never saw). `fit --vae` takes it.
GENERAL_VAE = PROJECT_ROOT / "resources" / "general_vae"

# interpreter options that take a value (`-W error`, `-X utf8`) and options that are accepted and ignored
_OPTIONS_WITH_VALUE = {"-W", "-X"}
_IGNORED_FLAGS = {"-u", "-B", "-E", "-s", "-S", "-I", "-O", "-OO", "-q"}


def run_python_style(argv: Sequence[str]) -> int | None:
    """Run `[-u] [-W arg] [-X opt] -m MODULE ARGS...` like the Python interpreter does (the module as
    __main__, sys.argv[0] its file); returns its exit code, or None when argv is not in that form
    (it is then one of main.py's own commands)."""
    i = 0
    unbuffered = False
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
        if argv[i] in _OPTIONS_WITH_VALUE:
            i += 2
        elif argv[i] in _IGNORED_FLAGS:
            unbuffered |= argv[i] == "-u"
            i += 1
        else:
            return None
    if i >= len(argv) or argv[i] != "-m":
        return None
    if i + 1 >= len(argv):
        print("Argument expected for the -m option (a module name, e.g. -m training.evaluate)", file=sys.stderr)
        return 2
    module, module_args = argv[i + 1], list(argv[i + 2:])
    if unbuffered or os.environ.get("PYTHONUNBUFFERED"):
        for stream in (sys.stdout, sys.stderr):
            if stream is not None and hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True, write_through=True)
    sys.argv = [module, *module_args]  # runpy replaces argv[0] with the module's file
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        print(f"No module named {module!r} ({'in this bundle' if is_frozen() else 'on sys.path'})", file=sys.stderr)
        return 1
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0
