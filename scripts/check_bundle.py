"""Check the built desktop bundle (dist/deco-inspector) the way a line workstation will run it.

    python scripts/build_bundle.py && python scripts/check_bundle.py

Every run of the bundle gets a clean environment: no inherited variables, PATH an empty folder
(so no Python, no virtual environment, no PYTHONPATH), a fresh HOME and a working folder outside
the checkout. Checks, each reported with its figures:

  size         the bundle folder is under --max-size-mib
  version      `deco-inspector --version` prints pyproject.toml's version
  inspect      `deco-inspector inspect` on demo images: exit code 0/1, one CSV row per image, no errors,
               rows in the results log stamped with the version; with --compare the same scores as
               `python main.py inspect` from this checkout
  commands     the training and evaluation entry points answer --help
  torchrun     (--torchrun) a one-epoch DeCo-Diff training through torch.distributed.run started from the
               bundle, which writes a model folder stamped with the version
  gui          the window opens under Xvfb, stays up and is captured (--screenshot)

Exit code 0 when every check passed. Needs Xvfb for the gui check (or --no-gui) and Pillow with XCB.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "deco-inspector"
DEMO_DATA = ROOT / "resources" / "demo_data"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def folder_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under path."""
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


class Sandbox:
    """A clean environment for the bundle: empty PATH folder, own HOME and user data folder, own cwd."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "empty-bin"
        self.home = root / "home"
        self.work = root / "work"
        for folder in (self.bin, self.home, self.work):
            folder.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": str(self.bin), "HOME": str(self.home), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
               "DECO_INSPECTOR_HOME": str(self.home / "deco-inspector"), "HF_HUB_OFFLINE": "1",
               "QT_QPA_PLATFORM": "offscreen"}
        env.update(extra)
        return env

    def run(self, command: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=self.work, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def demo_sample(per_category: int) -> list[Path]:
    """Test images of every demo category: half good, half from the defect folders in turn (0: all)."""
    images: list[Path] = []
    for category in sorted(p for p in DEMO_DATA.iterdir() if (p / "test").is_dir()):
        good = sorted((category / "test" / "good").glob("*.*"))
        defects = [sorted(k.glob("*.*")) for k in sorted((category / "test").iterdir())
                   if k.is_dir() and k.name != "good"]
        defective = [found[i] for i in range(max(map(len, defects), default=0)) for found in defects if i < len(found)]
        if per_category <= 0:
            images += good + defective
        else:
            half = per_category // 2
            images += good[:per_category - half] + defective[:half]
    return images


def check_size(bundle: Path, max_mib: float) -> Check:
    start = time.monotonic()
    size, files = folder_size(bundle)
    mib = size / 2**20
    biggest = sorted(((p.stat().st_size, p) for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()),
                     reverse=True)[:3]
    big = ", ".join(f"{p.name} {s / 2**20:.0f} MiB" for s, p in biggest)
    return Check("size", mib <= max_mib, f"{mib:.0f} MiB in {files} files (limit {max_mib:.0f} MiB; largest: {big})",
                 time.monotonic() - start)


def check_version(exe: Path, box: Sandbox) -> Check:
    start = time.monotonic()
    expected = f"DeCo Inspector {pyproject_version()}"
    proc = box.run([str(exe), "--version"], timeout=300)
    out = proc.stdout.strip()
    ok = proc.returncode == 0 and out == expected
    detail = f"printed {out!r} (expected {expected!r}), exit code {proc.returncode}"
    if not ok:
        detail += "\n" + tail(proc.stderr)
    return Check("version", ok, detail, time.monotonic() - start)


def read_csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def inspect_with_python(inputs: Path, out_csv: Path) -> list[dict]:
    """The same inspection with this checkout's Python (the reference for --compare)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", str(inputs), "--csv", str(out_csv), "--quiet",
                    "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    return read_csv_rows(out_csv) if out_csv.is_file() else []


