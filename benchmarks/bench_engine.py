"""Engine benchmark: per-stage timings, images/s, FLOPs and achieved GFLOP/s per model size,
batch, runtime, precision and engine variant; peak memory; and a same-process baseline computed
the straightforward way the reference does, with the maps checked equal.

    python benchmarks/bench_engine.py --update-readme      # the README set, then rewrite the README table
    python benchmarks/bench_engine.py --sizes UNet_XS --batches 8 --variants plain,default,compile
    python benchmarks/bench_engine.py --sizes UNet_XS --batches 8 --runtimes torch,openvino --precisions fp32,bf16,int8
    python benchmarks/bench_engine.py --sizes all --batches 1,8,32 --precisions fp32,fp16 --device cuda

Runtimes and precisions: every (runtime, precision) pair the engine accepts
(`RUNTIME_PRECISIONS`: torch fp32/bf16/fp16 autocast, openvino fp32/bf16/int8); pairs a runtime
does not have are skipped. A row whose runtime fell back to torch (OpenVINO missing, a network
that does not convert) is reported as an error with the engine's notice, never as a torch row.

Engine variants: `plain` (NCHW UNet, eager, one lane), `one-lane` (channels-last, the batch in
one piece with every operator split over the threads), `default` (channels-last, automatic lanes:
what the app runs; one single-threaded lane per thread for UNets of up to 32 base channels),
`lanes` (one lane per thread whatever the size), `compile` (channels-last + torch.compile with
frozen weights, automatic lanes), `compile-lanes` (compile, one lane per thread). Each configuration runs in a fresh
subprocess (so its peak resident memory is its own), with warm-up runs, then the median of
--repeats timed runs. Frames are real photographs; the VAE is the trained compact VAE
(resources/compact_vae); the category comes from a compact classifier (its time is the `classify` stage).

Baseline (UNet_XS, batch 8, by default): one image at a time with the same weights and inputs,
as the reference does it: classifier, VAE encode, five UNet forwards with explicit-softmax
attention (full cross-attention on the class token) in the default NCHW layout, two separate
VAE decodes, then numpy maps with scipy.ndimage.gaussian_filter and skimage resize. Its maps
must agree with the engine's within 1e-4 (max abs difference). Every other configuration
reports its map difference against the plain float32 engine on the same inputs, so reduced
precision shows what it costs.

Every row of the baseline's model size and batch measures the baseline in its own process, its
timed runs alternating with the engine's, and gives its images/s as a multiple of that baseline's.
With glibc's default allocator the baseline's speed differed from process to process far more
than the engine's (0.77 to 1.53 images/s in the ten UNet_XS batch-8 rows of one run on the 2-core
AMD EPYC, the engine rows within 1 % across three runs), so every configuration's process runs
with STEADY_ALLOCATOR, and each row is still compared with its own process's baseline. The
baseline table lists the float32 rows, whose maps must match the baseline's.

FLOPs are counted with torch.utils.flop_counter (convolutions, matmuls, attention) for one
image; achieved GFLOP/s = FLOPs/image x images/s, compared with this machine's measured large
matrix-multiply rates in float32 and bfloat16 (the fraction of each is a column). Writes
benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_VAE = REPO / "resources" / "compact_vae"
README_BEGIN = "<!-- performance-table:begin -->"
README_END = "<!-- performance-table:end -->"
MAP_TOLERANCE = 1e-4
# photographs another runtime's int8 quantization is calibrated on (not the timed ones)
CALIBRATION_IMAGES = 24
# variant -> DetectorSettings fields; lanes PER_THREAD: one lane per torch thread whatever the UNet size
PER_THREAD = "per-thread"
VARIANTS = {"plain": {"channels_last": False, "compile": False, "lanes": 1},
            "one-lane": {"channels_last": True, "compile": False, "lanes": 1},
            "default": {"channels_last": True, "compile": False},
            "lanes": {"channels_last": True, "compile": False, "lanes": PER_THREAD},
            "compile": {"channels_last": True, "compile": True},
            "compile-lanes": {"channels_last": True, "compile": True, "lanes": PER_THREAD}}
# runtime -> the precisions it runs (engine.openvino_runtime.PRECISIONS when that module is present)
RUNTIME_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "openvino": ("fp32", "bf16", "int8")}
# The configurations behind the README table: (size, batch, runtime, precision, variant).
README_SET = ([(s, b, "torch", "fp32", "default") for s in ("UNet_T", "UNet_XS") for b in (1, 8, 32)]
              + [(s, b, "torch", "bf16", "default") for s in ("UNet_T", "UNet_XS") for b in (1, 8)]
              + [("UNet_XS", 8, "torch", "fp32", v) for v in ("plain", "one-lane", "lanes", "compile")]
              + [("UNet_XS", 8, "torch", "bf16", v) for v in ("one-lane", "lanes", "compile-lanes")]
              + [("UNet_T", 8, "torch", "bf16", "compile")]
              + [(s, 8, "openvino", p, "default") for s in ("UNet_T", "UNet_XS") for p in ("fp32", "bf16", "int8")]
              + [("UNet_XS", 8, "openvino", p, "lanes") for p in ("bf16", "int8")])


RESULTS_DIR = REPO / "benchmarks" / "results"


def publish_results(name: str, data: dict, table: str, readme_markers: tuple[str, str] | None = None) -> None:
    """Write benchmarks/results/NAME.json (`data`) and NAME.md (`table`), print the table and, with
    `readme_markers` (begin, end), put it between those lines of README.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2))
    (RESULTS_DIR / f"{name}.md").write_text(table)
    print(table)
    if readme_markers is not None:
        write_readme_section(*readme_markers, table)


