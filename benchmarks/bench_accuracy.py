"""Accuracy of reduced precision and other runtimes: the demo model evaluated on its test split
with each (runtime, precision) pair, against torch fp32 in the same run.

    python benchmarks/bench_accuracy.py                          # torch fp32 / bf16 (+ openvino when present)
    python benchmarks/bench_accuracy.py --pairs torch:fp32,torch:bf16,torch:bf16+compile,openvino:int8
    python benchmarks/bench_accuracy.py --update-readme          # rewrite the README accuracy table

The acceptance rule for a reduced-precision setting: mean image AUROC and mean pixel AUROC within
`AUROC_TOLERANCE` of torch fp32 and the same verdict (score above the model's threshold or not)
on at least `VERDICT_AGREEMENT` of the test parts. Each pair runs `python -m training.evaluate` in
its own process (the same scores and maps the app computes); the table also gives the worst
per-category AUROC change and the evaluation's ms per image. Writes benchmarks/results/accuracy.json
and accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import publish_results  # noqa: E402

README_BEGIN = "<!-- accuracy-table:begin -->"
README_END = "<!-- accuracy-table:end -->"
DEMO_MODEL = REPO / "resources" / "demo_model"
DEMO_DATA = REPO / "resources" / "demo_data"
AUROC_TOLERANCE = 0.005
VERDICT_AGREEMENT = 0.99
REFERENCE = ("torch", "fp32")
DEFAULT_PAIRS = "torch:fp32,torch:bf16,torch:bf16+compile,openvino:fp32,openvino:bf16,openvino:int8"
COMPILE_SUFFIX = "+compile"  # a precision ending in it also runs the networks through torch.compile


def _openvino_present() -> bool:
    try:
        from engine.openvino_runtime import openvino_problem
    except ImportError:
        return False
    return openvino_problem() is None


def evaluate(model: Path, data: Path, runtime: str, precision: str, out: Path, batch: int) -> dict:
    """metrics.json of `training.evaluate` for one pair, or {"error": last line of its output}."""
    compiled = precision.endswith(COMPILE_SUFFIX)
    precision = precision.removesuffix(COMPILE_SUFFIX)
    cmd = [sys.executable, "-m", "training.evaluate", "--model", str(model), "--data-dir", str(data),
           "--precision", precision, "--device", "cpu", "--batch-size", str(batch), "--out", str(out)]
    if compiled:
        cmd.append("--compile")
    if runtime != "torch":
        cmd += ["--runtime", runtime]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0 or not (out / "metrics.json").is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())
    ran = metrics.get("settings", {})
    if (ran.get("runtime", "torch"), ran.get("precision"), bool(ran.get("compile"))) != (runtime, precision, compiled):
        return {"error": f"ran as {ran.get('runtime', 'torch')} {ran.get('precision')}, compile "
                         f"{bool(ran.get('compile'))} (a fallback)"}
    metrics["wall_s"] = time.monotonic() - t0
    return metrics


def _verdicts(metrics: dict) -> dict[str, bool]:
    threshold = float(metrics["settings"]["threshold"])
    return {f"{cat}/{name}": score > threshold
            for cat, c in metrics["categories"].items() for name, score in c["scores"].items()}


def compare(reference: dict, other: dict) -> dict:
    """AUROC changes (mean, worst category) and verdict agreement of `other` against `reference`."""
    out = {}
    for key in ("image_auroc", "pixel_auroc"):
        out[f"{key}_delta"] = other["mean"][key] - reference["mean"][key]
        out[f"{key}_worst_category_delta"] = max(
            (other["categories"][c][key] - reference["categories"][c][key] for c in reference["categories"]), key=abs)
    ref, oth = _verdicts(reference), _verdicts(other)
    same = sum(ref[k] == oth.get(k) for k in ref)
    out["verdict_agreement"] = same / max(1, len(ref))
    out["parts"] = len(ref)
    out["passes"] = (abs(out["image_auroc_delta"]) <= AUROC_TOLERANCE and abs(out["pixel_auroc_delta"]) <= AUROC_TOLERANCE
                     and out["verdict_agreement"] >= VERDICT_AGREEMENT)
    return out


def markdown(rows: list[dict], model: Path, load: tuple) -> str:
    lines = [f"Measured by `python benchmarks/bench_accuracy.py --update-readme` ({time.strftime('%Y-%m-%d %H:%M %Z')}, "
             f"load average {load[0]:.1f}): `{model.name}` on its test split, every pair in its own "
             f"`training.evaluate` process; passes: mean image and pixel AUROC within {AUROC_TOLERANCE} of torch fp32 "
             f"and the same verdict at the model's threshold on at least {VERDICT_AGREEMENT:.0%} of the parts.", "",
             "| runtime | precision | I-AUROC | P-AUROC | change I / P (worst category) | same verdict | passes "
             "| ms/image (evaluate) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['runtime']} | {r['precision']} "
        if "error" in r:
            lines.append(head + f"| error: {r['error']} | | | | | |")
            continue
        m, c = r["metrics"]["mean"], r.get("compare")
        if c is None:
            change, same, passes = "reference", "-", "-"
        else:
            change = (f"{c['image_auroc_delta']:+.4f} / {c['pixel_auroc_delta']:+.4f} "
                      f"({c['image_auroc_worst_category_delta']:+.4f} / {c['pixel_auroc_worst_category_delta']:+.4f})")
            same = f"{c['verdict_agreement']:.1%} of {c['parts']}"
            passes = "yes" if c["passes"] else "**no**"
        lines.append(head + f"| {m['image_auroc']:.4f} | {m['pixel_auroc']:.4f} | {change} | {same} | {passes} "
                     f"| {r['metrics']['ms_per_image']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument("--data-dir", type=Path, default=DEMO_DATA)
    p.add_argument("--pairs", default=None,
                   help=f"comma list of runtime:precision (default: {DEFAULT_PAIRS}, openvino only when installed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--name", default="accuracy")
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args()
    text = args.pairs or DEFAULT_PAIRS
    pairs = []
    for item in text.split(","):
        runtime, _, precision = item.strip().partition(":")
        if not precision:
            p.error(f"--pairs: {item!r} is not runtime:precision (e.g. torch:bf16)")
        if args.pairs is None and runtime == "openvino" and not _openvino_present():
            continue
        pairs.append((runtime, precision))
    if REFERENCE in pairs:
        pairs.remove(REFERENCE)
    pairs.insert(0, REFERENCE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for runtime, precision in pairs:
            print(f"evaluating {runtime} {precision} ...", file=sys.stderr, flush=True)
            metrics = evaluate(args.model, args.data_dir, runtime, precision, Path(tmp) / f"{runtime}-{precision}",
                               args.batch_size)
            row = {"runtime": runtime, "precision": precision}
            if "error" in metrics:
                row["error"] = metrics["error"]
            else:
                row["metrics"] = {k: metrics[k] for k in ("mean", "categories", "settings", "ms_per_image", "wall_s")}
                if rows and "metrics" in rows[0]:
                    row["compare"] = compare(rows[0]["metrics"], metrics)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "metrics"}), file=sys.stderr, flush=True)
    if "error" in rows[0]:
        print(f"torch fp32 (the reference) failed: {rows[0]['error']}", file=sys.stderr)
        return 1
    load = os.getloadavg()
    publish_results(args.name, {"model": str(args.model), "load_average": load, "rows": rows},
                    markdown(rows, args.model, load), (README_BEGIN, README_END) if args.update_readme else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
