"""Desktop delivery: one version number everywhere, the bundle-safe module launcher, the light and
dark styles, the icon set and the first-run screen."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.gui_helpers import make_tiny_detector, open_inspector, tiny_loader

REPO = Path(__file__).resolve().parents[1]


def pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(path))
    monkeypatch.delenv("DECO_INSPECTOR_NO_WELCOME", raising=False)
    return path


@pytest.fixture
def plain_style(qapp):
    """Leave the application without a style sheet for the tests that follow."""
    yield qapp
    qapp.setStyleSheet("")


# ----------------------------------------------------------------- version
def test_one_version_in_pyproject_engine_cli_about_and_model_json(tmp_path, capsys):
    import main
    from engine.version import __version__
    from inspector.dialogs import about_text

    version = pyproject_version()
    assert __version__ == version
    with pytest.raises(SystemExit) as stop:
        main.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"DeCo Inspector {version}"
    assert f"<h3>DeCo Inspector {version}</h3>" in about_text("cpu")
    folder = make_tiny_detector().save(tmp_path / "model")
    assert json.loads((folder / "model.json").read_text(encoding="utf-8"))["app_version"] == version


def test_version_is_read_from_the_pyproject_beside_the_engine_as_in_the_bundle(tmp_path):
    """In the PyInstaller bundle engine/version.py sits in the bundle folder next to the bundled
    pyproject.toml (installer.spec), without package metadata: that layout must give its version."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "version.py").write_bytes((REPO / "engine" / "version.py").read_bytes())
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "deco-inspector"\nversion = "9.8.7"\n')
    spec = importlib.util.spec_from_file_location("bundled_version", tmp_path / "engine" / "version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__version__ == "9.8.7"


def test_a_foreign_pyproject_beside_the_packages_is_not_taken_for_ours(tmp_path):
    """A pip install puts engine/ into site-packages, where another project's pyproject.toml may lie."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "version.py").write_bytes((REPO / "engine" / "version.py").read_bytes())
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\nversion = "5.5.5"\n')
    spec = importlib.util.spec_from_file_location("site_version", tmp_path / "engine" / "version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__version__ != "5.5.5"
    assert module.__version__ in (pyproject_version(), "0+unknown")  # the installed metadata, if any


def test_installer_spec_bundles_the_pyproject_and_the_resources():
    text = (REPO / "installer.spec").read_text(encoding="utf-8")
    assert '(str(ROOT / "pyproject.toml"), ".")' in text
    for folder in ("demo_model", "demo_data", "general_vae", "compact_vae", "icons", "styles"):
        assert f'"resources/{folder}"' in text
    assert "torch.distributed.run" in text and 'collect_submodules("training")' in text


# ----------------------------------------------------------------- launcher
def test_python_module_command_from_a_checkout_and_frozen(monkeypatch):
    from training.launch import launch_environment, python_module_command

    assert python_module_command("training.evaluate", ["--model", Path("m")]) == [
        sys.executable, "-m", "training.evaluate", "--model", "m"]
    command = python_module_command("training.train_deco_diff", ["--epochs", "1"], nproc=2)
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "-m", "training.train_deco_diff", "--epochs", "1"]
    with pytest.raises(ValueError, match="nproc"):
        python_module_command("training.train_vae", nproc=0)
    env = launch_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/deco-inspector/deco-inspector")
    assert python_module_command("training.train_vae", ["--out", "v"], nproc=1)[:2] == [
        "/opt/deco-inspector/deco-inspector", "-m"]
    assert "PYTHONPATH" not in launch_environment({"PYTHONPATH": "/elsewhere", "HOME": "/root"})


def test_main_runs_a_module_like_the_interpreter(tmp_path, monkeypatch, capsys):
    import main
    from training.launch import run_python_style

    (tmp_path / "probe_module.py").write_text(
        "import sys, pathlib\n"
        "pathlib.Path(sys.argv[1]).write_text(repr(sys.argv) + __name__)\n"
        "sys.exit(int(sys.argv[2]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    out = tmp_path / "seen.txt"
    assert main.main(["-u", "-m", "probe_module", str(out), "3"]) == 3
    seen = out.read_text()
    assert seen.endswith("__main__") and "probe_module.py'" in seen and f"'{out}', '3'" in seen
    assert main.main(["-W", "ignore", "-m", "probe_module", str(out), "0"]) == 0
    assert run_python_style(["inspect", "-m", "x"]) is None
    assert run_python_style(["-m"]) == 2
    assert main.main(["-m", "no_such_module_here"]) == 1
    assert "No module named 'no_such_module_here'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_starts_its_workers_through_an_app_binary(tmp_path):
    """As in the bundle: sys.executable is the app (here a wrapper around main.py, given to torchrun as
    PYTHON_EXEC), torchrun runs inside it and starts its worker with `APP -u -m MODULE`."""
    from training.launch import launch_environment

    app = tmp_path / "deco-inspector"
    app.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "main.py"}" "$@"\n')
    app.chmod(app.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "worker_probe.py").write_text(
        "import os, sys, pathlib\n"
        "pathlib.Path(sys.argv[1]).write_text(os.environ['RANK'] + '/' + os.environ['WORLD_SIZE'])\n")
    env = launch_environment({**os.environ, "PYTHON_EXEC": str(app), "OMP_NUM_THREADS": "1",
                              "PYTHONPATH": str(tmp_path)})
    out = tmp_path / "rank.txt"
    proc = subprocess.run([str(app), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           "-m", "worker_probe", str(out)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text() == "0/1"


# ----------------------------------------------------------------- styles and icons
def test_both_styles_parse_and_switching_is_remembered(qtbot, qtlog, home, plain_style):
    from inspector.appearance import STYLES, load_stylesheet, saved_style

    window, ctl = open_inspector(qtbot, home, tiny_loader())
    assert window.act_styles["dark"].isChecked()  # the default
    for name in STYLES:
        sheet = load_stylesheet(name)
        assert "@ICONS@" not in sheet and "QMainWindow" in sheet
    window.act_styles["light"].trigger()
    assert plain_style.styleSheet() == load_stylesheet("light")
    assert plain_style.property("decoStyle") == "light"
    assert saved_style(ctl.settings) == "light"
    qtbot.wait(50)
    window.act_styles["dark"].trigger()
    assert plain_style.styleSheet() == load_stylesheet("dark")
    window.act_styles["light"].trigger()
    window.close()

    window2, ctl2 = open_inspector(qtbot, home, tiny_loader())
    assert window2.act_styles["light"].isChecked() and not window2.act_styles["dark"].isChecked()
    problems = [r.message for r in qtlog.records if "stylesheet" in r.message.lower() or "parse" in r.message]
    assert problems == []


def test_unknown_or_missing_style_falls_back(qtbot, home, plain_style, tmp_path, monkeypatch):
    import inspector.appearance as appearance

    settings = appearance.QSettings(str(tmp_path / "s.ini"), appearance.QSettings.Format.IniFormat)
    settings.setValue("display/style", "neon")
    assert appearance.saved_style(settings) == "dark"
    with pytest.raises(ValueError, match="unknown style 'neon'"):
        appearance.save_style(settings, "neon")
    monkeypatch.setattr(appearance, "STYLES_DIR", tmp_path / "nowhere")
    with pytest.raises(OSError, match="light style .*nowhere"):
        appearance.load_stylesheet("light")
    assert appearance.apply_style(plain_style, "light") == "light" and plain_style.styleSheet() == ""


def test_icon_set_is_complete_and_loads(qapp):
    from inspector.appearance import ICONS_DIR, app_icon, menu_icon

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from make_icons import ACTION_ICONS, APP_PNG_SIZES
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for size in APP_PNG_SIZES:
        assert (ICONS_DIR / f"deco-inspector-{size}.png").is_file()
    assert (ICONS_DIR / "deco-inspector.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"  # ICO header
    icon = app_icon()
    assert not icon.isNull() and icon.pixmap(48, 48).width() == 48
    for name in ACTION_ICONS:
        assert not menu_icon(name).pixmap(24, 24).isNull(), name
    assert menu_icon("no-such-icon").isNull()


# ----------------------------------------------------------------- first-run screen
def test_welcome_screen_is_shown_once_and_its_buttons_act(qtbot, home, monkeypatch):
    from inspector.app import show_welcome_once
    from inspector.welcome import WelcomeDialog

    window, ctl = open_inspector(qtbot, home, tiny_loader())
    started = []
    monkeypatch.setattr(ctl, "start", lambda: started.append(True))
    ctl.restore(model=str(home / "no-model"))  # shows the first-run hint too
    dialog = show_welcome_once(window, ctl)
    assert isinstance(dialog, WelcomeDialog) and dialog.isVisible()
    text = dialog.text.toPlainText()
    assert "demo" in text and "Open model folder" in text and "Training wizard" in text
    assert show_welcome_once(window, ctl) is None  # once per user data folder
    dialog.demo_button.click()
    assert not dialog.isVisible() and dialog.chosen == "demo"
    qtbot.waitUntil(lambda: started == [True])
    assert not window.hint.isVisibleTo(window)
    assert ctl.settings.value("app/first_run_done") in (True, "true")
    window.close()

    window2, ctl2 = open_inspector(qtbot, home, tiny_loader())
    assert show_welcome_once(window2, ctl2) is None  # remembered across starts
    window2.act_welcome.trigger()  # Help ▸ Getting started opens it again
    again = [d for d in window2.findChildren(WelcomeDialog) if d.isVisible()]
    assert len(again) == 1
    opened = []
    window2.act_open_model.triggered.disconnect()
    window2.act_open_model.triggered.connect(lambda: opened.append(True))
    again[0].model_button.click()
    qtbot.waitUntil(lambda: opened == [True])


def test_welcome_screen_can_be_suppressed(qtbot, home, monkeypatch):
    from inspector.app import show_welcome_once

    monkeypatch.setenv("DECO_INSPECTOR_NO_WELCOME", "1")
    window, ctl = open_inspector(qtbot, home, tiny_loader())
    assert show_welcome_once(window, ctl) is None
    monkeypatch.setenv("DECO_INSPECTOR_NO_WELCOME", "0")
    dialog = show_welcome_once(window, ctl)
    assert dialog is not None
    dialog.close_button.click()
    assert dialog.chosen == "close" and not dialog.isVisible()
