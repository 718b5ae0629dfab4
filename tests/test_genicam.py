"""GenICam cameras through harvesters, with the simulated GenTL producer of the `genicam` wheel
(viky.cti, a bouncing ball): frames stream into a live source and into `main.py station`."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.genicam import GenICamCapture, GenICamError, parse_genicam_url, to_bgr
from inspector.sources import SourceError, open_source, spec_for_path
from tests.line_servers import need_module

need_module("harvesters", "GenICam cameras need it: pip install -e '.[dev]'")
need_module("genicam", "the simulated GenTL producer comes with the genicam wheel: pip install -e '.[dev]'")

SIMULATED = "genicam://0?cti=viky"


def test_pixel_formats_become_bgr():
    mono12 = np.array([[4095, 0], [2048, 16]], np.uint16)
    assert to_bgr(mono12.ravel(), 2, 2, "Mono12")[..., 0].tolist() == [[255, 0], [128, 1]]
    rgb = np.array([10, 20, 30, 255], np.uint8)
    assert to_bgr(rgb, 1, 1, "RGBa8").tolist() == [[[30, 20, 10]]]
    with pytest.raises(GenICamError, match="BayerRG8 is not supported"):
        to_bgr(rgb, 2, 2, "BayerRG8")


def test_urls_name_the_device_producer_and_features(monkeypatch):
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    device, ctis, features, software, timeout = parse_genicam_url(
        "genicam://cam-7?cti=viky&ExposureTime=5000&software_trigger=1&timeout=2")
    assert (device, features, software, timeout) == ("cam-7", {"ExposureTime": "5000"}, True, 2.0)
    assert ctis[0].endswith("viky.cti")
    with pytest.raises(GenICamError, match="no GenTL producer"):
        parse_genicam_url("genicam://0")


def test_simulated_camera_streams_with_its_features_and_says_what_it_lacks():
    statuses = []
    source = open_source(spec_for_path(f"{SIMULATED}&PixelFormat=Mono8&Width=320&Height=240&Gain=3"))
    source.on_status = lambda text, level: statuses.append((level, text))
    source.open()
    try:
        frames = [source.read() for _ in range(3)]
    finally:
        source.close()
    assert all(f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8 and f.live for f in frames)
    assert any(level == "warning" and "no feature Gain" in text for level, text in statuses)
    with pytest.raises(SourceError, match="no camera '7'; the producer lists: VikyTL_DEV_red"):
        open_source(spec_for_path("genicam://7?cti=viky")).open()
    capture = GenICamCapture("genicam://0?cti=/nowhere/x.cti")
    assert not capture.isOpened() and "not found" in capture.problem


@pytest.mark.slow
def test_station_inspects_a_simulated_genicam_camera(tmp_path, monkeypatch, capsys):
    import argparse

    from inspector.station import add_station_arguments, run_station
    from tests.test_detector import make_detector

    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(tmp_path / "home"))
    model = tmp_path / "tiny"
    make_detector(ncls=2, threshold=0.5).save(model)
    parser = argparse.ArgumentParser()
    add_station_arguments(parser)
    args = parser.parse_args(["--source", SIMULATED, "--model", str(model), "--max-parts", "3", "--station", "cam1", "--category", "part0",
                              "--log", str(tmp_path / "r.sqlite")])
    assert run_station(args) == 0
    out = capsys.readouterr().out
    assert "source stream genicam://0?cti=viky" in out and "station stopped after 3 parts" in out
    assert out.count("part ") == 3 and ", 0 errors" in out and "error:" not in out


def test_a_camera_that_stops_streaming_is_reconnected():
    statuses = []
    source = open_source(spec_for_path(f"{SIMULATED}&timeout=0.5"), backoff_start=0.1)
    source.on_status = lambda text, level: statuses.append(text)
    source.open()
    try:
        assert source.read().rgb is not None
        source._cap._acquirer.stop()   # the camera stops delivering under us, as when it is unplugged
        frame = source.read()
    finally:
        source.close()
    assert frame.rgb is not None and source.reconnects == 1
    assert any("reconnecting" in s for s in statuses) and any(s.endswith("reconnected") for s in statuses)