def write_readme_section(begin: str, end: str, text: str) -> None:
    """Replace what lies between the `begin` and `end` marker lines of README.md with `text`."""
    readme = REPO / "README.md"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{readme}: no {begin} ... {end} markers to put the table between")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + begin + "\n" + text + end + tail)
    print(f"updated {readme}", file=sys.stderr)


def _frames(n: int, seed: int = 0):
    """Real photographs (scikit-image's bundled CC0 textures), 288x288 crops."""
    import numpy as np
    from skimage import data

    sources = [data.brick(), data.gravel(), data.grass()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = sources[i % 3]
        src = np.repeat(src[..., None], 3, axis=2) if src.ndim == 2 else src
        y, x = rng.integers(0, src.shape[0] - 288), rng.integers(0, src.shape[1] - 288)
        out.append(np.ascontiguousarray(src[y:y + 288, x:x + 288]))
    return out


def _detector(size: str, device: str, batch: int, vae_spec: str | None, precision: str = "fp32",
              variant: str = "plain", runtime: str = "torch"):
    """The same seeded weights every call: UNet `size` (15 classes, random weights), the VAE
    `vae_spec` (trained: a random VAE gives degenerate latents on which the pipeline is badly
    conditioned, see the README), compact classifier (random weights: only its cost matters).
    The engine's warnings (e.g. a runtime that fell back to torch) are kept in `bench_notices`."""
    import torch

    from engine.classifier import CategoryClassifier, ClassifierConfig
    from engine.detector import Detector, DetectorSettings
    from engine.preprocess import PreprocessConfig
    from engine.unet import create_unet
    from engine.vae import compact_vae_config, create_vae, load_vae

    torch.manual_seed(0)
    names = [f"class_{i}" for i in range(15)]
    vae = create_vae(compact_vae_config()) if vae_spec in (None, "random") else load_vae(vae_spec)
    unet = create_unet(size, ncls=15, in_channels=vae.latent_channels, out_channels=vae.latent_channels)
    with torch.no_grad():  # non-trivial weights everywhere (a fresh model outputs exactly zero)
        for p in unet.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.normal_(0, 0.02)
    classifier = CategoryClassifier(ClassifierConfig(arch="compact", class_names=names, image_size=128))
    runtime_setting = {} if runtime == "torch" else {"runtime": runtime}  # engines without runtimes run torch
    fields = {k: (torch.get_num_threads() if v == PER_THREAD else v) for k, v in VARIANTS[variant].items()}
    settings = DetectorSettings(batch_size=batch, precision=precision, **fields, **runtime_setting)
    notices = _WarningsKept()
    logging.getLogger("engine").addHandler(notices)
    source = _calibrated_folder(PreprocessConfig(), len(names)) if runtime != "torch" else ""
    det = Detector(unet, vae, names, PreprocessConfig(), classifier=classifier, settings=settings, device=device,
                   source=source)
    det.bench_notices = notices.lines
    return det


def _calibrated_folder(preprocess, num_classes: int) -> str:
    """A temporary folder (removed at exit) holding calibration images for another runtime's int8
    quantization: CALIBRATION_IMAGES crops of other photographs than the timed ones, the
    converted networks are cached there too."""
    import atexit
    import shutil
    import tempfile

    import numpy as np

    from engine.openvino_runtime import CHECK_IMAGES, CalibrationSet
    from engine.preprocess import preprocess_frames

    folder = tempfile.mkdtemp(prefix="bench-engine-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    images = preprocess_frames(_frames(CALIBRATION_IMAGES, seed=1), preprocess)
    crops = ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    ids = np.arange(len(crops)) % num_classes
    CalibrationSet(np.ascontiguousarray(crops), ids, held_out=CHECK_IMAGES).save(Path(folder))
    return folder


class _WarningsKept(logging.Handler):
    """Keeps the text of every warning logged under `engine` (the engine's notices)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _baseline_runs(repeats: int) -> int:
    """Timed baseline runs, each right after one of the engine's (repeats 3: engine, baseline,
    engine, baseline, engine)."""
    return max(1, (repeats + 1) // 2)


def _baseline(det, frames):
    """One image at a time, reference style (see the module docstring). Returns the maps [S,S]."""
    import numpy as np
    import torch
    from scipy.ndimage import gaussian_filter
    from skimage.transform import resize

    from engine.acceleration import set_memory_format
    from engine.diffusion import reconstruct_latents
    from engine.preprocess import preprocess_frames

    unet = set_memory_format(copy.deepcopy(det.unet), False).set_attention_impl("naive")
    vae = copy.deepcopy(det.vae)
    vae.channels_last = False
    set_memory_format(vae.model, False)
    maps = []
    with torch.no_grad():
        for f in frames:
            name, _ = det.classifier.predict([f])[0]
            class_id = det.class_names.index(name)
            x = preprocess_frames([f], det.preprocess).to(det.device)
            z = vae.encode(x)
            zr = reconstruct_latents(unet, z, torch.tensor([class_id]), schedule=det._schedule)
            x0 = vae.decode(z).cpu().numpy()[0]
            xr = vae.decode(zr).cpu().numpy()[0]
            z, zr = z.cpu().numpy()[0], zr.cpu().numpy()[0]
            img = np.clip(np.abs(xr - x0).max(axis=0), 0, 0.4) * 2.5
            img = gaussian_filter(img, sigma=3)
            lat = np.clip(np.abs(zr - z).mean(axis=0), 0, 0.2) * 5
            lat = resize(gaussian_filter(lat, sigma=1), (256, 256))
            maps.append(np.sqrt(img * lat).astype(np.float32))
    return maps


def _flops_per_image(det, frames, naive: bool = False) -> dict:
    """GFLOP per image of each network stage (counted on one image, fast or naive attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.diffusion import reconstruct_latents
    from engine.preprocess import preprocess_frames

    x = preprocess_frames(frames[:1], det.preprocess).to(det.device)
    ids = torch.zeros(1, dtype=torch.long, device=det.device)
    out = {}
    unet = copy.deepcopy(det.unet).set_attention_impl("naive") if naive else det.unet
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            z = det.vae.encode(x)
        out["encode"] = fc.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as fc:
            zr = reconstruct_latents(unet, z, ids, start_t=det.settings.start_t, schedule=det._schedule)
        out["unet"] = fc.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as fc:
            det.vae.decode(torch.cat([z, zr]))
        out["decode"] = fc.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as fc:
            det.classifier.logits(det.classifier.preprocess(frames[:1]))
        out["classify"] = fc.get_total_flops() / 1e9
    out["total"] = sum(out.values())
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _max_diff(a, b) -> float:
    import numpy as np

    return float(max(np.abs(x - y).max() for x, y in zip(a, b)))


def run_single(cfg: dict) -> dict:
    """One configuration, in this process."""
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    runtime = cfg.get("runtime", "torch")
    det = _detector(cfg["size"], cfg["device"], cfg["batch"], cfg.get("vae"), cfg["precision"], cfg["variant"],
                    runtime)
    frames = _frames(cfg["batch"])
    det.predict(frames[:1])  # another runtime converts its networks on the first call
    ran = (getattr(det.settings, "runtime", "torch"), det.settings.precision)
    if ran != (runtime, cfg["precision"]):
        notices = "; ".join(det.bench_notices) or "no notice"
        raise SystemExit(f"{runtime} {cfg['precision']} ran as {ran[0]} {ran[1]}: {notices}")
    if cfg["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(cfg["warmup"]):
        det.predict(frames)
    warmup_s = time.perf_counter() - t0
    times, stages, base_times = [], [], []
    for i in range(cfg["repeats"]):
        _sync(cfg["device"])
        t0 = time.perf_counter()
        results = det.predict(frames)
        _sync(cfg["device"])
        times.append(time.perf_counter() - t0)
        stages.append({k: sum(r.timings[k] for r in results) / len(results) for k in results[0].timings})
        if cfg.get("baseline") and i < _baseline_runs(cfg["repeats"]):
            t0 = time.perf_counter()
            base = _baseline(det, frames)
            base_times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    out = {**cfg, "seconds_per_batch": median, "images_per_s": cfg["batch"] / median,
           "ms_per_image": 1000 * median / cfg["batch"], "warmup_s": warmup_s,
           "stages_ms_per_image": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
           "unet_parameters": det.unet.num_parameters, "vae_parameters": det.vae.num_parameters,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "notices": det.bench_notices,
           "threads": torch.get_num_threads()}
    if cfg["device"].startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        out["device_name"] = torch.cuda.get_device_name()
    if cfg["variant"] == "compile":
        out["compiled"] = all(getattr(f, "compiled", False) for f in (det._unet_fn, det._encode, det._decode))
    ours = [r.crop_map for r in results]
    flops = _flops_per_image(det, frames)
    out["gflop_per_image"] = flops
    out["achieved_gflop_per_s"] = flops["total"] * out["images_per_s"]
    if cfg["precision"] != "fp32" or cfg["variant"] != "plain" or runtime != "torch":
        plain = _detector(cfg["size"], cfg["device"], cfg["batch"], cfg.get("vae"))
        out["map_diff_vs_plain_fp32"] = _max_diff(ours, [r.crop_map for r in plain.predict(frames)])
        del plain
    if base_times:
        bmed = statistics.median(base_times)
        base_flops = _flops_per_image(det, frames, naive=True)["total"]
        out["baseline"] = {"seconds_per_batch": bmed, "images_per_s": cfg["batch"] / bmed,
                           "speedup": bmed / median, "max_abs_map_diff": _max_diff(ours, base),
                           "gflop_per_image": base_flops, "achieved_gflop_per_s": base_flops * cfg["batch"] / bmed}
    return out


def matmul_peak(device: str, precision: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix multiply, best of `repeats`: the practical peak here."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


# glibc settings for every configuration's process: large blocks come from the heap, never from a
# fresh mmap. The baseline's eager float32 path allocates and frees large blocks (attention
# matrices); with glibc's defaults it ran at 0.99-1.68 images/s from run to run, at a steady
# 1.60-1.65 with these, while the engine kept 7.2-7.4 either way (2-core AMD EPYC, UNet_XS batch 8)
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def _spawn(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), **STEADY_ALLOCATOR}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ms(s: dict, *keys: str) -> str:
    return f"{sum(s.get(k, 0.0) for k in keys):.0f}"


def _percent(rate: float, peak: float | None) -> str:
    return f"{100 * rate / peak:.0f}%" if peak else "-"


def _speedup(r: dict) -> float | None:
    """A row's images/s over the baseline measured alternately in its process (None without one)."""
    return r["baseline"]["speedup"] if r.get("baseline") else None


def markdown(results: list[dict], machine: str, peaks: dict, load: tuple | None = None) -> str:
    peak_text = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    load_text = f" Load average {load[0]:.1f} at the end of the run." if load else ""
    lines = [f"Measured on {machine} by `python benchmarks/bench_engine.py --update-readme` "
             f"({time.strftime('%Y-%m-%d %H:%M %Z')}); the demo's trained compact VAE, a compact classifier, "
             f"256 px crops, 5 DDIM steps; median of the timed runs; milliseconds per image. Measured {peak_text} on "
             "a 2048^3 matrix multiply (the practical arithmetic peak here); x baseline: images/s over the "
             f"reference-style float32 baseline's, measured in the row's process, alternating with its timed runs."
             f"{load_text}", "",
             "| model | runtime | precision | variant | batch | images/s | x baseline | ms/image "
             "| preprocess + classify | encode | UNet (5 steps) | decode x2 | maps | GFLOP/image | GFLOP/s "
             "| % of fp32 matmul | % of bf16 matmul | peak MB | map diff vs plain fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = f"| {r['size']} | {r.get('runtime', 'torch')} | {r['precision']} | {r['variant']} | {r['batch']} "
        if "error" in r:
            lines.append(head + f"| error: {r['error']} |" + " |" * 13)
            continue
        s = r["stages_ms_per_image"]
        mem = r.get("peak_cuda_mb", r["peak_rss_mb"])
        cpu = r["device"] == "cpu"
        rate = r["achieved_gflop_per_s"]
        speedup = _speedup(r)
        ratio = f"**{speedup:.2f}x**" if speedup else "-"
        diff = r.get("map_diff_vs_plain_fp32")
        lines.append(head + f"| {r['images_per_s']:.2f} | {ratio} | {r['ms_per_image']:.0f} "
                     f"| {_ms(s, 'preprocess', 'classify')} | {_ms(s, 'encode')} | {_ms(s, 'unet')} "
                     f"| {_ms(s, 'decode')} | {s.get('maps', 0):.1f} | {r['gflop_per_image']['total']:.1f} "
                     f"| {rate:.0f} | {_percent(rate, peaks.get('fp32') if cpu else None)} "
                     f"| {_percent(rate, peaks.get('bf16') if cpu else None)} | {mem:.0f} "
                     f"| {'-' if diff is None else f'{diff:.1e}'} |")
    base = [r for r in results if r.get("baseline") and r["precision"] == "fp32"]
    if base:
        lines += ["", "Baseline (reference style: one image at a time, explicit attention, NCHW, two decodes, "
                      "scipy/skimage maps) against the app's engine, in the same process on the same weights "
                      f"and inputs (maps must agree within {MAP_TOLERANCE:.0e}):", "",
                  "| model | batch | baseline images/s | engine images/s | speed-up | max map difference "
                  "| baseline GFLOP/image | baseline GFLOP/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in base:
            b = r["baseline"]
            ok = "" if b["max_abs_map_diff"] <= MAP_TOLERANCE else " (over the tolerance)"
            lines.append(f"| {r['size']} | {r['batch']} | {b['images_per_s']:.2f} | {r['images_per_s']:.2f} "
                         f"| **{b['speedup']:.2f}x** | {b['max_abs_map_diff']:.1e}{ok} | {b['gflop_per_image']:.1f} "
                         f"| {b['achieved_gflop_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def _runtime_precisions() -> dict[str, tuple[str, ...]]:
    """The engine's own runtime -> precisions table when it has one, else `RUNTIME_PRECISIONS`."""
    try:
        from engine.openvino_runtime import PRECISIONS
    except ImportError:
        return dict(RUNTIME_PRECISIONS)
    return {k: tuple(v) for k, v in PRECISIONS.items()}


def _configs(args, device: str) -> list[dict]:
    from engine.unet import UNET_SIZES

    if args.readme_set:
        combos = list(README_SET)
    else:
        sizes = list(UNET_SIZES) if args.sizes == "all" else args.sizes.split(",")
        combos = [(s, int(b), rt, p, v) for s in sizes for b in args.batches.split(",")
                  for rt in args.runtimes.split(",") for p in args.precisions.split(",")
                  for v in args.variants.split(",")]
    unknown = sorted({v for *_, v in combos} - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    table = _runtime_precisions()
    unknown = sorted({rt for _, _, rt, _, _ in combos} - set(table) - set(RUNTIME_PRECISIONS))
    if unknown:
        raise SystemExit(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIME_PRECISIONS)}")
    combos = [c for c in combos if c[3] in table.get(c[2], RUNTIME_PRECISIONS.get(c[2], ()))]
    return [{"size": s, "batch": b, "runtime": rt, "precision": p, "variant": v, "device": device,
             "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads, "vae": args.vae,
             "baseline": not args.no_baseline and s == args.baseline_size and b == args.baseline_batch}
            for s, b, rt, p, v in combos]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", help=argparse.SUPPRESS)
    p.add_argument("--peak", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="UNet_T,UNet_XS", help="comma list or 'all'")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--runtimes", default="torch", help=f"comma list of {', '.join(RUNTIME_PRECISIONS)}")
    p.add_argument("--precisions", default="fp32",
                   help="comma list of fp32, bf16, fp16, int8 (pairs a runtime does not run are skipped)")
    p.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--vae", default=str(DEMO_VAE),
                   help="VAE folder / cached id (default: the trained compact VAE, resources/compact_vae; 'random': "
                        "a compact VAE with fresh weights)")
    p.add_argument("--baseline-size", default="UNet_XS")
    p.add_argument("--baseline-batch", type=int, default=8)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--name", default=None, help="results file name (default: cpu or cuda)")
    p.add_argument("--update-readme", action="store_true",
                   help="run the README set (unless --sizes/--batches/... say otherwise) and write the table")
    args = p.parse_args()
    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    if args.peak:
        device, precision = args.peak.split(":")
        print(json.dumps({"gflop_per_s": matmul_peak(device, precision)}))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    explicit = any(a.startswith(("--sizes", "--batches", "--runtimes", "--precisions", "--variants"))
                   for a in sys.argv[1:])
    args.readme_set = args.update_readme and not explicit
    configs = _configs(args, device)
    precisions = sorted(({c["precision"] for c in configs} | {"fp32", "bf16"}) & {"fp32", "bf16", "fp16"})
    peaks = {prec: _spawn(["--peak", f"{device}:{prec}"]).get("gflop_per_s", 0.0) for prec in precisions}
    print(f"matrix-multiply peak: {peaks}", file=sys.stderr, flush=True)
    results = []
    for cfg in configs:
        print(f"running {cfg['size']} batch {cfg['batch']} {cfg['runtime']} {cfg['precision']} {cfg['variant']} "
              f"on {device} ...",
              file=sys.stderr, flush=True)
        r = {**cfg, **_spawn(["--single", json.dumps(cfg)])}
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("vae",)}), file=sys.stderr, flush=True)
    from engine.acceleration import cpu_description

    machine = (torch.cuda.get_device_name() if device == "cuda" else
               f"{cpu_description()}, torch "
               f"{torch.__version__}, {torch.get_num_threads()} threads")
    publish_results(args.name or device, {"machine": machine, "matmul_peak_gflop_per_s": peaks,
                                          "load_average": os.getloadavg(), "results": results},
                    markdown(results, machine, peaks, os.getloadavg()),
                    (README_BEGIN, README_END) if args.update_readme else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
