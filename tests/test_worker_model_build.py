"""Model work on the engine worker's QThread: the first-start runtime check (OpenVINO conversion,
NNCF int8 calibration), a switch to OpenVINO int8, and inspection in one CPU lane on the QThread
itself. Without a Python thread state kept for the QThread's life
(`inspector.worker.keep_python_thread_state`) the window aborted with "double free or corruption"
on a machine's first start and crashed with one lane on OpenVINO. The case runs in a child
process so that such a crash fails the test with its output instead of ending the test run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 240

_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal
    from engine import openvino_runtime as ovr
    from inspector.frame_queue import FrameQueue
    from inspection import Frame
    from inspector.worker import EngineWorker
    from tests.gui_helpers import make_tiny_detector

    work = Path(sys.argv[1])
    folder = work / "tiny"
    make_tiny_detector(ncls=1, threshold=0.5, batch_size=4).save(folder)
    rng = np.random.default_rng(0)
    ovr.CalibrationSet(rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8), np.zeros(6, dtype=np.int64),
                       held_out=2).save(folder)

    class Commands(QObject):
        load = Signal(str, object)
        settings = Signal(object)

    app = QCoreApplication([])
    commands = Commands()
    thread = QThread()
    worker = EngineWorker(FrameQueue(), work / "log.sqlite", work / "archive")
    worker.moveToThread(thread)
    thread.start()
    commands.load.connect(worker.load_model)
    commands.settings.connect(worker.apply_settings)

    def loaded(info):
        print("loaded", info.runtime, flush=True)
        commands.settings.emit({"runtime": "openvino", "precision": "int8", "lanes": 1})

    def applied(info):
        print("applied", info.runtime, "lanes", info.lanes, flush=True)
        rng = np.random.default_rng(1)
        for k in range(3):   # one lane: the QThread runs the model itself
            worker.frames.put(Frame(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8), "camera", f"cam-{k}", k,
                                    live=True))

    def inspected(part):
        print("inspected", part.frame_id, ("error: " + part.error) if part.error else "ok", flush=True)
        if part.frame_id == "cam-2" or part.error:
            QTimer.singleShot(500, app.quit)

    worker.model_loaded.connect(loaded)
    worker.settings_applied.connect(applied)
    worker.inspected.connect(inspected)
    worker.model_failed.connect(lambda text: (print("failed", text, flush=True), app.quit()))
    worker.problem.connect(lambda text: print("problem", text, flush=True))
    QTimer.singleShot(0, lambda: commands.load.emit(str(folder), None))
    app.exec()
    thread.quit()
    thread.wait()
    print("closed", flush=True)
""")


def test_first_start_check_then_openvino_int8_in_one_lane_on_the_worker_thread(tmp_path):
    """One child process: the machine default decided on the QThread (every candidate converted and
    timed), then a switch to OpenVINO int8 in one lane and three live frames inspected there."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DECO_INSPECTOR_HOME=str(tmp_path / "home"))
    env.pop("DECO_INSPECTOR_RUNTIME", None)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    out = done.stdout
    assert done.returncode == 0, f"worker process ended with {done.returncode}:\n{out}\n{done.stderr[-3000:]}"
    assert "loaded" in out and "failed" not in out and "applied openvino int8 lanes 1" in out
    assert "inspected cam-2 ok" in out and "closed" in out
