"""Can Qt open a window here? Checked before PySide6's GUI modules load, so that a machine without a
screen, or without the system libraries Qt's X11 (xcb) platform plugin needs, gets one clear message
and exit code 2 instead of Qt's abort text.

Nothing here imports PySide6's GUI modules (a missing libEGL would stop that import already).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["EXIT_NO_SCREEN", "screen_problem", "import_problem", "missing_libraries", "debian_packages", "package_candidates",
           "xcb_plugin"]

EXIT_NO_SCREEN = 2
NO_WINDOW_HINT = "or use `main.py inspect` without a window"
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "vkkhrdisplay", "minimalegl")
X11_SOCKET_DIR = "/tmp/.X11-unix"
X11_TCP_BASE_PORT = 6000
CONNECT_TIMEOUT_S = 2.0
TOOL_TIMEOUT_S = 10.0
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_RESOLVED = re.compile(r"^\s*\S+\s+=>\s+(/\S+)", re.MULTILINE)
_SONAME = re.compile(r"^lib(?P<name>.+?)\.so\.(?P<major>\d+)")


def xcb_plugin() -> Path | None:
    """PySide6's X11 platform plugin (found without importing PySide6), or None."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        plugin = Path(folder) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def _ldd(path: Path) -> str:
    try:
        return subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def missing_libraries(plugin: Path, ldd=_ldd) -> list[str]:
    """System libraries that `plugin` and the Qt libraries next to it need but the loader cannot
    find (ldd's 'not found' entries), in the order ldd names them."""
    qt_dir = plugin.resolve().parents[2]   # <PySide6>/Qt
    missing: list[str] = []
    checked: set[str] = set()
    todo = [str(plugin)]
    while todo:
        path = todo.pop(0)
        if path in checked:
            continue
        checked.add(path)
        text = ldd(Path(path))
        missing += [lib for lib in dict.fromkeys(_NOT_FOUND.findall(text)) if lib not in missing]
        todo += [p for p in _RESOLVED.findall(text) if p not in checked and Path(p).resolve().is_relative_to(qt_dir)]
    return missing


def package_candidates(soname: str) -> list[str]:
    """Debian/Ubuntu package names a library is usually shipped in, most likely first (the
    library naming policy: libxcb-icccm.so.4 -> libxcb-icccm4, libxkbcommon-x11.so.0 ->
    libxkbcommon-x11-0, libEGL.so.1 -> libegl1; libglib-2.0.so.0 -> libglib2.0-0)."""
    m = _SONAME.match(soname)
    if not m:
        return []
    name, major = m.group("name").lower().replace("_", "-"), m.group("major")
    joined = f"lib{name}-{major}" if name[-1].isdigit() else f"lib{name}{major}"
    out = [joined]
    versioned = re.fullmatch(r"(.+?)-(\d[\d.]*)", name)
    if versioned:
        out.append(f"lib{versioned.group(1)}{versioned.group(2)}-{major}")
    return out


def _apt_knows(package: str) -> bool | None:
    """Whether apt's package lists know `package`; None when apt-cache is not there to ask."""
    if shutil.which("apt-cache") is None:
        return None
    try:
        result = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True,
                                text=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.returncode == 0 and "Package:" in result.stdout


def debian_packages(sonames: list[str], knows=_apt_knows) -> list[str]:
    """One package per library: the first candidate apt knows, else the most likely name."""
    packages: list[str] = []
    for soname in sonames:
        candidates = package_candidates(soname)
        if not candidates:
            continue
        chosen = next((c for c in candidates if knows(c)), candidates[0])
        if chosen not in packages:
            packages.append(chosen)
    return packages


def _x_server_answers(display: str) -> bool:
    """Whether something listens where DISPLAY points ([host]:N[.screen]: a local socket or TCP 6000+N)."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?", display.strip())
    if not m:
        return True   # a form this check does not know (e.g. a launchd path): let Qt try
    host, number = m.group("host"), int(m.group("number"))
    if host in ("", "unix") or host.startswith("/"):
        path = host if host.startswith("/") else f"{X11_SOCKET_DIR}/X{number}"
        addresses = [path, "\0" + path] if sys.platform.startswith("linux") else [path]
        for address in addresses:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(CONNECT_TIMEOUT_S)
                try:
                    s.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        with socket.create_connection((host, X11_TCP_BASE_PORT + number), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def screen_problem(environ=None, plugin_finder=xcb_plugin, find_missing=missing_libraries,
                   to_packages=debian_packages, answers=_x_server_answers) -> str | None:
    """Why Qt cannot open a window here (one message for the operator), or None when it can or when
    this check cannot tell (not Linux, a Wayland session, a platform that needs no screen)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0].strip().lower()
    if platform in HEADLESS_PLATFORMS:
        return None
    display, wayland = env.get("DISPLAY", "").strip(), env.get("WAYLAND_DISPLAY", "").strip()
    if not display and not wayland:
        return ("No display found: DISPLAY (and WAYLAND_DISPLAY) is not set, so there is no screen to open the "
                f"window on. Set DISPLAY (e.g. DISPLAY=:0, or ssh -X), {NO_WINDOW_HINT}.")
    if platform.startswith("wayland") or (not platform and wayland and not display):
        return None
    plugin = plugin_finder()
    if plugin is not None:
        missing = find_missing(plugin)
        if missing:
            packages = to_packages(missing)
            install = f" Install them (Debian/Ubuntu): sudo apt-get install {' '.join(packages)}." if packages else ""
            return (f"Qt cannot open the window: its X11 platform plugin ({plugin.name}) needs system libraries "
                    f"that are missing: {', '.join(missing)}.{install} Then start again, {NO_WINDOW_HINT}.")
    if not answers(display):
        return (f"Cannot connect to the display DISPLAY={display}: no X server answers there. Start one or "
                f"set DISPLAY to a running one, {NO_WINDOW_HINT}.")
    return None


def import_problem(error: ImportError, to_packages=debian_packages) -> str:
    """The message for PySide6's GUI modules failing to load (e.g. 'libEGL.so.1: cannot open
    shared object file'), with the package to install when the library can be named."""
    found = re.search(r"(lib[\w.+-]+\.so(?:\.\d+)*)", str(error))
    packages = to_packages([found.group(1)]) if found else []
    install = f" Install it (Debian/Ubuntu): sudo apt-get install {' '.join(packages)}." if packages else ""
    return f"Qt's window libraries cannot be loaded: {error}.{install} Then start again, {NO_WINDOW_HINT}."
