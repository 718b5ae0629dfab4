"""Line ▸ Outputs in the window (offscreen): the dialog checks URLs, the outputs are stored in the
recipe, every part the window inspects reaches a webhook receiver on loopback, and the status bar
shows the outputs' state."""

from __future__ import annotations

from inspector.line_panel import OutputsDialog, status_summary
from inspector.recipes import RecipeStore
from inspector.sources import SourceSpec
from lineio import SinkStatus
from tests.gui_helpers import SleepyDetector, load_model, open_inspector, write_images
from tests.line_servers import HttpReceiver, need_module


def test_outputs_dialog_checks_each_url(qtbot):
    dialog = OutputsDialog(["mqtt://broker/line"])
    qtbot.addWidget(dialog)
    dialog.url_edit.setText("ftp://nowhere/x")
    assert not dialog.add_url() and "unknown output" in dialog.problem.text()
    dialog.url_edit.setText("modbus://0.0.0.0:1502?unit=1")
    assert dialog.add_url() and dialog.problem.text() == ""
    dialog.url_edit.setText("mqtt://broker/line")
    assert not dialog.add_url() and "already" in dialog.problem.text()
    dialog.list.setCurrentRow(0)
    dialog.remove_selected()
    assert dialog.urls() == ["modbus://0.0.0.0:1502?unit=1"]


def test_status_summary_says_what_is_wrong():
    assert status_summary([]) == ("", "", "info")
    text, tooltip, level = status_summary([SinkStatus("mqtt://b/t", connected=True, sent=4),
                                           SinkStatus("http://h/x", queued=3, last_error="refused")])
    assert text == "outputs 1/2 connected, 3 queued" and level == "warning" and "refused" in tooltip


def test_window_parts_reach_the_outputs_stored_in_the_recipe(qtbot, home, tmp_path):
    receiver = HttpReceiver()
    write_images(tmp_path / "imgs", 4, bright={1})
    window, ctl = open_inspector(qtbot, home, lambda path, **overrides: SleepyDetector(0.0))
    try:
        load_model(qtbot, ctl)
        ctl.line.set_urls([receiver.url])
        menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
        assert menus.index("Line") == menus.index("Training") - 1
        ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
        ctl.save_recipe("Widgets on line 1")
        assert RecipeStore(home / "recipes").load("Widgets on line 1").extra == {"outputs": [receiver.url]}
        ctl.start()
        qtbot.waitUntil(lambda: len(receiver.bodies) == 4, timeout=30000)
        assert [b["verdict"] for b in receiver.bodies] == ["pass", "fail", "pass", "pass"]
        assert {b["recipe"] for b in receiver.bodies} == {"Widgets on line 1"}
        qtbot.waitUntil(lambda: ctl.line.outputs.status()[0].queued == 0, timeout=10000)   # the last one marked sent
        ctl.line.refresh_status()
        assert ctl.line.status.text() == "outputs 1/1 connected" and ctl.line.status.isVisible()
        ctl.line.set_urls([])
        assert not ctl.line.status.isVisible()
        ctl.apply_recipe("Widgets on line 1")   # the recipe brings its outputs back
        assert ctl.line.urls == [receiver.url] and ctl.line.outputs is not None
        ctl.save_recipe("Widgets strict")
        select = ctl.line.outputs.sinks[0].on_select_recipe   # what an OPC UA or MQTT output calls
        assert select("Bolts") == "no recipe named 'Bolts'"
        assert select("Widgets on line 1") == ""
        qtbot.waitUntil(lambda: ctl.recipe_name == "Widgets on line 1", timeout=5000)
    finally:
        receiver.close()


