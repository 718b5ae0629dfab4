"""Live-mode budget: the inspector's real engine worker with the demo model on a fake 30 fps
camera, under offscreen Qt. Measures inspected frames/s, frame age (capture -> verdict ready),
engine latency per frame, the displayed frames/s (repaints of the live view) while the engine is
busy, and the CPU: cores busy (the process's CPU time over the wall time), CPU ms per inspected
frame, and in the JSON the cores each thread kept busy (engine lane, OpenVINO's workers, archiver,
main thread, ...).

    python benchmarks/bench_live.py                      # default settings and the faster settings
    python benchmarks/bench_live.py --configs default --seconds 20 --runs 5
    python benchmarks/bench_live.py --update-readme      # rewrite the README live-mode table

Each configuration runs `--runs` times, each in a fresh subprocess (its own Qt application,
engine thread and results log in a temporary folder); the table gives the median of the runs.
A configuration is a set of engine settings applied when the model is loaded (what the
settings panel would change) plus the engine thread count. The app's default: on torch one
single-threaded CPU lane per core (`inspector.worker.engine_lanes`; the live queue then keeps the
newest frame for each lane) and one intra-op thread for work outside the lanes (`engine_threads`,
all cores but one); on OpenVINO one lane, whose live frames go through the two-thread pipeline
(`inspector.live_pipeline`: the networks on `engine_threads` threads in a network thread, the
rest in the worker's). Writes benchmarks/results/live.json
and live.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import publish_results  # noqa: E402

README_BEGIN = "<!-- live-table:begin -->"
README_END = "<!-- live-table:end -->"
DEMO_MODEL = REPO / "resources" / "demo_model"
# the warm-up frames may include compiling the networks (compile configs; minutes on a busy CPU)
WARMUP_TIMEOUT_S = 900

_SIGNALS = {int(sig) for sig in signal.Signals}

# name -> (settings overrides for the loaded model, engine threads or None for the app's default);
# the camera shows the textured pattern (every part fails, so each is archived: two PNGs) unless
# the name is in GOOD_PART_CONFIGS (a good demo brick: parts pass, nothing but a thumbnail is archived)
CONFIGS: dict[str, tuple[dict, int | None]] = {
    "default": ({}, None),
    "default, good parts": ({}, None),
    "one lane": ({"lanes": 1}, None),
    "two lanes": ({"lanes": 2}, None),
    "bf16": ({"precision": "bf16"}, None),
    "bf16 + compile": ({"precision": "bf16", "compile": True}, None),
    "openvino bf16": ({"runtime": "openvino", "precision": "bf16"}, None),
    "openvino int8": ({"runtime": "openvino", "precision": "int8"}, None),
    "5 steps": ({"reverse_steps": 5, "start_t": 5}, None),
    "1 step": ({"reverse_steps": 1, "start_t": 1}, None),
}


GOOD_PART_CONFIGS = ("default, good parts",)
GOOD_PART_IMAGE = REPO / "resources" / "demo_data" / "brick" / "test" / "good" / "000.jpg"


def _good_part_frame(h: int, w: int):
    """A good demo brick stretched to the camera's size (preprocessing squares it again), in the
    BGR order a camera delivers."""
    import numpy as np
    from PIL import Image

    from engine.imageio import read_image

    rgb = np.asarray(Image.fromarray(read_image(GOOD_PART_IMAGE)).resize((w, h), Image.Resampling.BICUBIC))
    return np.ascontiguousarray(rgb[..., ::-1])


def _textured_frame(h: int, w: int, seed: int = 0):
    """A brick-like photograph-sized test pattern (the engine's cost does not depend on content)."""
    import numpy as np
    from skimage import data

    brick = data.brick()
    reps = (-(-h // brick.shape[0]), -(-w // brick.shape[1]))
    gray = np.tile(brick, reps)[:h, :w]
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def _cpu_seconds() -> float:
    """CPU time this process has used, all its threads (OpenVINO's and OpenCV's included)."""
    t = os.times()
    return t.user + t.system


def _thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds per thread of this process, by Python thread name (others: 'native <comm>',
    OpenVINO's and Qt's workers), from /proc; empty where there is no /proc."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(task.name)) or f"native {comm}"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def run_single(cfg: dict) -> dict:
    """One measurement in this process: open the window, load the model, stream, measure."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if cfg.get("threads"):
        os.environ["DECO_INSPECTOR_THREADS"] = str(cfg["threads"])
    from PySide6.QtCore import QEventLoop, QTimer

    from inspector.app import app_settings, create_inspector
    from inspector.sources import SourceSpec
    from inspector.worker import engine_threads
    from tests.gui_helpers import FakeCamera

    camera = FakeCamera(fps=cfg["camera_fps"], size=(cfg["height"], cfg["width"]))
    good_parts = cfg.get("content") == "good part"
    pattern = (_good_part_frame if good_parts else _textured_frame)(cfg["height"], cfg["width"])
    plain_read = camera.read

    def textured_read(cap):  # the fake camera's timing, the picture (textured: with a moving bright column)
        ok, img = plain_read(cap)
        if ok and img is not None and img.size:
            img = pattern.copy()
            if not good_parts:
                img[:, (camera.frames * 3) % img.shape[1]] = 255
        return ok, img

    camera.read = textured_read

    def run_until(condition, timeout_s: float) -> bool:
        loop = QEventLoop()
        poll = QTimer()
        poll.timeout.connect(lambda: condition() and loop.quit())
        poll.start(20)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        poll.stop()
        return condition()

    with tempfile.TemporaryDirectory() as home:
        window, ctl = create_inspector(capture_factory=camera.factory, data_dir=Path(home),
                                       settings=app_settings(Path(home)))
        window.show()
        t0 = time.monotonic()
        ctl.open_model(str(cfg["model"]), dict(cfg["overrides"]))
        if not run_until(lambda: ctl.model_info is not None and not ctl.model_loading, 300):
            raise RuntimeError(f"the model {cfg['model']} did not load within 300 s")
        load_s = time.monotonic() - t0
        ran = ctl.worker.detector.settings  # read only: what the engine runs after any fallback
        wanted = {k: v for k, v in cfg["overrides"].items() if k in ("runtime", "precision", "compile")}
        got = {k: getattr(ran, k, None) for k in wanted}
        if got != wanted:
            raise RuntimeError(f"asked for {wanted}, the engine runs {got} (a fallback)")
        runs_as = f"{getattr(ran, 'runtime', 'torch')} {ran.precision}" + (" + compile" if ran.compile else "")
        results = []
        ctl.worker.inspected.connect(results.append)
        ctl.open_source(SourceSpec("camera", "0"))
        if not run_until(lambda: len(results) >= cfg["warmup_frames"], WARMUP_TIMEOUT_S):
            raise RuntimeError(f"no frames were inspected within {WARMUP_TIMEOUT_S} s")
        first, painted, shown, read = len(results), window.live_view.paint_count, ctl.display_frames, \
            ctl.reader.frames_read
        pipeline = ctl.worker._pipeline
        pipeline_start = (pipeline.items, pipeline.network_idle_s, pipeline.ready_wait_s) if pipeline else None
        started, cpu_started, threads_started = time.monotonic(), _cpu_seconds(), _thread_cpu_seconds()
        run_until(lambda: False, cfg["seconds"])
        elapsed, cpu_s = time.monotonic() - started, _cpu_seconds() - cpu_started
        if pipeline is not None and pipeline_start is not None:
            items = max(1, pipeline.items - pipeline_start[0])
            pipeline_stats = {"network_idle_ms_per_frame": 1000 * (pipeline.network_idle_s - pipeline_start[1]) / items,
                              "ready_wait_ms_per_frame": 1000 * (pipeline.ready_wait_s - pipeline_start[2]) / items}
        else:
            pipeline_stats = None
        by_thread = {name: s - threads_started.get(name, 0.0) for name, s in _thread_cpu_seconds().items()}
        measured = [r for r in results[first:] if r.score is not None]
        verdicts = {}
        for r in measured:
            verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
        errors = [r.error for r in results[first:] if r.score is None]
        out = {
            **cfg, "model": str(cfg["model"]), "load_s": load_s, "seconds_measured": elapsed,
            "inspected_per_s": len(measured) / elapsed,
            "cores_busy": cpu_s / elapsed,
            "pipeline": pipeline_stats,
            "cpu_ms_per_inspected": 1000.0 * cpu_s / len(measured) if measured else None,
            "cores_busy_by_thread": {name: round(s / elapsed, 3) for name, s in
                                     sorted(by_thread.items(), key=lambda kv: -kv[1]) if s > 0},
            "displayed_per_s": (ctl.display_frames - shown) / elapsed,
            "repaints_per_s": (window.live_view.paint_count - painted) / elapsed,
            "camera_frames_per_s": (ctl.reader.frames_read - read) / elapsed,
            "age_ms_median": statistics.median(r.age_ms for r in measured) if measured else None,
            "age_ms_max": max(r.age_ms for r in measured) if measured else None,
            "engine_ms_median": statistics.median(r.latency_ms for r in measured) if measured else None,
            "stages_ms_median": ({k: statistics.median(r.timings.get(k, 0.0) for r in measured)
                                  for k in measured[0].timings} if measured else {}),
            "errors": errors[:3], "dropped_frames": ctl.frames.dropped,
            "live_path": "pipeline" if pipeline is not None else "lanes",
            "engine_threads": engine_threads(), "engine_lanes": ctl.model_info.lanes if ctl.model_info else 1,
            "steps": ctl.model_info.reverse_steps if ctl.model_info else None, "runs_as": runs_as,
            "verdicts": verdicts,
        }
        ctl.stop()
        window.close()
    return out


def _spawn(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, __file__, "--single", json.dumps(cfg)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        return {**cfg, "error": run_failure(proc.returncode, proc.stderr)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_failure(returncode: int, stderr: str) -> str:
    """One line on why a run failed: the signal that ended it, or the exit status, with the last
    Python exception line of its stderr (Qt warnings in between are not the cause)."""
    how = (f"crashed ({signal.Signals(-returncode).name})" if returncode < 0 and -returncode in _SIGNALS
           else f"exit status {returncode}")
    lines = stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        after = [line for line in lines[starts[-1] + 1:] if line and not line[0].isspace()]
        if after:
            return f"{how}: {after[0]}"
    fatal = [line for line in lines if line.startswith("Fatal Python error") or "double free" in line]
    return f"{how}: {fatal[0]}" if fatal else how


def _median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(name: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    out = {"config": name, "runs": len(runs), "failed": len(runs) - len(ok),
           "errors": sorted({r["error"] for r in runs if "error" in r})}
    for key in ("inspected_per_s", "displayed_per_s", "repaints_per_s", "camera_frames_per_s", "age_ms_median",
                "age_ms_max", "engine_ms_median", "cores_busy", "cpu_ms_per_inspected", "load_s", "engine_threads", "engine_lanes", "steps"):
        out[key] = _median(ok, key)
    if ok:
        out["overrides"], out["threads"] = ok[0]["overrides"], ok[0]["threads"]
        out["runs_as"] = ok[0].get("runs_as", "")
        out["live_path"] = ok[0].get("live_path", "lanes")
    return out


def _fixed(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summaries: list[dict], machine: str, args) -> str:
    lines = [f"Measured on {machine} by `python benchmarks/bench_live.py --update-readme` "
             f"({time.strftime('%Y-%m-%d %H:%M %Z')}): the demo model in the real engine worker, a fake "
             f"{args.camera_fps:g} fps {args.width}x{args.height} camera, offscreen Qt, {args.seconds:g} s per run, "
             f"median of {args.runs} runs; load average {os.getloadavg()[0]:.1f} at the end.", "",
             "| settings | runs as | DDIM steps | engine lanes x threads (pipeline: network thread's threads) | inspected frames/s | displayed frames/s "
             "| frame age ms (median / max) | engine ms/frame | cores busy | CPU ms per inspected frame | camera frames/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        if s.get("inspected_per_s") is None:
            lines.append(f"| {s['config']} | | | | error: {'; '.join(s['errors'])} | | | | | | |")
            continue
        age = "-" if s["age_ms_median"] is None else f"{s['age_ms_median']:.0f} / {s['age_ms_max']:.0f}"
        engine = "-" if s["engine_ms_median"] is None else f"{s['engine_ms_median']:.0f}"
        lanes = s.get("engine_lanes") or 1
        threads = f"{lanes:.0f} x 1" if lanes > 1 else ("-" if s["engine_threads"] is None else
                                                        f"1 x {s['engine_threads']:.0f}")
        if s.get("live_path") == "pipeline":
            threads = f"pipeline, networks on {threads.split(' x ')[1]}"
        steps = "-" if s.get("steps") is None else f"{s['steps']:.0f}"
        lines.append(f"| {s['config']} | {s.get('runs_as', '')} | {steps} | {threads} | {s['inspected_per_s']:.2f} | {s['displayed_per_s']:.1f} "
                     f"| {age} | {engine} | {_fixed(s.get('cores_busy'), 2)} | {_fixed(s.get('cpu_ms_per_inspected'), 0)} "
                     f"| {s['camera_frames_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument("--configs", default=";".join(CONFIGS), help=f"semicolon list of: {'; '.join(CONFIGS)}")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run")
    p.add_argument("--warmup-frames", type=int, default=3, help="inspected frames before measuring")
    p.add_argument("--camera-fps", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--name", default="live")
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args()
    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    names = [n.strip() for n in args.configs.split(";") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    summaries, all_runs = [], {}
    for name in names:
        overrides, threads = CONFIGS[name]
        cfg = {"model": str(args.model), "overrides": overrides, "threads": threads, "seconds": args.seconds,
               "warmup_frames": args.warmup_frames, "camera_fps": args.camera_fps, "width": args.width,
               "height": args.height, "content": "good part" if name in GOOD_PART_CONFIGS else "textured"}
        runs = []
        for k in range(args.runs):
            print(f"{name}: run {k + 1}/{args.runs} ...", file=sys.stderr, flush=True)
            runs.append(_spawn(cfg))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        all_runs[name] = runs
        summaries.append(summarize(name, runs))
    from engine.acceleration import cpu_description

    machine = cpu_description()
    publish_results(args.name, {"machine": machine, "load_average": os.getloadavg(), "summaries": summaries,
                                "runs": all_runs},
                    markdown(summaries, machine, args), (README_BEGIN, README_END) if args.update_readme else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