def check_inspect(exe: Path, box: Sandbox, per_category: int, compare: bool) -> Check:
    start = time.monotonic()
    images = demo_sample(per_category)
    if not images:
        return Check("inspect", False, f"no demo test images under {DEMO_DATA}", 0.0)
    inputs = box.work / "inspect-input"
    shutil.rmtree(inputs, ignore_errors=True)
    for image in images:  # a copy: the bundle reads from a folder that is not the checkout
        target = inputs / image.relative_to(DEMO_DATA)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
    out_csv, out_json = box.work / "inspect.csv", box.work / "inspect.json"
    log = box.work / "inspect-log.sqlite"
    proc = box.run([str(exe), "inspect", str(inputs), "--csv", str(out_csv), "--json", str(out_json), "--quiet",
                    "--device", "cpu", "--log", str(log)], timeout=1800)
    seconds = time.monotonic() - start
    problems = []
    if proc.returncode not in (0, 1):
        problems.append(f"exit code {proc.returncode} (0: all pass, 1: some fail, 2: errors)")
    rows = read_csv_rows(out_csv) if out_csv.is_file() else []
    if not out_csv.is_file():
        problems.append(f"{out_csv} was not written")
    if len(rows) != len(images):
        problems.append(f"{len(rows)} CSV rows for {len(images)} images")
    errors = [r for r in rows if r.get("verdict") == "error"]
    if errors:
        problems.append(f"{len(errors)} error rows, e.g. {errors[0].get('file')}: {errors[0].get('error')}")
    if not out_json.is_file():
        problems.append(f"{out_json} was not written")
    good = [r for r in rows if Path(r["file"]).parent.name == "good"]
    bad = [r for r in rows if Path(r["file"]).parent.name != "good"]
    detail = (f"{len(images)} demo images in {seconds:.0f} s ({1000 * seconds / len(images):.0f} ms/image incl. "
              f"start-up), exit code {proc.returncode}; good parts passed {sum(r['verdict'] == 'pass' for r in good)}"
              f"/{len(good)}, defective parts not passed {sum(r['verdict'] != 'pass' for r in bad)}/{len(bad)}")
    versions: set[str] = set()
    if log.is_file():
        import sqlite3

        with sqlite3.connect(str(log)) as conn:
            versions = {v for (v,) in conn.execute("SELECT DISTINCT app_version FROM parts")}
        detail += f"; results log app_version {sorted(versions)}"
    if versions != {pyproject_version()}:
        problems.append(f"results log app_version {sorted(versions)} != {pyproject_version()!r}")
    if compare and rows:
        reference = {Path(r["file"]).relative_to(inputs): r for r in inspect_with_python(inputs, box.work / "py.csv")}
        mine = {Path(r["file"]).relative_to(inputs): r for r in rows}
        if set(reference) != set(mine):
            problems.append(f"the Python install inspected {len(reference)} files, the bundle {len(mine)}")
        else:
            diff = max(abs(float(mine[k]["score"]) - float(reference[k]["score"])) for k in mine)
            same = sum(mine[k]["verdict"] == reference[k]["verdict"] for k in mine)
            detail += f"; against this checkout's Python: max score difference {diff:.2e}, {same}/{len(mine)} same verdicts"
            if diff > 1e-4 or same != len(mine):
                problems.append("the bundle's scores differ from the Python install's (is the demo model the same?)")
    if problems:
        detail += "; " + "; ".join(problems) + "\n" + tail(proc.stdout + proc.stderr)
    return Check("inspect", not problems, detail, seconds)


def check_commands(exe: Path, box: Sandbox) -> Check:
    start = time.monotonic()
    failed = []
    for args in (["inspect", "--help"], ["train", "--help"], ["train-vae", "--help"], ["evaluate", "--help"],
                 ["-m", "torch.distributed.run", "--help"]):
        proc = box.run([str(exe), *args], timeout=300)
        if proc.returncode != 0 or "usage" not in proc.stdout.lower():
            failed.append(f"{' '.join(args)}: exit code {proc.returncode}\n{tail(proc.stderr, 8)}")
    return Check("commands", not failed, "inspect, train, train-vae, evaluate, -m torch.distributed.run answer "
                 "--help" if not failed else "; ".join(failed), time.monotonic() - start)