def test_genicam_dialog_finds_the_simulated_camera_and_opens_it(qtbot, home):
    need_module("harvesters", "GenICam cameras need it: pip install -e '.[dev]'")
    need_module("genicam", "the simulated GenTL producer comes with the genicam wheel: pip install -e '.[dev]'")
    from inspector.genicam_dialog import GenICamDialog

    window, ctl = open_inspector(qtbot, home, lambda path, **overrides: SleepyDetector(0.0))
    source_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Source")
    assert "&GenICam camera…" in [a.text() for a in source_menu.actions()]
    dialog = GenICamDialog(window)
    qtbot.addWidget(dialog)
    dialog.find_cameras()
    assert dialog.problem.text() == "Choose the producer (.cti) first, or the simulated camera"
    dialog.simulated.setChecked(True)
    dialog.find_cameras()
    assert dialog.camera.count() == 3 and dialog.device() == "VikyTL_DEV_red"
    dialog.read_settings()
    assert dialog.features["PixelFormat"].currentText() == "RGBa8"
    assert [dialog.features["PixelFormat"].itemText(i) for i in range(2)] == ["RGBa8", "Mono8"]
    assert not dialog.features["ExposureTime"].isEnabled()      # the simulator has none
    dialog.features["PixelFormat"].setEditText("Mono8")
    dialog.features["Width"].setEditText("320")
    dialog.features["Height"].setEditText("")
    assert dialog.url() == "genicam://VikyTL_DEV_red?cti=viky&PixelFormat=Mono8&Width=320"
    ctl.open_source(dialog.spec(), autostart=False)
    assert ctl.source_spec.target == dialog.url()
    ctl.save_recipe("Camera 1")   # the camera and its settings are the recipe's source
    assert RecipeStore(home / "recipes").load("Camera 1").source_spec.target == dialog.url()


def test_the_plc_triggers_the_window_one_named_part_at_a_time(qtbot, home, tmp_path):
    from pymodbus.client import ModbusTcpClient

    from lineio.modbus import PART_ID_REGISTERS, Coil, Reg, decode_text, encode_text
    from tests.gui_helpers import db_rows
    from tests.line_servers import free_port

    write_images(tmp_path / "imgs", 5, bright={1})
    window, ctl = open_inspector(qtbot, home, lambda path, **overrides: SleepyDetector(0.0))
    port = free_port()
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(tmp_path / "imgs")), autostart=False)
    ctl.line.set_urls([f"modbus://127.0.0.1:{port}?unit=1"])
    ctl.line.act_triggers.setChecked(True)
    plc = ModbusTcpClient("127.0.0.1", port=port)
    try:
        qtbot.waitUntil(lambda: plc.connect() and plc.read_coils(0, count=10, device_id=1).bits[Coil.READY],
                        timeout=10000)
        for n, part in enumerate(["W-1", "W-2"], start=1):
            plc.write_registers(Reg.PART_ID_IN, encode_text(part), device_id=1)
            plc.write_coil(Coil.TRIGGER, True, device_id=1)
            qtbot.waitUntil(lambda: plc.read_holding_registers(0, count=1, device_id=1).registers[0] == n,
                            timeout=20000)
            registers = plc.read_holding_registers(0, count=Reg.PART_ID + PART_ID_REGISTERS, device_id=1).registers
            assert decode_text(registers[Reg.PART_ID:]) == part
            assert registers[Reg.VERDICT] == (1 if n == 1 else 3)   # image 1 is the bright (failing) one
            qtbot.waitUntil(lambda: plc.read_coils(0, count=10, device_id=1).bits[Coil.READY], timeout=10000)
    finally:
        plc.close()
    assert [r["frame_id"] for r in db_rows(home)] == ["W-1", "W-2"]


def test_a_simulated_genicam_camera_streams_into_the_window(qtbot, home):
    """The genicam wheel's simulated camera (a bouncing ball, 20 frames/s) through harvesters: the
    live view shows its frames and the engine inspects them, each logged with the camera's URL."""
    need_module("harvesters", "GenICam cameras need it: pip install -e '.[dev]'")
    need_module("genicam", "the simulated GenTL producer comes with the genicam wheel: pip install -e '.[dev]'")
    from inspector.sources import spec_for_path
    from tests.gui_helpers import db_rows

    url = "genicam://0?cti=viky&PixelFormat=Mono8"
    window, ctl = open_inspector(qtbot, home, lambda path, **overrides: SleepyDetector(0.05))
    load_model(qtbot, ctl)
    ctl.open_source(spec_for_path(url), autostart=True)
    try:
        qtbot.waitUntil(lambda: "fps in" in window.source_status.text(), timeout=20000)
        qtbot.waitUntil(lambda: ctl.reader.frames_read >= 20 and len(db_rows(home)) >= 5, timeout=30000)
        painted = window.live_view.paint_count
        qtbot.waitUntil(lambda: window.live_view.paint_count > painted, timeout=5000)
    finally:
        ctl.stop()
    rows = db_rows(home)
    assert {r["source"] for r in rows} == {f"stream {url}"} and {r["error"] for r in rows} == {""}
    assert len({r["frame_id"] for r in rows}) == len(rows)   # each part its own camera frame
    assert "genicam://0?cti=viky" in window.source_status.text()
