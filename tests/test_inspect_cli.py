"""`main.py inspect`: exit codes, CSV/JSON rows for every input (unreadable ones too), overlays."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.test_detector import make_detector

    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_detector(ncls=2, threshold=0.5).save(folder)
    return folder


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "parts"
    (folder / "sub dir").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / f"part_{i}.png")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(folder / "sub dir" / "gray ü.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is a text file")
    return folder


def run(*args, cwd=REPO):
    """The real command, in a subprocess."""
    return subprocess.run([sys.executable, "main.py", "inspect", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def run_here(capsys, *args):
    """The same command in this process (fast): (exit code, stdout, stderr)."""
    import main

    code = main.main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_rows_errors_overlays_and_exit_code(tiny_model, inputs, tmp_path):
    out_csv, out_json, overlays = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "ov"
    p = run(inputs, "--model", tiny_model, "--category", "part1", "--csv", out_csv, "--json", out_json,
            "--save-overlays", overlays, "--threshold", "0.0")
    assert p.returncode == 2, p.stderr  # three unreadable files
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 7
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["broken.jpg"]["verdict"] == "error" and "corrupt" in by_name["broken.jpg"]["error"]
    assert by_name["notes.png"]["verdict"] == "error" and "not an image" in by_name["notes.png"]["error"]
    assert by_name["empty.png"]["verdict"] == "error" and "empty" in by_name["empty.png"]["error"]
    good = [r for r in rows if r["verdict"] != "error"]
    assert len(good) == 4 and all(r["verdict"] == "fail" for r in good)  # threshold 0: everything fails
    assert all(r["category"] == "part1" and float(r["score"]) > 0 for r in good)
    assert all(Path(r["overlay"]).is_file() for r in good)
    assert len(list(overlays.glob("*.png"))) == 4
    overlay = np.asarray(Image.open(good[0]["overlay"]))
    assert overlay.shape == (60, 80, 3)
    doc = json.loads(out_json.read_text())
    assert doc["summary"]["error"] == 3 and doc["summary"]["fail"] == 4 and len(doc["rows"]) == 7
    assert "FAIL" in p.stdout and "ERROR" in p.stderr and "4 inspected" in p.stdout


def test_exit_codes_pass_and_fail(tiny_model, inputs, capsys):
    part = inputs / "part_0.png"
    assert run_here(capsys, part, "--model", tiny_model, "--category", "part0", "--threshold", "100")[0] == 0
    assert run_here(capsys, part, "--model", tiny_model, "--category", "part0", "--threshold", "0")[0] == 1


def test_video_frames_each_get_a_row(tiny_model, tmp_path, capsys):
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "v.json"
    code, _, err = run_here(capsys, video, "--model", tiny_model, "--category", "part0", "--threshold", "100",
                            "--json", out)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [r["frame"] for r in rows] == [0, 1, 2, 3, 4]


def test_bad_model_and_category_are_exit_2(tiny_model, inputs, tmp_path, capsys):
    code, _, err = run_here(capsys, inputs, "--model", tmp_path / "nothing")
    assert code == 2 and "cannot load model" in err and "nothing" in err
    code, _, err = run_here(capsys, inputs, "--model", tiny_model, "--category", "bolt")
    assert code == 2 and "unknown category 'bolt'" in err
    code, _, err = run_here(capsys, tmp_path / "missing.png", "--model", tiny_model, "--category", "part0")
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize("args", [["--help"], ["inspect", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["train-vae", "--help"], ["train-classifier", "--help"], ["calibrate-scores", "--help"],
                                  ["--version"]])
def test_help_and_version(args, capsys):
    import main

    with pytest.raises(SystemExit) as e:
        main.main(args)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert out.startswith("DeCo Inspector ") if args == ["--version"] else "usage" in out.lower()


DEMO = REPO / "resources" / "demo_data"


@pytest.mark.slow
def test_inspect_the_demo_images_with_the_bundled_model(tmp_path):
    """The README's first inspect command on real demo images with the default (bundled) model: one
    clean part and one clearly defective part per product, plus a corrupt file."""
    parts = tmp_path / "demo parts"
    parts.mkdir()
    chosen = {"brick_good.jpg": "brick/test/good/017.jpg", "coin_good.jpg": "coin/test/good/015.jpg",
              "label_good.jpg": "label/test/good/017.jpg", "brick_stain.jpg": "brick/test/stain/001.jpg",
              "coin_stain.jpg": "coin/test/stain/004.jpg", "label_hole.jpg": "label/test/hole/006.jpg"}
    for name, rel in chosen.items():
        (parts / name).write_bytes((DEMO / rel).read_bytes())
    (parts / "zz_cut_off.jpg").write_bytes((DEMO / "coin/test/good/000.jpg").read_bytes()[:900])
    csv_path, overlays = tmp_path / "out.csv", tmp_path / "overlays"
    result = run(parts, "--csv", csv_path, "--save-overlays", overlays)
    assert result.returncode == 2, result.stderr  # a file could not be inspected
    rows = {Path(r["file"]).name: r for r in csv.DictReader(csv_path.open(encoding="utf-8"))}
    assert set(rows) == set(chosen) | {"zz_cut_off.jpg"}
    for name in chosen:
        product, state = Path(name).stem.split("_")
        assert rows[name]["category"] == product, rows[name]
        assert rows[name]["verdict"] == ("pass" if state == "good" else "fail"), rows[name]
    assert rows["zz_cut_off.jpg"]["verdict"] == "error" and rows["zz_cut_off.jpg"]["error"]
    assert "zz_cut_off.jpg" in result.stderr + result.stdout
    saved = sorted(p.name for p in overlays.rglob("*.png"))
    assert len(saved) >= 3 and all(cv2.imread(str(p)) is not None for p in overlays.rglob("*.png"))
    good_only = run(*(parts / n for n in chosen if "good" in n), "--csv", tmp_path / "good.csv")
    assert good_only.returncode == 0, good_only.stdout + good_only.stderr


def test_saved_overlays_colour_only_above_the_threshold_unless_full_heatmap(tiny_model, inputs, tmp_path, capsys):
    part = inputs / "part_0.png"
    image = np.asarray(Image.open(part))
    for extra, changed in (((), False), (("--full-heatmap",), True)):
        overlays = tmp_path / f"ov{len(extra)}"
        code, _, _ = run_here(capsys, part, "--model", tiny_model, "--category", "part0", "--threshold", "100",
                              "--save-overlays", overlays, *extra)
        assert code == 0
        (saved,) = overlays.glob("*.png")
        overlay = np.asarray(Image.open(saved))
        # no pixel reaches 100: the part is shown as it is, unless the full map is asked for
        assert np.array_equal(overlay, image) != changed


def test_file_names_that_are_not_utf8_are_inspected_logged_and_resumed(tiny_model, inputs, tmp_path):
    import os

    odd = inputs / os.fsdecode(b"scratch \xff\xfe.png")   # written by a system with another encoding
    odd.write_bytes((inputs / "part_0.png").read_bytes())
    csv_path, db = tmp_path / "r.csv", tmp_path / "log.sqlite"
    result = run(odd, "--model", tiny_model, "--category", "part0", "--threshold", "0", "--csv", csv_path,
                 "--log", db, "--save-overlays", tmp_path / "ov")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "scratch \\xff\\xfe.png" in result.stdout   # the FAIL line, readable on any terminal
    (row,) = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert row["verdict"] == "fail" and row["file"].endswith("scratch \\xff\\xfe.png") and Path(row["overlay"]).is_file()
    again = run(odd, "--model", tiny_model, "--category", "part0", "--log", db, "--resume")
    assert again.returncode == 0 and "1 skipped" in again.stdout, again.stdout + again.stderr
