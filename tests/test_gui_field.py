"""The window with data and settings as they come in the field: a folder of mixed names (numbered,
prefixed, unicode, upper case, not UTF-8, a subfolder with a space), the heatmap only above the
review level with the full map as an option, and a damaged settings file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.imageio import list_images, printable
from inspector.sources import SourceSpec
from tests.gui_helpers import db_rows, load_model, open_inspector
from tests.test_file_names import MUST_SHOW_ORDER, make_must_show_folder
from tests.test_gui_window import run_to_end, sleepy_loader

NOT_UTF8_NAME = b"scratch \xff 3.png"


def test_the_window_inspects_a_folder_of_mixed_names_in_natural_order(qtbot, home, tmp_path):
    folder = make_must_show_folder(tmp_path)
    (folder / os.fsdecode(NOT_UTF8_NAME)).write_bytes((folder / "2.png").read_bytes())
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    ctl.open_source(SourceSpec("folder", str(folder)))
    run_to_end(qtbot, ctl)
    rows = db_rows(home)
    assert [r["frame_id"] for r in rows] == [printable(p) for p in list_images(folder)]
    assert len(rows) == len(MUST_SHOW_ORDER) + 1 and all(r["verdict"] != "error" for r in rows)
    shown = [r["frame_id"][len(str(folder)) + 1:] for r in rows]
    assert [n for n in shown if n in MUST_SHOW_ORDER] == MUST_SHOW_ORDER
    assert "scratch \\xff 3.png" in shown
    assert window.counters.text("inspected") == str(len(rows))


def test_full_heatmap_option_reaches_the_view_the_settings_and_the_archive(qtbot, home, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.full((40, 50, 3), 230, np.uint8)).save(folder / "bright.png")  # scores 0.9: fail
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    load_model(qtbot, ctl)
    assert not ctl.display.full_heatmap and not window.act_full_heatmap.isChecked()   # default: above review only
    jobs = []
    submit = ctl.worker.archive.submit
    ctl.worker.archive.submit = lambda job: (jobs.append(job), submit(job))[1]

    window.act_full_heatmap.trigger()
    assert ctl.display.full_heatmap and window.controls.full_heatmap_check.isChecked() and ctl.context.full_heatmap
    ctl.set_thresholds(0.5, 0.4)
    ctl.open_source(SourceSpec("folder", str(folder)))
    run_to_end(qtbot, ctl)
    qtbot.waitUntil(lambda: len(jobs) == 1)
    assert jobs[0].full_heatmap and jobs[0].review_threshold == pytest.approx(0.4)

    window.controls.full_heatmap_check.setChecked(False)
    assert not ctl.display.full_heatmap and not window.act_full_heatmap.isChecked() and not ctl.context.full_heatmap
    window.act_full_heatmap.trigger()
    ctl.save_settings()
    assert ctl.settings.value("display/full_heatmap") in (True, "true")


DAMAGED_SETTINGS = """[display]
opacity=a lot
repaint_hz=30.5
colormap=no such map
full_heatmap=maybe
[thresholds]
fail=high
review=nan
model={model}
[window]
geometry=garbage
state=1, 2, 3
[source]
last={"kind": "folder", "target": 5
[model]
recent=@Invalid()
"""


def test_a_damaged_settings_file_falls_back_to_defaults(qtbot, home, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    home.mkdir(parents=True)
    (home / "settings.ini").write_text(DAMAGED_SETTINGS.replace("{model}", str(model)), encoding="utf-8")
    window, ctl = open_inspector(qtbot, home, sleepy_loader())
    ctl.restore(model=str(model))
    qtbot.waitUntil(lambda: ctl.model_info is not None, timeout=10000)
    assert ctl.display.opacity == 0.5 and ctl.display.repaint_hz == 30 and ctl.display.colormap == "jet"
    assert not ctl.display.full_heatmap
    assert np.isfinite(ctl.context.fail_threshold) and np.isfinite(ctl.context.review_threshold)
    assert ctl.source_spec is not None   # the demo images, since the saved source could not be read
