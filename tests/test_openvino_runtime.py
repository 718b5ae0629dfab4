"""The OpenVINO runtime (engine/openvino_runtime.py) and the per-machine default
(engine/runtime_choice.py): setting checks, the torch fallback with a notice when OpenVINO is
missing or cannot convert a model, the cache (reused, rebuilt when weights or versions change or
files are damaged), fp32 maps against torch, int8 calibration on a tiny model, and the
calibrate-runtime / inspect command lines."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch

from engine import openvino_runtime as ovr
from engine import runtime_choice
from engine.detector import DetectorSettings
from engine.diad import DiADSettings
from engine.loading import load_model
from tests.gui_helpers import make_tiny_detector

MAP_TOLERANCE = 1e-4  # fp32 OpenVINO vs fp32 torch, the rule


def _frames(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (72, 80, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def tiny_folder(tmp_path, home):
    """A saved tiny DeCo-Diff model folder (its cache goes beside it)."""
    folder = tmp_path / "tiny"
    make_tiny_detector(ncls=2, threshold=0.5, batch_size=4).save(folder)
    return folder


def _calibrate(folder, n=6, held=2, seed=0):
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    ovr.CalibrationSet(crops, np.arange(n) % 2, held_out=held).save(folder)


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("settings_cls", [DetectorSettings, DiADSettings])
def test_runtime_and_precision_are_checked_with_a_clear_message(settings_cls):
    with pytest.raises(ValueError, match="int8 needs runtime openvino"):
        settings_cls(precision="int8")
    with pytest.raises(ValueError, match="runtime openvino must be fp32, bf16, int8"):
        settings_cls(runtime="openvino", precision="fp16")
    with pytest.raises(ValueError, match="runtime must be torch or openvino"):
        settings_cls(runtime="onnx")
    assert settings_cls(runtime="openvino", precision="int8").precision == "int8"


def test_inspect_flags_map_to_settings():
    from argparse import Namespace

    from training.calibrate_runtime import runtime_overrides

    assert runtime_overrides(Namespace(runtime=None, precision=None)) == {}
    assert runtime_overrides(Namespace(runtime=None, precision="int8")) == {"runtime": "openvino", "precision": "int8"}
    assert runtime_overrides(Namespace(runtime="openvino", precision=None)) == {"runtime": "openvino",
                                                                                 "precision": "fp32"}
    assert runtime_overrides(Namespace(runtime=None, precision="bf16")) == {"precision": "bf16"}


# ------------------------------------------------------------------------------ fallback
def test_openvino_missing_gives_a_notice_and_torch(monkeypatch, home, caplog):
    monkeypatch.setattr(ovr, "openvino_problem", lambda: "OpenVINO is not installed (simulated)")
    det = make_tiny_detector(ncls=2)
    notices = []
    det.on_notice = notices.append
    det.with_settings(runtime="openvino", precision="int8")
    assert (det.settings.runtime, det.settings.precision) == ("torch", "fp32")
    assert len(notices) == 1 and "not installed (simulated)" in notices[0] and "running it on torch fp32" in notices[0]
    assert det.predict(_frames(2), category=0)[0].crop_map.shape == (64, 64)
    with caplog.at_level(logging.WARNING):
        fresh = make_tiny_detector(ncls=2, runtime="openvino", precision="bf16")
    assert (fresh.settings.runtime, fresh.settings.precision) == ("torch", "bf16")
    assert "simulated" in caplog.text


def test_a_model_openvino_cannot_convert_falls_back_to_torch(monkeypatch, home):
    pytest.importorskip("openvino")

    def broken(spec):
        raise RuntimeError(f"unsupported operation in {spec.name}")

    monkeypatch.setattr(ovr, "_convert", broken)
    det = make_tiny_detector(ncls=2)
    notices = []
    det.on_notice = notices.append
    det.with_settings(runtime="openvino", precision="fp32")
    assert det.settings.runtime == "torch"
    assert "converting the encode network failed (RuntimeError: unsupported operation in encode)" in notices[0]


def test_int8_without_calibration_images_says_how_to_get_them(tiny_folder):
    pytest.importorskip("openvino")
    notices = []
    det = load_model(tiny_folder, device="cpu")
    det.on_notice = notices.append
    det.with_settings(runtime="openvino", precision="int8")
    assert (det.settings.runtime, det.settings.precision) == ("torch", "fp32")
    assert "calibrate-runtime" in notices[0]


# ------------------------------------------------------------------------------ accuracy
def test_fp32_openvino_maps_match_torch_deco_diff(home):
    pytest.importorskip("openvino")
    det = make_tiny_detector(ncls=2, batch_size=4)
    ref = det.predict(_frames(), category=[0, 1, 1, 0])
    det.with_settings(runtime="openvino", precision="fp32")
    assert det.settings.runtime == "openvino"
    out = det.predict(_frames(), category=[0, 1, 1, 0])
    diff = max(float(np.abs(a.crop_map - b.crop_map).max()) for a, b in zip(ref, out))
    assert diff < MAP_TOLERANCE
    assert all(a.is_anomalous == b.is_anomalous for a, b in zip(ref, out))


def test_fp32_openvino_maps_match_torch_diad(home):
    pytest.importorskip("openvino")
    from tests.test_diad import tiny_detector

    det = tiny_detector(ncls=2)
    ref = det.predict(_frames(3), category=[0, 1, 0])
    det.with_settings(runtime="openvino", precision="fp32")
    assert det.settings.runtime == "openvino"
    out = det.predict(_frames(3), category=[0, 1, 0])
    assert max(float(np.abs(a.crop_map - b.crop_map).max()) for a, b in zip(ref, out)) < MAP_TOLERANCE


def test_int8_calibration_on_a_tiny_model(tiny_folder, monkeypatch):
    pytest.importorskip("nncf")
    _calibrate(tiny_folder)
    det = load_model(tiny_folder, device="cpu", runtime="openvino", precision="int8")
    assert (det.settings.runtime, det.settings.precision) == ("openvino", "int8")
    cache = tiny_folder / ovr.CACHE_DIR
    selection = json.loads((cache / ovr.INT8_SELECTION_FILE).read_text())
    assert set(selection["mean_score_change"]) == {"encode", "unet", "decode"}
    assert set(det.int8_networks) == set(selection["int8"])
    for name in selection["int8"]:
        xml = (cache / f"{name}-int8.xml").read_text()
        assert "FakeQuantize" in xml or "FakeConvert" in xml  # really quantized
        meta = json.loads((cache / f"{name}-int8.json").read_text())
        assert meta["key"]["calibration"] and meta["key"]["versions"]["nncf"]
    results = det.predict(_frames(2), category=[0, 1])
    assert all(np.isfinite(r.score) for r in results)
    # networks that run differently (EXECUTION_VERSION) are judged again, not by the stored choice
    monkeypatch.setattr(ovr, "EXECUTION_VERSION", ovr.EXECUTION_VERSION + 1)
    load_model(tiny_folder, device="cpu", runtime="openvino", precision="int8")
    assert json.loads((cache / ovr.INT8_SELECTION_FILE).read_text())["key"] != selection["key"]


# ------------------------------------------------------------------------------ cache
def _build_counting(monkeypatch):
    calls = []
    real = ovr._convert

    def counting(spec):
        calls.append(spec.name)
        return real(spec)

    monkeypatch.setattr(ovr, "_convert", counting)
    return calls


def test_the_cache_is_reused_and_rebuilt_when_stale_or_damaged(tiny_folder, monkeypatch):
    pytest.importorskip("openvino")
    calls = _build_counting(monkeypatch)
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert sorted(calls) == ["decode", "encode", "unet"]
    cache = tiny_folder / ovr.CACHE_DIR
    assert (cache / "unet-fp32.xml").is_file() and (cache / "unet-fp32.json").is_file()

    calls.clear()
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert calls == []  # all three from the cache

    # a damaged file: rebuilt, never trusted
    binary = cache / "decode-fp32.bin"
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert calls == ["decode"]

    # another OpenVINO version wrote it: stale
    calls.clear()
    meta_path = cache / "encode-fp32.json"
    meta = json.loads(meta_path.read_text())
    meta["key"]["versions"]["openvino"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert calls == ["encode"]

    # an unreadable key file
    calls.clear()
    (cache / "unet-fp32.json").write_text("{not json")
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert calls == ["unet"]

    # new UNet weights: the UNet is rebuilt, the VAE kept
    calls.clear()
    det = load_model(tiny_folder, device="cpu")
    with torch.no_grad():
        next(det.unet.parameters()).add_(0.01)
    det.save(tiny_folder)
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert calls == ["unet"]


def test_a_read_only_model_folder_caches_in_the_user_folder(tiny_folder, monkeypatch, home):
    pytest.importorskip("openvino")
    real = ovr._writable
    monkeypatch.setattr(ovr, "_writable", lambda folder: False if folder.name == ovr.CACHE_DIR else real(folder))
    load_model(tiny_folder, device="cpu", runtime="openvino")
    assert not (tiny_folder / ovr.CACHE_DIR).exists()
    assert list((home / "cache" / "openvino").glob("*/unet-fp32.xml"))


# ------------------------------------------------------------------------------ machine default
def test_without_calibration_images_the_default_stays_torch_fp32(tiny_folder):
    det = load_model(tiny_folder, device="cpu")
    choice = runtime_choice.machine_default(det)
    assert (choice.runtime, choice.precision) == ("torch", "fp32")
    assert "no calibration images" in choice.reason


def test_the_default_is_decided_once_per_machine_and_model(tiny_folder, monkeypatch, caplog):
    _calibrate(tiny_folder)
    checks = []

    def fake_check(model, calibration, candidates=runtime_choice.CANDIDATES):
        checks.append(calibration.held_out)
        model.with_settings(runtime="torch", precision="bf16")
        return runtime_choice.RuntimeChoice("torch", "bf16", {"torch fp32": 10.0, "torch bf16": 5.0}, "fastest")

    monkeypatch.setattr(runtime_choice, "check_candidates", fake_check)
    monkeypatch.setattr(runtime_choice, "CHECK_IN_CHILD", False)   # the fake check runs in this process
    with caplog.at_level(logging.INFO, logger="engine.runtime_choice"):
        first = runtime_choice.machine_default(load_model(tiny_folder, device="cpu"))
        det = load_model(tiny_folder, device="cpu")
        second = runtime_choice.machine_default(det)
    assert checks == [2]  # checked once, on the two held-out images
    assert first.name == second.name == "torch bf16" and det.settings.precision == "bf16"
    assert "decided before" in caplog.text
    assert runtime_choice.choice_file().is_file()
    monkeypatch.setattr(runtime_choice, "CHECK_RULE_VERSION", runtime_choice.CHECK_RULE_VERSION + 1)
    runtime_choice.machine_default(load_model(tiny_folder, device="cpu"))
    assert checks == [2, 2]  # a changed rule decides again
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        runtime_choice.machine_default(load_model(tiny_folder, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert checks == [2, 2, 2]  # so does another torch thread count (the window keeps a core free)


def test_the_first_check_of_a_saved_model_runs_in_a_child_process(tiny_folder, monkeypatch, caplog):
    """The child converts and times the candidates (the memory peak stays out of the window); this
    process only reads the decision it stored. Two candidates keep the test short."""
    _calibrate(tiny_folder)
    monkeypatch.setattr(runtime_choice, "check_candidates", lambda *a, **k: pytest.fail("checked in this process"))
    det = load_model(tiny_folder, device="cpu")
    with caplog.at_level(logging.INFO, logger="engine.runtime_choice"):
        choice = runtime_choice.machine_default(det, candidates=(("torch", "fp32"), ("torch", "bf16")))
    assert choice.name in ("torch fp32", "torch bf16") and det.settings.precision == choice.precision
    assert set(choice.ms_per_part) == {"torch fp32", "torch bf16"} and choice.ms_per_part["torch fp32"] > 0
    assert "decided in a child process" in caplog.text and "runtime check: " in caplog.text
    assert runtime_choice.CHILD_PEAK_PREFIX in caplog.text   # the child's own peak memory, relayed
    stored = json.loads(runtime_choice.choice_file().read_text())
    assert [v["runtime"] + " " + v["precision"] for v in stored.values()] == [choice.name]


def test_a_failing_check_child_leaves_the_model_on_torch_fp32_with_the_reason(tiny_folder, monkeypatch, caplog):
    _calibrate(tiny_folder)
    crash = [sys.executable, "-c", "import sys; print('converting the unet network: plugin crashed'); sys.exit(3)"]
    monkeypatch.setattr(runtime_choice, "python_module_command", lambda module, args: crash)
    monkeypatch.setattr(runtime_choice, "check_candidates", lambda *a, **k: pytest.fail("checked in this process"))
    det = load_model(tiny_folder, device="cpu", precision="bf16")
    with caplog.at_level(logging.INFO, logger="engine.runtime_choice"):
        choice = runtime_choice.machine_default(det)
    assert choice.name == "torch fp32" and det.settings.precision == "fp32"
    assert "failed (exit 3): converting the unet network: plugin crashed" in choice.reason
    assert "running it on torch fp32" in caplog.text
    monkeypatch.setattr(runtime_choice, "python_module_command", lambda module, args: pytest.fail("checked again"))
    assert runtime_choice.machine_default(load_model(tiny_folder, device="cpu")).reason == choice.reason


def test_a_check_child_that_cannot_start_leaves_the_check_to_this_process(tiny_folder, monkeypatch):
    _calibrate(tiny_folder)
    monkeypatch.setattr(runtime_choice, "python_module_command", lambda module, args: ["/nonexistent/python"])
    here = []
    monkeypatch.setattr(runtime_choice, "check_candidates", lambda model, calibration, candidates: here.append(1) or
                        runtime_choice.RuntimeChoice("torch", "fp32", {"torch fp32": 3.0}, "checked here"))
    assert runtime_choice.machine_default(load_model(tiny_folder, device="cpu")).reason == "checked here"
    assert here == [1]


def test_check_candidates_keeps_the_reference_when_others_change_verdicts(tiny_folder, monkeypatch):
    _calibrate(tiny_folder)
    det = load_model(tiny_folder, device="cpu")
    calibration = ovr.CalibrationSet.load(tiny_folder, 64, 2)
    real = det.score_latents

    def shifted(images, ids, clock=None):  # bf16 "moves" every score over the threshold
        maps, recons = real(images, ids, clock)
        if det.settings.precision == "bf16":
            maps = maps.scaled(torch.full((images.shape[0],), 1e6))
        return maps, recons

    det.score_latents = shifted
    choice = runtime_choice.check_candidates(det, calibration, candidates=(("torch", "fp32"), ("torch", "bf16")))
    assert (choice.runtime, choice.precision) == ("torch", "fp32")
    assert choice.ms_per_part["torch bf16"] is None and choice.ms_per_part["torch fp32"] > 0
    assert "torch bf16 (" in choice.reason and "rejected:" in choice.reason and "verdicts changed" in choice.reason


def test_score_change_rule_on_hand_cases():
    rule = runtime_choice.score_change_problem
    reference = [0.10, 0.07, 0.36, 0.09, 0.15, 0.13, 0.17, 0.10, 0.16]
    assert rule(reference, reference, 0.5) is None
    # the AMD int8 case: one image moves by 0.033 (6.7 % of the threshold), the mean by 0.010
    amd = [0.1023, 0.0687, 0.3751, 0.1049, 0.1466, 0.166, 0.1617, 0.0959, 0.1491]
    assert rule(amd, [0.1039, 0.0698, 0.3561, 0.0853, 0.1468, 0.1326, 0.166, 0.0962, 0.1609], 0.5) is None
    assert rule([0.51] + reference[1:], reference, 0.5) == "1 verdict changed"
    assert rule([0.51, 0.6] + reference[2:], reference, 0.5) == "2 verdicts changed"
    assert rule([s + 0.03 for s in reference], reference, 0.5) == "scores moved by 0.03 on average (at most 0.025)"
    assert rule([0.16] + reference[1:], reference, 0.5) == "a score moved by 0.06 (at most 0.05)"
    assert rule([], [], 0.5) is None


# ------------------------------------------------------------------------------ commands
def _tile_wood_model(tmp_path):
    """A tiny two-category MVTec folder and a tiny tile/wood model folder: (data, folder)."""
    from tests.test_training import make_tiny_mvtec

    data = tmp_path / "data"
    make_tiny_mvtec(data)
    folder = tmp_path / "model"
    det = make_tiny_detector(ncls=2, threshold=0.5)
    det.class_names = ["tile", "wood"]
    det.save(folder)
    return data, folder


def test_calibrate_runtime_command_writes_the_calibration_set(tmp_path, home, monkeypatch):
    from training import calibrate_runtime

    data, folder = _tile_wood_model(tmp_path)
    monkeypatch.setattr(calibrate_runtime, "openvino_problem", lambda: "OpenVINO is not installed (simulated)")
    assert calibrate_runtime.main(["--model", str(folder), "--data-dir", str(data), "--per-category", "2",
                                   "--check-per-category", "1"]) == 0
    cal = ovr.CalibrationSet.load(folder, 64, 2)
    assert cal.crops.shape == (6, 64, 64, 3) and cal.held_out == 2
    assert sorted(cal.class_ids.tolist()) == [0, 0, 0, 1, 1, 1]


def test_a_damaged_calibration_file_is_reported(tiny_folder):
    (tiny_folder / ovr.CALIBRATION_FILE).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="unreadable calibration images"):
        ovr.CalibrationSet.load(tiny_folder, 64, 2)
    det = load_model(tiny_folder, device="cpu")
    assert runtime_choice.machine_default(det).name == "torch fp32"


def test_inspect_and_the_window_apply_the_pin_or_the_models_own_runtime(tiny_folder, monkeypatch):
    from engine.checkpoint import update_model_json

    monkeypatch.setenv(runtime_choice.PIN_ENV, "torch bf16")
    det = load_model(tiny_folder, device="cpu")
    assert runtime_choice.apply_default_runtime(det, tiny_folder).name == "torch bf16"
    assert det.settings.precision == "bf16"
    monkeypatch.setenv(runtime_choice.PIN_ENV, "torch")
    with pytest.raises(ValueError, match="RUNTIME PRECISION"):
        runtime_choice.apply_default_runtime(load_model(tiny_folder, device="cpu"), tiny_folder)
    update_model_json(tiny_folder, lambda meta: meta["settings"].update(runtime="torch", precision="fp32"))
    assert runtime_choice.apply_default_runtime(load_model(tiny_folder, device="cpu"), tiny_folder) is None


def test_fit_calibration_step_draws_training_and_held_out_images(tmp_path, home):
    from training.calibrate_runtime import calibrate_after_fit

    data, folder = _tile_wood_model(tmp_path)
    train = [(str(p), cat) for cat in ("tile", "wood") for p in sorted((data / cat / "train" / "good").iterdir())]
    held = [train[0], train[6]]
    said = []
    calibrate_after_fit(folder, train, held, "cpu", said.append)
    cal = ovr.CalibrationSet.load(folder, 64, 2)
    assert cal.held_out == 2 and len(cal.crops) == 12  # 5 + 5 training images, the 2 held-out ones last
    assert cal.class_ids[-2:].tolist() == [0, 1] and "12 good images" not in said[0] and "10 good images" in said[0]


def test_the_window_shows_the_runtime_and_its_measured_time(tiny_folder, monkeypatch):
    from inspector.loaded_model import LoadedModel, model_summary

    det = load_model(tiny_folder, device="cpu")
    assert "Runs on CPU · torch fp32" in model_summary(LoadedModel.of(det, str(tiny_folder)))
    _calibrate(tiny_folder)
    monkeypatch.delenv(runtime_choice.PIN_ENV)
    monkeypatch.setattr(runtime_choice, "CHECK_IN_CHILD", False)
    monkeypatch.setattr(runtime_choice, "check_candidates", lambda model, calibration, candidates=None:
                        runtime_choice.RuntimeChoice("torch", "fp32", {"torch fp32": 12.4}, "only one"))
    det = load_model(tiny_folder, device="cpu")
    runtime_choice.apply_default_runtime(det, tiny_folder)
    loaded = LoadedModel.of(det, str(tiny_folder))
    assert loaded.ms_per_part == 12.4 and "torch fp32 (12 ms/part measured)" in model_summary(loaded)


def test_each_batch_size_runs_on_its_own_static_copy_with_the_same_result(home, monkeypatch):
    """A batch size gets a copy with that batch fixed (up to MAX_STATIC_BATCHES sizes, then the
    dynamic model); a size near a larger copy first runs padded on it, and gets its own copy only
    when it keeps coming; fp32 results equal the dynamic model's in every case."""
    pytest.importorskip("openvino")
    monkeypatch.setattr(ovr, "MAX_STATIC_BATCHES", 2)
    det = make_tiny_detector(ncls=2, batch_size=4)
    det.with_settings(runtime="openvino", precision="fp32")
    unet = det._unet_fn
    assert unet.static_batches == ()
    c, lat = det.unet.config.in_channels, det.unet.config.latent_size
    gen = torch.Generator().manual_seed(0)

    def check(batch):
        x = torch.randn(batch, c, lat, lat, generator=gen)
        t, ids = torch.full((batch,), 7), torch.arange(batch).remainder(2).reshape(batch, 1)
        dynamic = unet.dynamic.create_infer_request().infer([x.numpy(), t.numpy(), ids.numpy()])[0]
        out = unet(x, t, ids)
        assert out.shape[0] == batch and float(np.abs(out.numpy() - dynamic).max()) < 1e-5

    for batch in (3, 1, 2, 3):
        check(batch)
    assert unet.static_batches == (1, 3)      # 1 is more than PAD_MAX_FACTOR below 3: its own copy
    assert list(unet.compiled_for(2).inputs[0].get_partial_shape()) == [3, c, lat, lat]   # 2 ran padded on 3
    check(5)
    assert unet.compiled_for(5) is unet.dynamic and unet.static_batches == (1, 3)   # no copy left, none larger

    monkeypatch.setattr(ovr, "MAX_STATIC_BATCHES", 3)
    for _ in range(ovr.PAD_CALLS_BEFORE_COPY - 2):   # 2's first two calls were above
        check(2)
    assert unet.static_batches == (1, 3)
    check(2)                                          # a size that keeps coming gets its own copy
    assert unet.static_batches == (1, 2, 3)
    assert list(unet.compiled_for(2).inputs[0].get_partial_shape()) == [2, c, lat, lat]


