"""The training wizard: command lines (checked with the trainers' own parsers), the event stream,
the persisted job list, and the wizard end to end on a tiny generated dataset: a real torchrun
child, the live loss curve, stop and resume, evaluation, "Use this model", one inspected image.
Set INSPECTOR_SHOTS_DIR to keep the page screenshots (docs/wizard/ holds the committed ones)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.events import EventTail, StepProgress
from training.jobs import FINISHED, STOPPED, JobStore, TrainingJob, TrainingPlan, build_steps, suggested_threshold
from training.launch import GENERAL_VAE, SHIPPED_VAE
from tests.gui_helpers import TINY_VAE, open_inspector
from tests.test_gui_screenshots import save


def make_custom_data(root: Path, size: int = 64) -> tuple[Path, Path]:
    """A custom product: 6 good images; a test folder with 2 good and 2 'scratch' images with masks."""
    rng = np.random.default_rng(7)
    base = np.array([120, 110, 95])

    def texture():
        return np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)

    good, test = root / "good", root / "test"
    for folder in (good, test / "good", test / "scratch", test / "ground_truth" / "scratch"):
        folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(texture()).save(good / f"part_{i:02d}.png")
    for i in range(2):
        Image.fromarray(texture()).save(test / "good" / f"{i:03d}.png")
        img, mask = texture(), np.zeros((size, size), np.uint8)
        img[18 + 8 * i:28 + 8 * i, 16:40] = (235, 235, 30)
        mask[18 + 8 * i:28 + 8 * i, 16:40] = 255
        Image.fromarray(img).save(test / "scratch" / f"{i:03d}.png")
        Image.fromarray(mask).save(test / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return good, test


def _parse(step):
    """The step's argv parsed by the trainer it launches (so the wizard cannot build a command the
    trainer rejects)."""
    import importlib

    argv = step.argv
    if argv[1:3] == ["-m", "training.calibrate_runtime"]:   # one plain process
        module = importlib.import_module(argv[2])
        return argv[2], module.build_arg_parser().parse_args(argv[3:])
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", argv[4]]
    assert argv[4].startswith("--nproc_per_node=") and argv[5] == "-m"
    module = importlib.import_module(argv[6])
    return argv[6], module.build_arg_parser().parse_args(argv[7:])


def test_command_lines_parse_with_the_trainers_own_parsers(tmp_path):
    plan = TrainingPlan(name="m1", dataset="mvtec", data_dir=str(tmp_path / "mvtec"), category="all",
                        detector="deco-diff", model_size="UNet_T", epochs=40, batch_size=8, lr=2e-4, mask_ratio=0.6,
                        image_size=288, center_size=256, latent_crop=16, device="cpu", nproc=2, train_vae=True,
                        vae_epochs=5, train_classifier=True, classifier_epochs=3, output_dir=str(tmp_path / "out"))
    steps = build_steps(plan, classes=3, has_test_images=True)
    assert [s.kind for s in steps] == ["vae", "classifier", "detector", "calibrate", "runtime", "evaluate"]
    job = tmp_path / "out" / "m1"
    parsed = dict(_parse(s) for s in steps)
    vae, clf = parsed["training.train_vae"], parsed["training.train_classifier"]
    assert vae.out == job / "vae" and vae.epochs == 5 and vae.resume == "auto" and vae.batch_size == 8
    assert vae.init == str(SHIPPED_VAE) and vae.lr is None   # fine-tuned from the shipped VAE at its fine-tuning rate
    assert clf.out == job / "classifier" and clf.epochs == 3 and clf.dataset == "mvtec"
    det = parsed["training.train_deco_diff"]
    assert (det.model_size, det.epochs, det.global_batch_size, det.lr, det.mask_ratio) == ("UNet_T", 40, 8, 2e-4, 0.6)
    assert det.vae == str(job / "vae") and det.classifier == job / "classifier" and det.latent_crop == 16
    assert det.experiment_dir == job / "detector" and det.resume == "auto" and det.device == "cpu"
    assert det.events == job / "events" / "detector.jsonl" and det.warmup_epochs == 2
    cal = parsed["training.calibrate_scores"]
    assert cal.model == job / "detector" / "model" and cal.split == "test" and cal.dataset == "mvtec"
    ev = parsed["training.evaluate"]
    assert ev.record and ev.model == str(job / "detector" / "model") and ev.out == job / "evaluation"
    run = parsed["training.calibrate_runtime"]   # calibration images only; the machine default decides the runtime
    assert run.model == job / "detector" / "model" and run.images_only and run.runtime is None
    assert all(s.argv[4] == ("--nproc_per_node=1" if s.kind == "calibrate" else "--nproc_per_node=2")
               for s in steps if s.kind != "runtime")
    fixed = build_steps(TrainingPlan(**{**plan.to_dict(), "runtime": "openvino int8"}), classes=3, has_test_images=True)
    run = dict(_parse(s) for s in fixed)["training.calibrate_runtime"]
    assert (run.runtime, run.precision) == ("openvino", "int8")

    # DiAD on a VAE folder, one category of several: no classifier, no mask ratio, train_diad
    diad = TrainingPlan(**{**plan.to_dict(), "detector": "diad", "model_size": "DiAD_T", "vae": str(tmp_path / "vae"),
                           "train_vae": False, "category": "wood", "latent_crop": 0, "nproc": 1})
    steps = build_steps(diad, classes=3, has_test_images=False)
    assert [s.kind for s in steps] == ["detector", "runtime"]
    module, args = _parse(steps[0])
    assert module == "training.train_diad" and args.model_size == "DiAD_T" and args.object_category == "wood"
    assert "--mask-ratio" not in steps[0].argv and args.vae == str(tmp_path / "vae")

    # a custom folder: the test folder goes to the detector and the evaluation; a classifier needs categories
    folder = TrainingPlan(**{**plan.to_dict(), "dataset": "folder", "test_dir": str(tmp_path / "t"), "nproc": 1})
    steps = build_steps(folder, classes=1, has_test_images=True)
    assert [s.kind for s in steps] == ["vae", "detector", "runtime", "evaluate"]
    assert _parse(steps[1])[1].test_dir == tmp_path / "t" and _parse(steps[3])[1].test_dir == tmp_path / "t"


def test_plan_problems_name_what_is_wrong(tmp_path):
    (tmp_path / "data").mkdir()
    good = TrainingPlan(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), batch_size=8, nproc=2)
    assert good.problems() == []
    bad = TrainingPlan(**{**good.to_dict(), "batch_size": 9, "center_size": 250, "model_size": "DiAD_T",
                          "name": "a/b", "train_vae": False})
    text = " | ".join(bad.problems())
    for part in ("divisible by the 2 processes", "multiple of 32", "not a deco-diff model size",
                 "plain folder name"):
        assert part in text
    # no VAE chosen and none to fine-tune: the detector trains on the VAE shipped with the app
    steps = build_steps(TrainingPlan(**{**good.to_dict(), "train_vae": False}), classes=1, has_test_images=False)
    assert [s.kind for s in steps] == ["detector", "runtime"]
    assert steps[0].argv[steps[0].argv.index("--vae") + 1] == str(SHIPPED_VAE)


def test_event_tail_waits_for_whole_lines_and_progress_follows_a_resume(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []
    path.write_text('{"event": "started", "epochs": 4, "start_epoch": 0, "steps_per_epoch": 2}\n{"event": "st')
    got = tail.read()
    assert [e["event"] for e in got] == ["started"]
    with open(path, "a") as f:
        f.write('ep", "epoch": 1, "step": 1, "loss": 0.5, "images_per_s": 3.0}\nnot json\n')
        for step, loss in ((2, 0.4), (3, 0.3)):
            f.write(json.dumps({"event": "step", "epoch": 1 + (step - 1) // 2, "step": step, "loss": loss}) + "\n")
        f.write(json.dumps({"event": "epoch", "epoch": 1, "epochs": 4, "loss": 0.45, "eta_s": 30}) + "\n")
        f.write(json.dumps({"event": "checkpoint", "epoch": 1, "path": "ck/last.pt", "model_dir": "m"}) + "\n")
        f.write(json.dumps({"event": "stopped", "epoch": 1}) + "\n")
    prog = StepProgress("detector")
    for ev in got + tail.read():
        prog.feed(ev)
    assert tail.bad_lines == 1
    assert prog.curve == [(0.5, 0.5), (1.0, 0.4), (1.5, 0.3)] and prog.epoch_curve == [(1, 0.45)]
    assert prog.outcome == "stopped" and prog.checkpoint_epoch == 1 and prog.images_per_s == 3.0
    # the resumed run starts again after epoch 1: the points it will redo are dropped
    prog.feed({"event": "started", "epochs": 4, "start_epoch": 1, "steps_per_epoch": 2})
    assert prog.curve == [(0.5, 0.5), (1.0, 0.4)] and prog.outcome == ""
    assert suggested_threshold({"suggested_threshold": {"f1_optimal": None, "good_quantile": 0.21}}) == 0.21


def test_a_job_running_when_the_app_closed_comes_back_resumable(tmp_path):
    plan = TrainingPlan(name="j", data_dir=str(tmp_path), output_dir=str(tmp_path / "out"), vae=str(tmp_path))
    job = TrainingJob(plan, build_steps(plan, has_test_images=False), state="running", step=0)
    job.steps[0].events.parent.mkdir(parents=True)
    job.steps[0].events.write_text(json.dumps({"event": "step", "epoch": 1, "step": 1, "loss": 0.25}) + "\n")
    store = JobStore(tmp_path / "jobs.json")
    store.save([job])
    (loaded,), problem = store.load()
    assert problem == "" and loaded.state == STOPPED and "Resume" in loaded.message
    assert loaded.progress_of("detector").curve == [(1.0, 0.25)] and loaded.plan == plan
    # the app was killed, not closed: its torchrun still runs, so Resume waits for it to end
    import subprocess

    from inspector.training_jobs import TrainingJobQueue

    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(plan.job_dir)])
    try:
        job.pid = orphan.pid
        store.save([job])
        queue = TrainingJobQueue(tmp_path / "jobs.json")
        (held,) = queue.jobs
        assert held.state == STOPPED and f"process {orphan.pid} is still running" in held.message
        queue.resume(held.id)
        assert held.state == STOPPED and "still running" in held.message
    finally:
        orphan.kill()
        orphan.wait()
    queue.resume(held.id)
    assert held.state != STOPPED  # queued, and started at once
    queue.shutdown(wait_ms=20000)
    (tmp_path / "jobs.json").write_text("{broken")
    jobs, problem = JobStore(tmp_path / "jobs.json").load()
    assert jobs == [] and "could not be read" in problem and not (tmp_path / "jobs.json").exists()


def test_register_model_copies_with_the_threshold_and_never_overwrites(tmp_path):
    from engine.checkpoint import read_model_json, write_model_json
    from training.jobs import register_model

    model = tmp_path / "run" / "model"
    (model / "vae").mkdir(parents=True)
    (model / "vae" / "config.json").write_text("{}")
    write_model_json(model, {"unet": {"size": "UNet_T"}, "settings": {"threshold": 0.3, "reverse_steps": 5}})
    first = register_model(model, tmp_path / "models", "line3", 0.4125)
    second = register_model(model, tmp_path / "models", "line3", None)
    assert (first.name, second.name) == ("line3", "line3-2") and (first / "vae" / "config.json").is_file()
    assert read_model_json(first)["settings"] == {"threshold": 0.4125, "reverse_steps": 5}
    assert read_model_json(second)["settings"]["threshold"] == 0.3
    assert read_model_json(first)["registered"]["from"] == str(model)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["line3", "line3-2"]


FAKE_STEP = r"""
import json, signal, sys, time
events, mode = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
def emit(**fields):
    with open(events, "a") as f:
        f.write(json.dumps(fields) + "\n")
