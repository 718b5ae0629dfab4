"""Build the desktop bundle: dist/deco-inspector/ (PyInstaller one-folder build of installer.spec).

    pip install -e ".[bundle]"          # PyInstaller, once
    python scripts/build_bundle.py      # then: python scripts/check_bundle.py

The build runs PyInstaller at low CPU priority (nice 10) from this interpreter's environment:
whatever torch build is installed there (CPU or CUDA) is the one that ships.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "installer.spec"
APP = "deco-inspector"


def folder_size(path: Path) -> int:
    """Bytes in all regular files under `path` (links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def write_desktop_entry(bundle: Path, install_dir: str) -> Path:
    """A Linux menu entry (freedesktop .desktop file) for the bundle once copied to `install_dir`:
    copy it to ~/.local/share/applications/ or /usr/share/applications/."""
    path = bundle / f"{APP}.desktop"
    path.write_text("[Desktop Entry]\nType=Application\nName=DeCo Inspector\n"
                    "Comment=Visual quality inspection with diffusion anomaly detectors\n"
                    f"Exec={install_dir}/{APP} gui\n"
                    f"Icon={install_dir}/_internal/resources/icons/{APP}-256.png\n"
                    "Terminal=false\nCategories=Graphics;Science;Engineering;\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller",
                        help="PyInstaller's work folder (default: build/pyinstaller/)")
    parser.add_argument("--nice", type=int, default=10, help="CPU niceness of the build (default: 10)")
    parser.add_argument("--install-dir", default="/opt/deco-inspector",
                        help="where the bundle will be installed, for its Linux menu entry (default: /opt/deco-inspector)")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("PyInstaller") is None:
        print('PyInstaller is not installed in this environment: pip install -e ".[bundle]"', file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
               "--distpath", str(args.dist), "--workpath", str(args.work), str(SPEC)]
    if args.nice and shutil.which("nice"):
        command = ["nice", "-n", str(args.nice), *command]
    print("building:", " ".join(command), flush=True)
    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env)
    minutes = (time.monotonic() - start) / 60
    if result.returncode != 0:
        print(f"PyInstaller failed (exit code {result.returncode}) after {minutes:.1f} min", file=sys.stderr)
        return result.returncode
    bundle = args.dist / APP
    executable = bundle / (APP + (".exe" if sys.platform == "win32" else ""))
    if not executable.is_file():
        print(f"PyInstaller finished but {executable} is missing", file=sys.stderr)
        return 1
    if sys.platform.startswith("linux"):
        entry = write_desktop_entry(bundle, args.install_dir.rstrip("/"))
        print(f"menu entry for {args.install_dir}: {entry}")
    print(f"built {bundle} in {minutes:.1f} min: {folder_size(bundle) / 2**20:.0f} MiB; "
          f"run {executable} --version, or python scripts/check_bundle.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
