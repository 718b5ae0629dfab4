"""Speed settings keep results: channels-last UNet, torch.compile (and its fallback to eager), weights stored
in the autocast dtype."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from engine.acceleration import CompiledOrEager, autocast_weights, set_memory_format
from engine.unet import GatedUNet, UNetConfig
from tests.gui_helpers import make_tiny_detector


def _frames(n: int = 3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (80, 90, 3), dtype=np.uint8) for _ in range(n)]


def _maps(detector, frames) -> np.ndarray:
    return np.stack([r.crop_map for r in detector.predict(frames, category=0)])


def test_channels_last_unet_gives_the_same_deviation():
    torch.manual_seed(0)
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=2, latent_size=8)).eval()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t, ids = torch.randn(2, 4, 8, 8), torch.tensor([4, 2]), torch.tensor([0, 1])
    with torch.inference_mode():
        plain = unet(x, t, ids)
        assert not unet.channels_last
        set_memory_format(unet, True)
        assert unet.channels_last
        fast = unet(x, t, ids)
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-5
    assert plain.abs().max().item() > 1e-3  # a non-trivial output, so the comparison means something


def test_detector_maps_do_not_depend_on_the_memory_layout():
    frames = _frames()
    det = make_tiny_detector(channels_last=False)
    plain = _maps(det, frames)
    det.with_settings(channels_last=True)
    assert det.unet.channels_last
    fast = _maps(det, frames)
    assert np.abs(fast - plain).max() <= 1e-5
    assert plain.max() > 0


def test_compile_failure_falls_back_to_eager_with_one_notice(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise torch._dynamo.exc.TorchDynamoException("no working C++ compiler")
        return run

    frames = _frames()
    expected = _maps(make_tiny_detector(), frames)
    monkeypatch.setattr(torch, "compile", broken_compile)
    det = make_tiny_detector(compile=True)
    notices = []
    det.on_notice = notices.append
    got = _maps(det, frames)
    assert np.abs(got - expected).max() <= 1e-6
    assert not det._unet_fn.compiled and not det._decode.compiled
    assert any("UNet" in n and "no working C++ compiler" in n and "uncompiled" in n for n in notices)
    count = len(notices)
    _maps(det, frames)
    assert len(notices) == count  # reported once, then eager quietly


def test_compiled_or_eager_passes_other_errors_through():
    def bad_input(x):
        raise ValueError("frame 0 is empty")

    wrapped = CompiledOrEager(bad_input, "test function")
    with pytest.raises(ValueError, match="frame 0 is empty"):
        wrapped(torch.zeros(1))
    assert wrapped.compiled and not wrapped.failure  # not mistaken for a compiler failure


@pytest.mark.slow
def test_compiled_block_matches_eager():
    """Real inductor compilation (C++ code generation) of a small conv + GroupNorm + SiLU block."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU()).eval()
    x = torch.randn(2, 8, 16, 16)
    wrapped = CompiledOrEager(block, "test block")
    with torch.inference_mode():
        expected = block(x)
        got = wrapped(x)
    assert wrapped.compiled, wrapped.failure
    assert (got - expected).abs().max().item() <= 1e-5


def test_weights_stored_in_bf16_compute_what_autocast_computes():
    torch.manual_seed(0)
    unet = GatedUNet(UNetConfig(model_channels=32, num_head_channels=16, context_dim=16, ncls=2, latent_size=8)).eval()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    low = autocast_weights(unet, "bf16")
    assert low.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert unet.input_blocks[0][0].weight.dtype == torch.float32  # the original keeps its weights
    assert all(m.weight.dtype == torch.float32 for m in low.modules() if isinstance(m, torch.nn.GroupNorm))
    x, t, ids = torch.randn(2, 4, 8, 8), torch.tensor([4, 2]), torch.tensor([0, 1])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference, stored = unet(x, t, ids), low(x, t, ids)
    assert torch.equal(reference, stored)
    assert reference.float().abs().max().item() > 1e-3


def test_a_bf16_detector_on_the_cpu_runs_bf16_copies_with_the_same_maps():
    det = make_tiny_detector()
    frames = _frames()
    det.with_settings(precision="bf16")
    assert det._unet_fn is not det.unet
    stored = _maps(det, frames)
    det._unet_fn, det._encode, det._decode = det.unet, det.vae.encode, det.vae.decode  # autocast casts every call
    np.testing.assert_array_equal(_maps(det, frames), stored)
    det.with_settings(precision="fp32")
    assert det._unet_fn is det.unet


def test_a_new_input_shape_compiles_in_one_thread_while_known_shapes_run_side_by_side(monkeypatch):
    lock, running, most = threading.Lock(), [0], [0]

    def counting_compile(fn, **kwargs):
        def run(x):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return fn(x)
        return run

    monkeypatch.setattr(torch, "compile", counting_compile)
    wrapped = CompiledOrEager(lambda x: x + 1, "test function")
    with ThreadPoolExecutor(3) as pool:
        first = list(pool.map(wrapped, [torch.zeros(2)] * 3))
        assert most[0] == 1  # the first calls of a shape (where compiling happens) run one at a time
        again = list(pool.map(wrapped, [torch.zeros(2)] * 3))
    assert most[0] > 1 and all(torch.equal(t, torch.ones(2)) for t in first + again)
