"""Where a live frame's time goes, network by network, and the fastest the engine could be on this
machine: each of the demo model's networks (VAE encoder, UNet step, VAE decoder) timed alone on
every runtime and precision at batches 1, 2 and 4, the work around them (preprocess, classify,
maps, postprocess) timed in `predict`, and an OpenVINO per-operator profile of the UNet step.

    python benchmarks/bench_networks.py                    # README table (--update-readme rewrites it)
    python benchmarks/bench_networks.py --batches 1 --repeats 5

The engine floor for a batch size is the sum, per frame, of the fastest encoder, `reverse_steps`
times the fastest UNet step and the fastest decoder (two images per frame: the input and its
reconstruction) at that batch, plus the other stages at their fastest measured setting: no
pipeline built from these networks runs faster on this machine, whatever it overlaps, because
every stage already uses all cores. Its inverse bounds the live inspected frames/s; a batch of
B frames also makes the first frame wait for the other B-1. OpenVINO networks are compiled as the
live window runs them (one stream, all cores); torch runs with all cores as intra-op threads.
Writes benchmarks/results/networks.json and networks.md (`--name` for other names).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import RESULTS_DIR, publish_results, write_readme_section  # noqa: E402

README_BEGIN = "<!-- networks-table:begin -->"
README_END = "<!-- networks-table:end -->"
DEMO_MODEL = REPO / "resources" / "demo_model"
DEMO_IMAGES = REPO / "resources" / "demo_data"
SETTINGS = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
OTHER_STAGES = ("preprocess", "classify", "maps", "postprocess")
# OpenVINO operator kinds, grouped for the profile: (group, executed node types)
OPERATOR_GROUPS = (("attention (fused)", ("Subgraph",)), ("matmul", ("FullyConnected", "MatMul")),
                   ("convolution", ("Convolution",)), ("normalization", ("MVN",)),
                   ("layout (reorder, transpose)", ("Reorder", "Transpose")))


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _frames(count: int):
    from engine.imageio import read_image

    paths = sorted(p for p in DEMO_IMAGES.glob("*/test/*/*") if p.is_file())
    step = max(1, len(paths) // count)
    return [read_image(p) for p in paths[::step][:count]]


def time_setting(model_path: Path, runtime: str, precision: str, batches, repeats: int) -> dict:
    """Each network's median ms per call at each batch on one setting, and the other stages'
    median ms per frame in `predict` at batch 1."""
    import torch

    from engine.loading import load_model
    from engine.preprocess import preprocess_frames

    threads = os.cpu_count() or 1
    torch.set_num_threads(1 if runtime == "openvino" else threads)   # OpenVINO: one stream on all cores
    model = load_model(model_path).with_settings(runtime=runtime, precision=precision, batch_size=1)
    if (model.settings.runtime, model.settings.precision) != (runtime, precision):
        return {"error": f"fell back to {model.settings.runtime} {model.settings.precision}"}
    frames = _frames(8)
    out: dict = {"networks": {}, "int8_networks": list(getattr(model, "int8_networks", ()) or ())}
    steps = model.settings.reverse_steps
    with torch.inference_mode(), model._autocast():
        for batch in batches:
            images = preprocess_frames([frames[k % len(frames)] for k in range(batch)], model.preprocess,
                                       channel_order="rgb")
            latents = model._encode(images).float()
            t = torch.full((batch,), steps, dtype=torch.long)
            ids = torch.zeros(batch, 1, dtype=torch.long)
            pair = torch.cat([latents, latents])
            out["networks"][batch] = {
                "encode": _median_ms(lambda: model._encode(images), repeats),
                "unet": _median_ms(lambda: model._unet_fn(latents, t, ids), repeats),
                "decode": _median_ms(lambda: model._decode(pair), repeats),
            }
    stages = collections.defaultdict(list)
    for k in range(repeats + 2):
        result = model.predict([frames[k % len(frames)]])[0]
        if k >= 2:
            for name in OTHER_STAGES:
                stages[name].append(result.timings.get(name, 0.0))
    out["other_ms"] = {name: statistics.median(v) for name, v in stages.items()}
    out["reverse_steps"] = steps
    return out


def unet_operator_profile(model_path: Path, repeats: int) -> dict:
    """OpenVINO bf16 per-operator time of the UNet step at batch 1 (PERF_COUNT), by group: ms and share."""
    import numpy as np
    import openvino as ov
    import torch

    from engine.loading import load_model
    from engine.openvino_runtime import _convert

    torch.set_num_threads(1)
    spec = next(s for s in load_model(model_path).network_specs() if s.name == "unet")
    compiled = ov.Core().compile_model(_convert(spec), "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": "YES",
                                                                "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    inputs = [np.ascontiguousarray(a[:1].numpy()) for a in spec.example]
    for _ in range(3):
        request.infer(inputs)
    totals: collections.Counter = collections.Counter()
    operators = 0
    for _ in range(repeats):
        request.infer(inputs)
        executed = [p for p in request.profiling_info if p.real_time.total_seconds() > 0]
        operators = len(executed)
        for p in executed:
            group = next((g for g, kinds in OPERATOR_GROUPS if p.node_type in kinds), "elementwise and other")
            totals[group] += p.real_time.total_seconds() * 1000.0
    total = sum(totals.values())
    return {"operators": operators, "total_ms": total / repeats,
            "groups": {g: {"ms": v / repeats, "share": v / total} for g, v in totals.most_common()}}


def floors(timings: dict, batches) -> list[dict]:
    """Per batch: the fastest setting of each network and the engine floor (ms per frame)."""
    ok = {name: t for name, t in timings.items() if "error" not in t}
    other = {stage: min(t["other_ms"][stage] for t in ok.values()) for stage in OTHER_STAGES}
    steps = next(iter(ok.values()))["reverse_steps"]
    rows = []
    for batch in batches:
        best = {}
        for net in ("encode", "unet", "decode"):
            name = min(ok, key=lambda n: ok[n]["networks"][batch][net])
            best[net] = (name, ok[name]["networks"][batch][net] / batch)
        floor = best["encode"][1] + steps * best["unet"][1] + best["decode"][1] + sum(other.values())
        rows.append({"batch": batch, "best": best, "other_ms": sum(other.values()), "floor_ms": floor,
                     "frames_per_s_bound": 1000.0 / floor, "steps": steps})
    return rows


def markdown(timings: dict, rows: list[dict], profile: dict | None, batches, machine: str, repeats: int,
             measured: str) -> str:
    lines = [f"Measured on {machine} by `python benchmarks/bench_networks.py --update-readme` "
             f"({measured}): the demo model's networks alone, median of {repeats} calls, "
             "ms per call (decode: the two images of a frame, so 2 x batch).", "",
             "| runtime, precision | " + " | ".join(f"encode b{b} | UNet step b{b} | decode 2x{b}" for b in batches) + " |",
             "|---|" + "---|" * (3 * len(batches))]
    for name, t in timings.items():
        if "error" in t:
            lines.append(f"| {name} | {t['error']} |" + " |" * (3 * len(batches) - 1))
            continue
        cells = [f"{t['networks'][b][net]:.1f}" for b in batches for net in ("encode", "unet", "decode")]
        kept = f" ({', '.join(t['int8_networks'])} in int8, the rest bf16)" if t.get("int8_networks") else ""
        lines.append(f"| {name}{kept} | " + " | ".join(cells) + " |")
    lines += ["", "| batch | fastest encoder (ms/frame) | fastest UNet step (ms/frame) | fastest decoder (ms/frame) "
              "| other stages (ms/frame) | engine floor ms/frame | inspected frames/s at most |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['best'][net][0]}: {r['best'][net][1]:.1f}" for net in ("encode", "unet", "decode")]
        lines.append(f"| {r['batch']} | {cells[0]} | {cells[1]} (x{r['steps']}) | {cells[2]} | {r['other_ms']:.1f} "
                     f"| {r['floor_ms']:.1f} | **{r['frames_per_s_bound']:.1f}** |")
    if profile:
        groups = ", ".join(f"{g} {v['ms']:.1f} ms ({100 * v['share']:.0f} %)" for g, v in profile["groups"].items())
        lines += ["", f"UNet step, OpenVINO bf16, batch 1, per-operator profile ({profile['operators']} operators, "
                  f"{profile['total_ms']:.1f} ms): {groups}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument("--batches", default="1,2,4")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--settings", default=",".join(f"{r} {q}" for r, q in SETTINGS),
                   help="comma list of 'RUNTIME PRECISION'")
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--from-results", action="store_true",
                   help="rewrite NAME.md (and with --update-readme the README) from NAME.json, no timing")
    p.add_argument("--name", default="networks", help="results file name (benchmarks/results/NAME.json/.md)")
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.from_results:
        saved = json.loads((RESULTS_DIR / f"{args.name}.json").read_text())
        timings = {name: {**t, "networks": {int(b): v for b, v in t.get("networks", {}).items()}}
                   for name, t in saved["timings"].items()}
        table = markdown(timings, saved["floors"], saved["unet_profile"], batches, saved["machine"],
                         saved["repeats"], saved["measured"])
        (RESULTS_DIR / f"{args.name}.md").write_text(table)
        print(table)
        if args.update_readme:
            write_readme_section(README_BEGIN, README_END, table)
        return 0
    if args.single:
        job = json.loads(args.single)
        result = (unet_operator_profile(args.model, args.repeats) if job["kind"] == "profile"
                  else time_setting(args.model, job["runtime"], job["precision"], batches, args.repeats))
        print(json.dumps(result))
        return 0
    import subprocess

    def spawn(job: dict) -> dict:   # a fresh process per setting: no thread pool or cache shared between them
        proc = subprocess.run([sys.executable, __file__, "--model", str(args.model), "--batches", args.batches,
                               "--repeats", str(args.repeats), "--single", json.dumps(job)],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    timings = {}
    for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
        runtime, precision = name.split()
        print(f"{name} ...", file=sys.stderr, flush=True)
        timings[name] = spawn({"kind": "setting", "runtime": runtime, "precision": precision})
        timings[name]["networks"] = {int(b): v for b, v in timings[name].get("networks", {}).items()}
        print(json.dumps(timings[name]), file=sys.stderr, flush=True)
    profile = spawn({"kind": "profile"})
    if "error" in profile:
        print(f"operator profile: {profile['error']}", file=sys.stderr)
        profile = None
    rows = floors(timings, batches)
    from engine.acceleration import cpu_description

    machine = cpu_description()
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    publish_results(args.name, {"machine": machine, "measured": measured, "repeats": args.repeats,
                                "load_average": os.getloadavg(), "timings": timings, "floors": rows,
                                "unet_profile": profile},
                    markdown(timings, rows, profile, batches, machine, args.repeats, measured),
                    (README_BEGIN, README_END) if args.update_readme else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
