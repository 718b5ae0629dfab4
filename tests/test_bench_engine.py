"""benchmarks/bench_engine.py on hand cases: every row of the baseline's size and batch measures the
baseline in its own process, and the table gives each row the speed-up of its own measurement
(the baseline's speed differs from process to process far more than the engine's)."""

from __future__ import annotations

from argparse import Namespace

from benchmarks.bench_engine import _baseline_runs, _configs, markdown


def _row(runtime, precision, images_per_s, baseline_images_per_s=None, map_diff=1e-6):
    row = {"size": "UNet_XS", "batch": 8, "runtime": runtime, "precision": precision, "variant": "default",
           "device": "cpu", "images_per_s": images_per_s, "ms_per_image": 1000 / images_per_s,
           "stages_ms_per_image": {"unet": 100.0}, "peak_rss_mb": 900.0, "achieved_gflop_per_s": 200.0,
           "gflop_per_image": {"total": 46.8}}
    if baseline_images_per_s:
        row["baseline"] = {"images_per_s": baseline_images_per_s, "speedup": images_per_s / baseline_images_per_s,
                           "max_abs_map_diff": map_diff, "gflop_per_image": 55.8, "achieved_gflop_per_s": 60.0}
    return row


def test_each_row_is_compared_with_the_baseline_measured_in_its_own_process():
    rows = [_row("torch", "fp32", 2.5, 1.25), _row("openvino", "int8", 7.0, 1.0, map_diff=0.07),
            _row("openvino", "bf16", 5.0)]
    table = markdown(rows, "a test CPU", {"fp32": 190.0, "bf16": 420.0})
    lines = table.splitlines()
    int8 = next(line for line in lines if "| openvino | int8 |" in line)
    assert "| **7.00x** |" in int8                  # 7.0 / 1.0, not 7.0 / 1.25 from the torch row
    assert "| **2.00x** |" in next(line for line in lines if "| torch | fp32 |" in line)
    assert "| 5.00 | - |" in next(line for line in lines if "| openvino | bf16 |" in line)
    baseline_rows = [line for line in lines if line.startswith("| UNet_XS | 8 |")]
    assert len(baseline_rows) == 1 and "| 1.25 | 2.50 | **2.00x** |" in baseline_rows[0]   # fp32 rows only


def test_every_row_of_the_baseline_size_and_batch_gets_a_baseline():
    args = Namespace(readme_set=False, sizes="UNet_T,UNet_XS", batches="1,8", runtimes="torch",
                     precisions="fp32,bf16", variants="default,lanes", repeats=3, warmup=1, threads=0, vae=None,
                     no_baseline=False, baseline_size="UNet_XS", baseline_batch=8)
    configs = _configs(args, "cpu")
    with_baseline = {(c["size"], c["batch"], c["precision"], c["variant"]) for c in configs if c["baseline"]}
    assert with_baseline == {("UNet_XS", 8, p, v) for p in ("fp32", "bf16") for v in ("default", "lanes")}
    assert not any(c["baseline"] for c in _configs(Namespace(**{**vars(args), "no_baseline": True}), "cpu"))


def test_baseline_runs_alternate_with_about_half_the_timed_runs():
    assert [_baseline_runs(n) for n in (1, 2, 3, 5)] == [1, 1, 2, 3]


def test_configurations_run_with_the_steady_allocator(monkeypatch):
    import subprocess

    from benchmarks import bench_engine

    seen = {}

    def fake_run(cmd, capture_output, text, env, cwd):
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"ok": 1}\n', stderr="")

    monkeypatch.setattr(bench_engine.subprocess, "run", fake_run)
    assert bench_engine._spawn(["--single", "{}"]) == {"ok": 1}
    assert all(seen[k] == v for k, v in bench_engine.STEADY_ALLOCATOR.items())