def test_a_static_copy_that_fails_to_compile_leaves_its_batch_on_the_dynamic_model(home, caplog):
    pytest.importorskip("openvino")
    det = make_tiny_detector(ncls=2, batch_size=4)
    det.with_settings(runtime="openvino", precision="fp32")
    decode = det._decode

    def refuse(batch):
        raise RuntimeError("no kernel for this shape (simulated)")

    decode._compile_for_batch = refuse
    z = torch.randn(2, det.unet.config.in_channels, det.unet.config.latent_size, det.unet.config.latent_size)
    with caplog.at_level(logging.WARNING):
        out = decode(z)
        decode(z)
    assert out.shape[0] == 2 and decode.static_batches == ()
    assert caplog.text.count("could not compile the decode network for batch 2") == 1
    assert "no kernel for this shape (simulated)" in caplog.text and "dynamic batch" in caplog.text


def test_the_check_times_a_warm_batch_not_the_first_call_of_its_size(monkeypatch):
    """An OpenVINO network compiles a copy on the first call of each batch size; the machine
    default's timing must not include it (it once chose torch over a 5x faster OpenVINO)."""
    seen, clock = set(), [0.0]

    class FirstCallOfASizeIsSlow:
        device = torch.device("cpu")

        def score_latents(self, images, ids, stage_clock=None):
            clock[0] += 0.001 * images.shape[0] + (5.0 if images.shape[0] not in seen else 0.0)
            seen.add(images.shape[0])
            return type("Maps", (), {"final": images.mean(dim=1)})(), None

    monkeypatch.setattr(runtime_choice.time, "perf_counter", lambda: clock[0])
    scores, ms = runtime_choice._timed_scores(FirstCallOfASizeIsSlow(), torch.zeros(9, 3, 4, 4),
                                              torch.zeros(9, dtype=torch.long))
    assert len(scores) == 9 and ms == pytest.approx(1.0)