emit(event="started", epochs=3, start_epoch=0, steps_per_epoch=1)
print("step console line", flush=True)
if mode == "fail":
    print("about to fail\rprogress 100%", flush=True)
    emit(event="error", message="ValueError: no good images")
    sys.exit(3)
for e in range(1, 4 if mode == "ok" else 10_000):
    emit(event="step", epoch=e, step=e, loss=1.0 / e)
    emit(event="epoch", epoch=e, epochs=3, loss=1.0 / e, eta_s=1)
    if stop:
        emit(event="checkpoint", epoch=e, path="ck/last.pt")
        emit(event="stopped", epoch=e)
        sys.exit(0)
    time.sleep(0.02 if mode == "ok" else 0.1)
emit(event="finished", epoch=3, model_dir="m")
"""


def _fake_steps(job_dir: Path, *modes: str):
    from training.jobs import TrainingStep

    steps = []
    for i, mode in enumerate(modes):
        kind = ("detector", "evaluate")[i]
        events = job_dir / "events" / f"{kind}.jsonl"
        steps.append(TrainingStep(kind, [sys.executable, "-c", FAKE_STEP, str(events), mode], events,
                                  job_dir / "logs" / f"{kind}.log", job_dir / kind))
    return steps


def test_queue_runs_jobs_in_turn_reports_failures_and_stops_gracefully(qtbot, tmp_path):
    from inspector.training_jobs import TrainingJobQueue
    from training.jobs import FAILED

    from inspector.job_monitor import RunPage

    queue = TrainingJobQueue(tmp_path / "jobs.json", poll_ms=50)
    from inspector.app import apply_style
    from PySide6.QtWidgets import QApplication

    apply_style(QApplication.instance())
    page = RunPage()
    qtbot.addWidget(page)
    page.attach(queue)
    page.resize(1180, 640)
    page.show()
    try:
        _run_three_jobs(qtbot, queue, tmp_path)
        # the failed job's monitor: the reason, its last log lines, Resume offered
        page.select(queue.jobs[1].id)
        monitor = page.monitor
        assert "ValueError: no good images" in monitor.message.text() and monitor.resume_button.isEnabled()
        assert page.jobs.count() == 3 and "failed" in page.jobs.item(1).text()
        shots = tmp_path / "shots"
        shots.mkdir()
        _shoot(page, shots, "9-queue-failed.png")
    finally:
        queue.shutdown(wait_ms=20000)
    saved = json.loads((tmp_path / "jobs.json").read_text())
    assert [j["state"] for j in saved["jobs"]] == [FINISHED, FAILED, STOPPED]


def _run_three_jobs(qtbot, queue, tmp_path):
    from training.jobs import FAILED, QUEUED

    plans = [TrainingPlan(name=n, output_dir=str(tmp_path)) for n in ("a", "b", "c")]
    a = queue.submit(plans[0], _fake_steps(tmp_path / "a", "ok", "ok"))
    b = queue.submit(plans[1], _fake_steps(tmp_path / "b", "fail"))
    c = queue.submit(plans[2], _fake_steps(tmp_path / "c", "slow"))
    assert a.state == "running" and b.state == QUEUED and c.state == QUEUED
    qtbot.waitUntil(lambda: c.state == "running" and bool(c.progress_of("detector").curve), timeout=20000)
    assert a.state == FINISHED and a.step == 2 and a.progress_of("detector").curve == [(1.0, 1.0), (2.0, 0.5),
                                                                                          (3.0, 1 / 3)]
    assert b.state == FAILED and "ValueError: no good images" in b.message and "progress 100%" in b.message
    assert "step console line" in (tmp_path / "b" / "logs" / "detector.log").read_text()
    queue.stop(c.id)
    assert c.state == "stopping"
    qtbot.waitUntil(lambda: c.state == STOPPED, timeout=20000)
    assert "checkpoint kept (ck/last.pt)" in c.message
    queue.resume(c.id)
    qtbot.waitUntil(lambda: c.state == "running" and len(c.progress_of("detector").curve) >= 1, timeout=20000)
    queue.shutdown(wait_ms=20000)
    assert c.state == STOPPED and c.progress_of("detector").outcome == "stopped"


def _shoot(widget, shots: Path, name: str) -> None:
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()  # let pending layout requests settle before the grab
    widget.repaint()
    image = save(widget, shots, name)
    assert image.std() > 10, f"{name} is blank"


def test_data_page_counts_an_mvtec_root_and_names_a_wrong_layout(qtbot, tmp_path):
    """The bundled demo data as an MVTec AD root: one row per category, thumbnails, the classifier
    offered for all categories; a wrong layout or a single category folder is refused with a reason."""
    from inspector.app import apply_style
    from inspector.paths import DEMO_DATA_DIR
    from inspector.training_wizard import TrainingWizard
    from PySide6.QtWidgets import QApplication
    from training.datasets import describe_dataset

    apply_style(QApplication.instance())
    wiz = TrainingWizard(tmp_path / "runs")
    qtbot.addWidget(wiz)
    wiz.show()
    data = wiz.data_page
    data.set_kind("mvtec")
    data.data_edit.setText(str(DEMO_DATA_DIR))
    qtbot.waitUntil(data.isComplete, timeout=30000)
    cats = describe_dataset(DEMO_DATA_DIR)["categories"]
    assert len(cats) >= 2 and data.table.rowCount() == len(cats)
    assert [data.table.item(r, 0).text() for r in range(len(cats))] == list(cats)
    assert data.thumbs.count() == 8 + 1 and not data.test_edit.isEnabled()
    shots = tmp_path / "shots"
    shots.mkdir()
    _shoot(wiz, shots, "1b-data-mvtec.png")
    wiz.next()
    assert wiz.model_page.category.count() == len(cats) + 1  # all, then each category
    wiz.next()
    wiz.next()
    assert wiz.vae_page.classifier.isEnabled() and wiz.vae_page.classifier.isChecked()
    _shoot(wiz, shots, "4b-vae-classifier.png")
    wiz.back()
    wiz.back()
    wiz.model_page.category.setCurrentIndex(1)  # one category: no classifier
    wiz.next()
    wiz.next()
    assert not wiz.vae_page.classifier.isEnabled() and not wiz.vae_page.classifier.isChecked()
    # the general-purpose VAE: the plan names its folder and nothing is trained for it
    assert wiz.plan().vae == "" and not wiz.plan().train_vae
    wiz.vae_page.general.setChecked(True)
    assert wiz.plan().vae == str(GENERAL_VAE) and not wiz.plan().train_vae and wiz.vae_page.isComplete()
    wiz.vae_page.shipped.setChecked(True)
    wiz.back()
    wiz.back()
    wiz.back()
    for kind, folder, reason in (("visa", DEMO_DATA_DIR, "looks like a mvtec dataset, not visa"),
                                 ("mvtec", DEMO_DATA_DIR / list(cats)[0], "looks like a single MVTec category")):
        data.set_kind(kind)
        data.data_edit.setText(str(folder))
        qtbot.waitUntil(lambda: bool(data.error), timeout=30000)
        assert reason in data.error and reason in data.status.text() and not data.isComplete()


@pytest.mark.slow
def test_wizard_end_to_end_train_stop_resume_evaluate_use(qtbot, home, tmp_path):
    from engine.vae import create_vae, save_vae
    from inspector.app import apply_style
    from inspector.sources import SourceSpec
    from PySide6.QtWidgets import QApplication

    apply_style(QApplication.instance())
    good, test = make_custom_data(tmp_path / "data")
    torch.manual_seed(0)
    save_vae(create_vae(TINY_VAE), tmp_path / "vae")
    shots = tmp_path / "shots"
    shots.mkdir()
    window, ctl = open_inspector(qtbot, home, loader=None)
    window.act_training_wizard.trigger()
    wiz = ctl.training.wizard
    qtbot.waitUntil(wiz.isVisible)

    data = wiz.data_page
    data.set_kind("folder")
    data.data_edit.setText(str(tmp_path / "data"))  # the test folder inside the good images: refused
    data.test_edit.setText(str(test))
    qtbot.waitUntil(lambda: bool(data.error), timeout=20000)
    assert "inside the folder of good images" in data.error and not data.isComplete()
    data.data_edit.setText(str(good))
    qtbot.waitUntil(data.isComplete, timeout=20000)
    assert data.table.rowCount() == 1 and [data.table.item(0, c).text() for c in (1, 2, 3)] == ["6", "2", "2"]
    assert data.thumbs.count() == 6 + 1  # six thumbnails and the stretch
    _shoot(wiz, shots, "1-data.png")
    wiz.next()

    m = wiz.model_page
    assert m.category.count() == 1 and m.size.currentText() == "UNet_T"
    assert m.recipe_kind() == "fit" and not m.epochs.isEnabled()  # the automatic recipe is the default
    m.recipe.setCurrentIndex(m.recipe.findData("manual"))  # this test drives the manual recipe
    m.detector.setCurrentIndex(m.detector.findData("diad"))  # issue 7: DiAD is a choice of the wizard
    assert [m.size.itemText(i) for i in range(m.size.count())] == ["DiAD_T", "DiAD_S", "DiAD_M"]
    assert not m.mask_ratio.isEnabled() and "training.train_diad" in next(s for s in wiz.steps() if s.kind == "detector").argv
    _shoot(wiz, shots, "2b-model-diad.png")
    m.detector.setCurrentIndex(m.detector.findData("deco-diff"))
    assert m.size.currentText() == "UNet_T" and m.mask_ratio.isEnabled()
    m.epochs.setValue(16)
    m.batch.setValue(4)
    m.lr.setValue(2e-4)
    m.image_size.setValue(64)
    m.center_size.setValue(64)
    _shoot(wiz, shots, "2-model.png")
    wiz.next()
    dev = wiz.devices_page
    dev.cpu.setChecked(True)
    dev.nproc.setValue(1)
    dev.threads.setValue(1)
    _shoot(wiz, shots, "3-devices.png")
    wiz.next()
    v = wiz.vae_page
    assert not v.classifier.isEnabled()  # one category: no classifier
    assert v.shipped.isChecked() and not v.vae_epochs.isEnabled() and v.isComplete()   # the shipped VAE by default
    v.use_folder.setChecked(True)
    v.vae_edit.setText(str(tmp_path / "nowhere"))
    assert not v.isComplete() and "does not exist" in v.status.text()
    v.vae_edit.setText(str(tmp_path / "vae"))
    assert v.isComplete()
    _shoot(wiz, shots, "4-vae.png")
    wiz.next()
    out = wiz.output_page
    out.output_edit.setText(str(tmp_path / "runs"))
    out.name_edit.setText("tiny-wizard")
    out.ckpt_every.setValue(8)
    assert out.evaluate.isEnabled() and out.evaluate.isChecked()
    _shoot(wiz, shots, "5-output.png")
    wiz.next()
    summary = wiz.summary_page.text.toPlainText()
    assert "-m torch.distributed.run --standalone --nproc_per_node=1 -m training.train_deco_diff" in summary
    assert "-m training.evaluate" in summary and "OMP_NUM_THREADS=1" in summary
    runtime = wiz.summary_page.runtime_combo   # the last step: how the model will run
    assert runtime.currentData() == "" and "--runtime" not in summary
    runtime.setCurrentIndex(runtime.findData("torch bf16"))
    assert "-m training.calibrate_runtime" in wiz.summary_page.text.toPlainText()
    assert "--runtime torch --precision bf16" in wiz.summary_page.text.toPlainText()
    _shoot(wiz, shots, "6-summary.png")
    wiz.next()  # the commit button: the job is queued and starts

    queue = ctl.training.queue
    assert wiz.currentId() == wiz.RUN and len(queue.jobs) == 1
    job = queue.jobs[0]
    monitor = wiz.run_page.monitor
    assert monitor.job is job
    assert [s.kind for s in job.steps] == ["detector", "runtime", "evaluate"]
    # a real torchrun child: its step events fill the loss curve
    qtbot.waitUntil(lambda: len(job.progress_of("detector").curve) >= 3, timeout=120000)
    assert job.state == "running" and job.pid
    assert len(monitor.loss_line.getData()[0]) >= 3 and monitor.stats["speed"].text() != "–"
    _shoot(wiz, shots, "7-run.png")

    monitor.stop_button.click()
    qtbot.waitUntil(lambda: job.state == STOPPED, timeout=90000)
    stopped_at = job.progress_of("detector").checkpoint_epoch
    assert 0 < stopped_at < 16 and "checkpoint kept" in job.message
    assert monitor.resume_button.isEnabled()
    from engine.checkpoint import safe_torch_load

    assert safe_torch_load(tmp_path / "runs" / "tiny-wizard" / "detector" / "checkpoints" / "last.pt")["epoch"] == stopped_at

    monitor.resume_button.click()
    qtbot.waitUntil(lambda: job.state == FINISHED, timeout=240000)
    events = [json.loads(line) for line in job.steps[0].events.read_text().splitlines()]
    starts = [e for e in events if e["event"] == "started"]
    assert [e["start_epoch"] for e in starts] == [0, stopped_at]
    assert events[-1]["event"] == "finished" and events[-1]["epoch"] == 16
    metrics = job.metrics
    assert metrics is not None and metrics["categories"]["custom"]["n_defect"] == 2
    assert monitor.metrics.rowCount() == 2 and monitor.metrics.item(1, 0).text() == "mean"
    threshold = suggested_threshold(metrics)
    assert threshold is not None and monitor.threshold.value() == pytest.approx(threshold, abs=1e-4)
    monitor.tabs.setCurrentIndex(1)
    _shoot(wiz, shots, "8-finished.png")

    # "Use this model": copied into the model picker with its threshold, opened, and it inspects an image
    monitor.use_button.click()
    registered = home / "models" / "tiny-wizard"
    qtbot.waitUntil(lambda: ctl.model_info is not None and ctl.model_path == str(registered), timeout=60000)
    meta = json.loads((registered / "model.json").read_text())
    assert meta["settings"]["threshold"] == pytest.approx(round(monitor.threshold.value(), 6))
    assert (meta["settings"]["runtime"], meta["settings"]["precision"]) == ("torch", "bf16")
    assert (registered / "calibration.npz").is_file() and ctl.model_info.runtime == "torch bf16"
    assert ctl.context.fail_threshold == pytest.approx(meta["settings"]["threshold"])
    assert str(registered) in [window.controls.model_combo.itemData(i)
                               for i in range(window.controls.model_combo.count())]
    ctl.open_source(SourceSpec("image", str(test / "scratch" / "000.png")))
    qtbot.waitUntil(lambda: ctl.last_inspection is not None, timeout=60000)
    insp = ctl.last_inspection
    assert insp.error == "" and insp.verdict in ("pass", "review", "fail") and np.isfinite(insp.score)
    assert insp.model_id.startswith("tiny-wizard") or insp.model_id.startswith("detector")

    # the job list, curves and metrics come back after the app restarts
    from inspector.training_jobs import TrainingJobQueue

    again = TrainingJobQueue(home / "training" / "jobs.json")
    (restored,) = again.jobs
    assert restored.state == FINISHED and restored.registered == str(registered)
    assert restored.progress_of("detector").curve and restored.metrics == metrics
    again.shutdown()
