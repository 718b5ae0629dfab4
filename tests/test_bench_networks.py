"""The engine floor of benchmarks/bench_networks.py on a hand case: per batch, the fastest setting of
each network (per frame), the UNet counted once per DDIM step, plus the cheapest other stages."""

from __future__ import annotations

import pytest

from benchmarks.bench_networks import floors


def _setting(encode, unet, decode, other_ms):
    return {"networks": {1: {"encode": encode[0], "unet": unet[0], "decode": decode[0]},
                         2: {"encode": encode[1], "unet": unet[1], "decode": decode[1]}},
            "other_ms": {"preprocess": other_ms, "classify": other_ms, "maps": other_ms, "postprocess": other_ms},
            "reverse_steps": 2}


def test_the_floor_adds_the_fastest_network_of_each_kind_per_frame():
    timings = {"slow": _setting((20, 30), (40, 60), (70, 100), 1.0),
               "fast": _setting((10, 24), (30, 50), (80, 120), 2.0),
               "broken": {"error": "did not compile"}}
    batch1, batch2 = floors(timings, [1, 2])
    assert batch1["best"] == {"encode": ("fast", 10), "unet": ("fast", 30), "decode": ("slow", 70)}
    assert batch1["other_ms"] == pytest.approx(4.0)
    assert batch1["floor_ms"] == pytest.approx(10 + 2 * 30 + 70 + 4.0)
    assert batch1["frames_per_s_bound"] == pytest.approx(1000.0 / 144.0)
    assert batch2["best"] == {"encode": ("fast", 12), "unet": ("fast", 25), "decode": ("slow", 50)}
    assert batch2["floor_ms"] == pytest.approx(12 + 2 * 25 + 50 + 4.0)