def test_decisions_made_by_running_the_networks_depend_on_how_they_run(tiny_folder, monkeypatch):
    """The machine default's key changes with EXECUTION_VERSION, so a decision measured on
    networks that ran differently is made again."""
    det = load_model(tiny_folder, device="cpu")
    key = runtime_choice._decision_key(det, None)
    assert runtime_choice._decision_key(det, None) == key
    monkeypatch.setattr(runtime_choice, "EXECUTION_VERSION", ovr.EXECUTION_VERSION + 1)
    assert runtime_choice._decision_key(det, None) != key


def test_one_stream_takes_the_calling_threads_torch_threads_and_lanes_take_a_stream_each(home):
    """The window's worker gives PyTorch all cores but one; OpenVINO's networks then keep to as
    many (the live pipeline's network thread), and with lanes get one single-threaded stream each."""
    pytest.importorskip("openvino")
    det = make_tiny_detector(ncls=1, batch_size=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        det.with_settings(runtime="openvino", precision="fp32")
        compiled = det._unet_fn.dynamic
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert int(compiled.get_property("NUM_STREAMS")) == 1
        static = det._unet_fn.compiled_for(2)
        assert static is not compiled and int(static.get_property("INFERENCE_NUM_THREADS")) == 1
        det.with_settings(lanes=2)
        for compiled in (det._unet_fn.dynamic, det._unet_fn.compiled_for(2)):
            assert int(compiled.get_property("NUM_STREAMS")) == 2
            assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ compiled blobs
class _CountingCore:
    """An openvino.Core that records what it compiles and imports (input shapes)."""

    def __init__(self):
        import openvino as ov

        self._core = ov.Core()
        self.compiled, self.imported = [], 0

    def __getattr__(self, name):
        return getattr(self._core, name)

    def compile_model(self, model, device, config):
        self.compiled.append(str(model.inputs[0].get_partial_shape()))
        return self._core.compile_model(model, device, config)

    def import_model(self, stream, device, config):
        self.imported += 1
        return self._core.import_model(stream, device, config)


def test_compiled_networks_are_kept_as_blobs_and_a_damaged_blob_is_compiled_again(tiny_folder, monkeypatch, caplog):
    """Each compiled form (the dynamic model, each static copy) is imported from its blob the next
    time (the dynamic model only when first needed); a blob with flipped bytes (which OpenVINO
    would run, giving wrong maps) is compiled again; a blob made on another device is not used;
    new weights drop the network's blobs."""
    pytest.importorskip("openvino")
    core = _CountingCore()
    monkeypatch.setattr(ovr, "_core", lambda: core)
    frames = _frames(3)

    def run():   # one lane: with two, which lane's batch size comes first (and gets a copy) varies
        det = load_model(tiny_folder, device="cpu", runtime="openvino", lanes=1)
        return det, det.predict(frames, category=0)[0].crop_map

    _, first = run()
    cache = tiny_folder / ovr.CACHE_DIR
    blobs = sorted(cache.glob("*.blob"))
    compiled = list(core.compiled)
    assert core.imported == 0 and len(blobs) == len(compiled) >= 6   # a dynamic model and static copies, 3 networks
    assert any(shape.startswith("[?,") for shape in compiled) and any(not s.startswith("[?,") for s in compiled)

    core.compiled.clear()
    det, again = run()
    dynamic = [p for p in blobs if b'"[?,' in p.read_bytes()[:4096]]
    assert len(dynamic) == 3 and core.compiled == [] and core.imported == len(blobs) - len(dynamic)
    assert np.array_equal(first, again)
    det._unet_fn.dynamic    # a dynamic model with a blob is imported when first needed, not at the start
    assert core.compiled == [] and core.imported == len(blobs) - len(dynamic) + 1

    # flipped bytes in the middle of a static UNet copy's blob
    static = next(p for p in sorted(cache.glob("unet-fp32-*.blob")) if b'"[?,' not in p.read_bytes()[:4096])
    data = bytearray(static.read_bytes())
    data[len(data) // 2] ^= 0xFF
    static.write_bytes(bytes(data))
    core.compiled.clear()
    with caplog.at_level(logging.WARNING):
        _, third = run()
    assert len(core.compiled) == 1 and not core.compiled[0].startswith("[?,")
    assert f"{static} does not match its checksum" in caplog.text
    assert np.array_equal(first, third)
    core.compiled.clear()
    run()   # rewritten: imported again
    assert core.compiled == []

    # the same folder on another CPU: its own blobs
    real_identity = ovr._device_identity
    monkeypatch.setattr(ovr, "_device_identity", lambda c, d: {**real_identity(c, d), "FULL_DEVICE_NAME": "other"})
    run()
    assert len(core.compiled) == len(blobs) and len(list(cache.glob("*.blob"))) == 2 * len(blobs)

    # new UNet weights: its blobs go with its converted network
    unet_blobs = len(list(cache.glob("unet-fp32-*.blob")))
    det = load_model(tiny_folder, device="cpu")
    with torch.no_grad():
        next(det.unet.parameters()).add_(0.01)
    det.save(tiny_folder)
    run()
    assert len(list(cache.glob("unet-fp32-*.blob"))) == unet_blobs // 2
    assert len(list(cache.glob("*.blob"))) == 2 * len(blobs) - unet_blobs // 2


def test_blobs_beyond_the_limit_go_least_recently_used_first(tmp_path, monkeypatch):
    import os

    for i in range(5):
        path = tmp_path / f"unet-int8-{i}{ovr.BLOB_SUFFIX}"
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    os.utime(tmp_path / f"unet-int8-0{ovr.BLOB_SUFFIX}", (2000, 2000))   # used last
    (tmp_path / f"decode-int8-0{ovr.BLOB_SUFFIX}").write_bytes(b"x")
    ovr._prune_blobs(tmp_path, "unet-int8", keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"decode-int8-0{ovr.BLOB_SUFFIX}"] + [
        f"unet-int8-{i}{ovr.BLOB_SUFFIX}" for i in (0, 3, 4)]


def test_the_int8_key_names_the_installed_nncf_without_importing_it(monkeypatch):
    """The int8 cache key carries NNCF's version from the installed metadata (importing nncf costs
    every start 0.3-1 s); another version means another key, so the cache is rebuilt."""
    spec = ovr.NetworkSpec("unet", torch.nn.Identity(), (torch.zeros(1, 4, 8, 8),), ((-1, 4, 8, 8),), ("f32",))
    monkeypatch.delitem(sys.modules, "nncf", raising=False)
    key = ovr.network_key(spec, "f" * 64, "int8")
    assert "nncf" not in sys.modules
    assert key["versions"]["nncf"] == ovr.importlib.metadata.version("nncf")
    assert "nncf" not in ovr.network_key(spec, "f" * 64, "bf16")["versions"]
    monkeypatch.setattr(ovr.importlib.metadata, "version", lambda package: "0.0-other")
    assert ovr.network_key(spec, "f" * 64, "int8") != key
