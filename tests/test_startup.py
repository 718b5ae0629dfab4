"""The start-up check before the window opens: no screen, or missing X libraries, is one clear
message and exit code 2, never Qt's abort text."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.startup import (EXIT_NO_SCREEN, debian_packages, import_problem, missing_libraries,
                               package_candidates, screen_problem)

REPO = Path(__file__).resolve().parents[1]
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check runs on Linux only")
QT_ABORT_TEXT = "Reinstalling the application may fix this problem"


@LINUX
def test_no_display_is_one_message_and_exit_code_2():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "main.py"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == EXIT_NO_SCREEN == 2
    assert "DISPLAY" in result.stderr and "main.py inspect" in result.stderr
    assert QT_ABORT_TEXT not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_library_names_map_to_debian_packages():
    assert package_candidates("libxcb-icccm.so.4") == ["libxcb-icccm4"]
    assert package_candidates("libxcb-keysyms.so.1") == ["libxcb-keysyms1"]
    assert package_candidates("libxkbcommon-x11.so.0") == ["libxkbcommon-x11-0"]
    assert package_candidates("libEGL.so.1") == ["libegl1"]
    assert package_candidates("libglib-2.0.so.0") == ["libglib-2.0-0", "libglib2.0-0"]
    assert package_candidates("ld-linux-x86-64.so.2") == []
    known = {"libglib2.0-0", "libxcb-icccm4"}
    assert debian_packages(["libglib-2.0.so.0", "libxcb-icccm.so.4", "libxcb-icccm.so.4"],
                           knows=lambda p: p in known) == ["libglib2.0-0", "libxcb-icccm4"]
    assert debian_packages(["libfoo-3.so.2"], knows=lambda p: None) == ["libfoo-3-2"]   # apt not there to ask


def test_missing_libraries_follow_the_qt_libraries_of_the_plugin(tmp_path):
    qt = tmp_path / "PySide6" / "Qt"
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    plugin.parent.mkdir(parents=True)
    (qt / "lib").mkdir()
    for p in (plugin, qt / "lib" / "libQt6XcbQpa.so.6", qt / "lib" / "libQt6Gui.so.6"):
        p.write_bytes(b"")
    outputs = {
        plugin.name: (f"\tlibQt6XcbQpa.so.6 => {qt}/lib/libQt6XcbQpa.so.6 (0x1)\n"
                      "\tlibxcb-icccm.so.4 => not found\n\tlibxcb-icccm.so.4 => not found\n"
                      "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n"),
        "libQt6XcbQpa.so.6": f"\tlibQt6Gui.so.6 => {qt}/lib/libQt6Gui.so.6 (0x3)\n\tlibxcb-keysyms.so.1 => not found\n",
        "libQt6Gui.so.6": "\tlibEGL.so.1 => not found\n\tlibxcb-icccm.so.4 => not found\n",
    }
    asked = []

    def fake_ldd(path: Path) -> str:
        asked.append(path.name)
        return outputs[path.name]

    assert missing_libraries(plugin, ldd=fake_ldd) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libEGL.so.1"]
    assert asked == ["libqxcb.so", "libQt6XcbQpa.so.6", "libQt6Gui.so.6"]  # never libc: not Qt's


@LINUX
def test_missing_libraries_give_the_install_line():
    env = {"DISPLAY": ":0"}
    message = screen_problem(env, plugin_finder=lambda: Path("/x/libqxcb.so"),
                             find_missing=lambda p: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"],
                             to_packages=lambda libs: debian_packages(libs, knows=lambda p: None))
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in message and "main.py inspect" in message


@LINUX
def test_platforms_without_a_screen_and_wayland_are_left_to_qt():
    nothing_missing = dict(plugin_finder=lambda: None, answers=lambda d: False)
    assert screen_problem({"QT_QPA_PLATFORM": "offscreen"}, **nothing_missing) is None
    assert screen_problem({"WAYLAND_DISPLAY": "wayland-0"}, **nothing_missing) is None
    assert "No display found" in screen_problem({"QT_QPA_PLATFORM": "xcb"}, **nothing_missing)
    assert "DISPLAY=:7" in screen_problem({"DISPLAY": ":7"}, **nothing_missing)


@LINUX
def test_the_x_server_is_asked_where_display_points(tmp_path):
    no_libs_missing = dict(plugin_finder=lambda: None)
    path = tmp_path / "X0"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        assert screen_problem({"DISPLAY": f"{path}:0"}, **no_libs_missing) is None
    path.unlink()
    message = screen_problem({"DISPLAY": f"{path}:0"}, **no_libs_missing)
    assert "Cannot connect to the display" in message and "main.py inspect" in message
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        if port > 6000:
            assert screen_problem({"DISPLAY": f"127.0.0.1:{port - 6000}"}, **no_libs_missing) is None


def test_a_gui_library_that_cannot_load_names_its_package():
    error = ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")
    message = import_problem(error, to_packages=lambda libs: debian_packages(libs, knows=lambda p: None))
    assert "libEGL.so.1" in message and "sudo apt-get install libegl1" in message and "main.py inspect" in message