def check_torchrun(exe: Path, box: Sandbox, bundle: Path) -> Check:
    """One epoch of DeCo-Diff training on 8 demo images through torchrun started from the bundle, as the
    training wizard does (training.launch.python_module_command with the bundle as sys.executable)."""
    start = time.monotonic()
    data = box.work / "train-images"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    goods = sorted((DEMO_DATA / "brick" / "train" / "good").glob("*.*"))[:8]
    for image in goods:
        shutil.copy2(image, data / image.name)
    vae = next(bundle.rglob("resources/compact_vae"), None)
    if vae is None:
        return Check("torchrun", False, f"resources/compact_vae not found in {bundle}", 0.0)
    run_dir = box.work / "tiny-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [str(exe), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "training.train_deco_diff", "--dataset", "folder", "--data-dir", str(data),
               "--model-size", "UNet_T", "--image-size", "72", "--center-size", "64", "--epochs", "1",
               "--warmup-epochs", "1", "--global-batch-size", "4", "--ckpt-every", "1", "--vae", str(vae),
               "--device", "cpu", "--experiment-dir", str(run_dir), "--events", str(run_dir / "events.jsonl")]
    proc = box.run(command, timeout=1800)
    seconds = time.monotonic() - start
    model_json = run_dir / "model" / "model.json"
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}")
    version = None
    if model_json.is_file():
        version = json.loads(model_json.read_text(encoding="utf-8")).get("app_version")
        if version != pyproject_version():
            problems.append(f"model.json app_version {version!r} != {pyproject_version()!r}")
    else:
        problems.append(f"{model_json} was not written")
    events = []
    if (run_dir / "events.jsonl").is_file():
        events = [json.loads(x)["event"] for x in (run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
    detail = (f"1 epoch on {len(goods)} images, 1 process, in {seconds:.0f} s; events {events[:1] + events[-1:]}; "
              f"model.json app_version {version!r}")
    if problems:
        detail += "; " + "; ".join(problems) + "\n" + tail(proc.stdout + proc.stderr, 25)
    return Check("torchrun", not problems, detail, seconds)


def start_xvfb(size: str) -> tuple[subprocess.Popen, str]:
    """An Xvfb server on a free display number; returns (process, ':N')."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start (no display number)")
    return proc, f":{number}"


def grab(display: str):
    from PIL import ImageGrab

    return ImageGrab.grab(xdisplay=display).convert("RGB")


def check_gui(exe: Path, box: Sandbox, screenshot: Path | None, size: str, wait_s: float) -> Check:
    start = time.monotonic()
    if shutil.which("Xvfb") is None:
        return Check("gui", False, "Xvfb is not installed (apt-get install xvfb), or use --no-gui", 0.0)
    xvfb, display = start_xvfb(size)
    app = None
    try:
        data_home = box.home / "gui-first-run"
        shutil.rmtree(data_home, ignore_errors=True)
        env = box.env(DISPLAY=display, QT_QPA_PLATFORM="xcb", DECO_INSPECTOR_HOME=str(data_home))
        log_file = box.work / "gui-output.txt"
        with log_file.open("w") as out:
            app = subprocess.Popen([str(exe)], cwd=box.work, env=env, stdout=out, stderr=subprocess.STDOUT)
        settings = data_home / "settings.ini"
        deadline = time.monotonic() + wait_s
        loaded = False
        while time.monotonic() < deadline and app.poll() is None:
            loaded = settings.is_file() and "demo_model" in settings.read_text(encoding="utf-8", errors="replace")
            if loaded:
                break
            time.sleep(1.0)
        if app.poll() is None:
            time.sleep(3.0)  # let the window paint the loaded model
        running = app.poll() is None
        image = grab(display) if running else None
        seconds = time.monotonic() - start
        problems = []
        if not running:
            problems.append(f"the app exited with code {app.returncode}\n{tail(log_file.read_text(errors='replace'))}")
        if not loaded:
            problems.append(f"the demo model was not loaded within {wait_s:.0f} s")
        detail = f"window up {seconds:.0f} s after start, demo model {'loaded' if loaded else 'not loaded'}"
        if image is not None:
            from PIL import ImageStat

            spread = max(ImageStat.Stat(image).stddev)
            colours = len(image.resize((320, 200)).getcolors(1 << 16) or [])
            detail += f", screen {image.width}x{image.height}, {colours} colours, pixel std {spread:.0f}"
            if spread < 10 or colours < 50:
                problems.append("the screen looks empty (no window drawn)")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                small = image.resize((image.width * 3 // 4, image.height * 3 // 4))
                small.quantize(colors=256).save(screenshot, optimize=True)
                detail += f"; screenshot {screenshot} ({screenshot.stat().st_size // 1024} KiB)"
        if problems:
            detail += "; " + "; ".join(problems)
        return Check("gui", not problems, detail, seconds)
    finally:
        if app is not None and app.poll() is None:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        xvfb.terminate()
        xvfb.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / APP, help="the bundle folder (default: dist/)")
    parser.add_argument("--max-size-mib", type=float, default=2048.0, help="size limit of the bundle folder")
    parser.add_argument("--images-per-category", type=int, default=4,
                        help="demo test images per category for the inspect check (0: all; default 4)")
    parser.add_argument("--compare", action="store_true",
                        help="also inspect the same images with this checkout's Python and compare the scores")
    parser.add_argument("--torchrun", action="store_true", help="also train one epoch through torchrun (minutes)")
    parser.add_argument("--no-gui", action="store_true", help="skip the window check")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window's screenshot here (PNG)")
    parser.add_argument("--screen", default="1600x1000", help="Xvfb screen size (default 1600x1000)")
    parser.add_argument("--gui-wait", type=float, default=180.0, help="seconds to wait for the demo model to load")
    args = parser.parse_args(argv)

    bundle = args.bundle.resolve()
    exe = bundle / (APP + (".exe" if sys.platform == "win32" else ""))
    if not exe.is_file():
        print(f"{exe} not found: build the bundle first (python scripts/build_bundle.py)", file=sys.stderr)
        return 2
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="deco-bundle-check-") as tmp:
        box = Sandbox(Path(tmp))
        steps = [("size", lambda: check_size(bundle, args.max_size_mib)), ("version", lambda: check_version(exe, box)),
                 ("inspect", lambda: check_inspect(exe, box, args.images_per_category, args.compare)),
                 ("commands", lambda: check_commands(exe, box))]
        if args.torchrun:
            steps.append(("torchrun", lambda: check_torchrun(exe, box, bundle)))
        if not args.no_gui:
            steps.append(("gui", lambda: check_gui(exe, box, args.screenshot, args.screen, args.gui_wait)))
        for name, step in steps:
            try:
                check = step()
            except Exception as e:  # noqa: BLE001 - a check that crashes is a failed check, reported by its name
                check = Check(name, False, f"{type(e).__name__}: {e}", 0.0)
            checks.append(check)
            print(f"[{'PASS' if check.ok else 'FAIL'}] {check.name:9s} {check.detail}", flush=True)
    failed = [c.name for c in checks if not c.ok]
    print(f"\n{exe}: {len(checks) - len(failed)} of {len(checks)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else "") + " (clean environment: empty PATH, no Python)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
