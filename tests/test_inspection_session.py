"""The inspection core without Qt: one session with a fake model, checked on its verdicts, its
results-log rows, its overlay files and what its listeners receive."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pytest

from inspection import (ERROR, FAIL, PASS, REVIEW, Frame, Inspection, InspectionListener, InspectionRecipe,
                        InspectionSession, Roi)
from inspection.outputs import CsvWriter, JsonWriter
from inspection.results_log import ResultsLog, ResultsLogError
from inspection.session import overlay_file_name

REFUSED = 7   # a frame whose pixels are all this value makes the fake model raise


@dataclass
class _Result:
    score: float
    anomaly_map: np.ndarray
    category: str = "part"
    category_source: str = "pinned"
    category_confidence: float | None = None
    reconstruction: np.ndarray | None = None
    timings: dict = field(default_factory=lambda: {"unet": 2.0, "maps": 1.0})

    @property
    def latency_ms(self) -> float:
        return sum(self.timings.values())


@dataclass
class _Settings:
    batch_size: int = 4


class FakeModel:
    """Scores a frame by its mean pixel value / 100 (so a frame of 40s scores 0.4); its map is that
    score everywhere. A batch holding a REFUSED frame fails as a whole; alone, that frame fails again.
    A frame of 255s scores NaN."""

    model_id = "fake-1"

    def __init__(self):
        self.settings = _Settings()
        self.calls: list[int] = []

    def predict(self, images, category=None):
        self.calls.append(len(images))
        if any(int(img.max()) == REFUSED for img in images):
            raise RuntimeError("the engine refused this frame")
        out = []
        for img in images:
            score = float("nan") if int(img.min()) == 255 else float(img.mean()) / 100.0
            out.append(_Result(score, np.full(img.shape[:2], score, np.float32), category=category or "part"))
        return out


class Recorder:
    def __init__(self):
        self.parts: list[Inspection] = []
        self.summaries = []

    def on_inspection(self, inspection: Inspection) -> None:
        self.parts.append(inspection)

    def on_session_end(self, summary) -> None:
        self.summaries.append(summary)


class Broken(Recorder):
    def on_inspection(self, inspection: Inspection) -> None:
        raise OSError("the line is down")


def frame(value: int | None, index: int, error: str = "") -> Frame:
    rgb = None if value is None else np.full((30, 40, 3), value, np.uint8)
    return Frame(rgb, "cam1", f"part-{index}", index, captured=1.0, error=error, file=f"/data/part-{index}.png")


def rows(db) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM parts ORDER BY id")]
    conn.close()
    return out


def test_a_session_judges_logs_and_hands_records_to_its_listeners(tmp_path):
    model, problems, recorder = FakeModel(), [], Recorder()
    log = ResultsLog(tmp_path / "results.sqlite")
    recipe = InspectionRecipe(fail_threshold=0.5, review_threshold=0.3, recipe="bottle-A", view_max_side=0)
    session = InspectionSession(model, recipe, results_log=log, overlay_dir=tmp_path / "overlays",
                                on_problem=lambda text, severity: problems.append((severity, text)),
                                clock=lambda: 5.0)
    session.subscribe(recorder)
    session.subscribe(Broken())
    frames = [frame(10, 0), frame(40, 1), frame(80, 2), frame(None, 3, error="truncated file"),
              frame(REFUSED, 4), frame(255, 5), frame(30, 6)]
    summary = session.run(frames)
    final = session.close()
    session.close()  # a second close does not end the session twice

    expected = [PASS, REVIEW, FAIL, ERROR, ERROR, ERROR, PASS]  # 0.3 exactly is not above the review threshold
    assert [p.verdict for p in recorder.parts] == expected
    assert [p.frame_id for p in recorder.parts] == [f.frame_id for f in frames]
    # batches of 4 frames: the 3 readable ones of the first, then the second, which the refused frame
    # sinks, retried one frame at a time
    assert model.calls == [3, 3, 1, 1, 1]
    refused, nan, unreadable = recorder.parts[4], recorder.parts[5], recorder.parts[3]
    assert refused.error == "inspection failed: the engine refused this frame" and refused.score is None
    assert nan.error.startswith("the engine returned an invalid score") and unreadable.error == "truncated file"
    assert all(p.model_id == "fake-1" and p.recipe == "bottle-A" and p.inspected == 5.0 for p in recorder.parts)
    assert all(p.fail_threshold == 0.5 and p.review_threshold == 0.3 for p in recorder.parts)
    assert recorder.parts[1].score == pytest.approx(0.4) and recorder.parts[1].latency_ms == 3.0

    logged = rows(tmp_path / "results.sqlite")
    assert [r["verdict"] for r in logged] == expected
    assert [r["id"] for r in logged] == [p.part_id for p in recorder.parts]
    assert logged[2]["score"] == pytest.approx(0.8) and logged[2]["threshold"] == 0.5
    assert logged[2]["review_threshold"] == 0.3 and logged[2]["recipe"] == "bottle-A"
    assert logged[3]["error"] == "truncated file" and logged[3]["score"] is None

    overlays = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert overlays == ["000000_part-0_pass.png", "000001_part-1_review.png", "000002_part-2_fail.png",
                        "000006_part-6_pass.png"]
    assert recorder.parts[2].overlay_path == logged[2]["overlay_path"] == str(tmp_path / "overlays" / overlays[2])

    assert summary.counts == {PASS: 2, REVIEW: 1, FAIL: 1, ERROR: 3} and summary.inspected == 4
    assert summary.yield_percent == 50.0 and summary.median_latency_ms == 3.0
    assert recorder.summaries == [final]
    # the broken listener is reported once per part and never stops the session
    assert sum("Output Broken failed: OSError: the line is down" in t for _, t in problems) == len(frames)
    for part in recorder.parts:
        json.dumps(part.to_dict(), allow_nan=False)
    assert nan.to_dict()["score"] is None and recorder.parts[0].to_dict()["file"] == "/data/part-0.png"
    log.close()


def test_display_copies_the_roi_and_the_log_refusing_a_row(tmp_path):
    model, problems, recorder = FakeModel(), [], Recorder()
    log = ResultsLog(tmp_path / "results.sqlite")
    real_add, faults = log.add, [1]

    def add(**fields):
        if faults[0]:
            faults[0] -= 1
            raise ResultsLogError("disk I/O error")
        return real_add(**fields)

    log.add = add
    recipe = InspectionRecipe(fail_threshold=0.5, review_threshold=0.5, roi=Roi(0.5, 0.0, 1.0, 1.0), view_max_side=20)
    session = InspectionSession(model, recipe, results_log=log,
                                on_problem=lambda text, severity: problems.append((severity, text)))
    session.subscribe(recorder)
    big = Frame(np.full((30, 40, 3), 60, np.uint8), "cam1", "a", 0)
    session.inspect([big, frame(20, 1)])
    first, second = recorder.parts
    assert first.verdict == FAIL and first.part_id is None and first.log_error == "disk I/O error"
    assert ("error", "Result NOT logged: disk I/O error") in problems
    assert second.part_id is not None and session.summary().not_logged == 1
    # the display copy fits 20 px; the map covers the right half (the ROI) only
    assert first.view_frame.shape == (15, 20, 3) and first.view_roi == (10, 0, 10, 15)
    assert first.view_map[:, :10].max() == 0.0 and first.view_map[:, 10:].min() == pytest.approx(0.6)
    log.close()


def test_file_outputs_are_listeners(tmp_path):
    session = InspectionSession(FakeModel(), InspectionRecipe(fail_threshold=0.5, review_threshold=0.5,
                                                              view_max_side=0))
    csv_writer, json_writer = CsvWriter(tmp_path / "rows.csv"), JsonWriter(tmp_path / "rows.json")
    assert isinstance(csv_writer, InspectionListener) and isinstance(json_writer, InspectionListener)
    session.subscribe(csv_writer)
    session.subscribe(json_writer)
    json_writer.extra_summary = {"device": "cpu"}
    session.run([frame(10, 0), frame(90, 1)])
    session.close()
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert lines[0].startswith("index,file,frame,verdict,score") and len(lines) == 3
    document = json.loads((tmp_path / "rows.json").read_text())
    assert [r["verdict"] for r in document["rows"]] == [PASS, FAIL]
    assert document["summary"]["fail"] == 1 and document["summary"]["device"] == "cpu"
    with pytest.raises(TypeError):
        session.subscribe(object())


def test_overlay_names_fit_the_file_system():
    long = Frame(None, "inspect", "x", 12, file="/d/" + "ü" * 200 + ".png", frame_number=3)
    name = overlay_file_name(long, FAIL)
    assert name.startswith("000012_") and name.endswith("_f000003_fail.png") and len(name.encode()) < 255


class StagedFakeModel(FakeModel):
    """FakeModel's scores through the three stages of engine.runtime.StagedModel; a frame of
    REFUSED fails in the network stage."""

    def __init__(self):
        super().__init__()
        self.stages: list[str] = []

    def prepare(self, images, category=None):
        self.stages.append("prepare")
        return {"images": list(images), "category": category}

    def run_networks(self, prepared):
        self.stages.append("networks")
        if any(int(img.max()) == REFUSED for img in prepared["images"]):
            raise RuntimeError("the networks refused this frame")
        prepared["results"] = FakeModel.predict(self, prepared["images"], prepared["category"])
        return prepared

    def finish(self, prepared):
        self.stages.append("finish")
        return prepared["results"]


@pytest.mark.parametrize("model_cls", [StagedFakeModel, FakeModel])
def test_staged_inspection_records_what_inspect_records(tmp_path, model_cls):
    recipe = InspectionRecipe(fail_threshold=0.5, review_threshold=0.3, view_max_side=0)
    outcomes = {}
    for way in ("inspect", "staged"):
        model, recorder = model_cls(), Recorder()
        session = InspectionSession(model, recipe, results_log=ResultsLog(tmp_path / f"{way}.sqlite"),
                                    clock=lambda: 5.0)
        session.subscribe(recorder)
        for i, value in enumerate((10, 40, REFUSED, None, 80)):
            frames = [frame(value, i)]
            if way == "inspect":
                session.inspect(frames)
            else:
                staged = session.begin(frames, recipe)     # the worker's thread
                staged.run_networks()                      # the network thread
                session.record(staged.frames, staged.finish(), staged.recipe)
        outcomes[way] = [(p.verdict, p.score, p.error) for p in recorder.parts]
        if way == "staged" and model_cls is StagedFakeModel:
            # the unreadable frame never reaches the model; the refused one stops after its network stage
            assert model.stages == ["prepare", "networks", "finish"] * 2 + ["prepare", "networks"] + \
                ["prepare", "networks", "finish"]
    assert [o[0] for o in outcomes["staged"]] == [PASS, REVIEW, ERROR, ERROR, FAIL]
    assert outcomes["staged"][:2] == outcomes["inspect"][:2] and outcomes["staged"][4] == outcomes["inspect"][4]
    assert "refused this frame" in outcomes["staged"][2][2]
