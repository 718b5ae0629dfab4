"""File names as people, cameras and scripts write them: every folder consumer lists any mix of
names (digits first, letters first, unicode, spaces, case, dots, long names, hidden files) in one
natural order, and inspects or trains on every file (hypothesis over random sets of names)."""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.imageio import IMAGE_EXTENSIONS, list_images, natural_key, natural_path_key
from tests.test_inspect_cli import run, tiny_model  # noqa: F401 - a fixture

MAX_NAME_BYTES = 255     # the longest file name Linux file systems take
MUST_SHOW = ("0001.png", "good_0001.png", "10.png", "2.png", "Ä_1.png", "x.PNG")
MUST_SHOW_SUB = "sub folder"
MUST_SHOW_ORDER = ["0001.png", "2.png", "10.png", "Ä_1.png", "good_0001.png", "sub folder/1.png",
                   "sub folder/2 b.png", "x.PNG"]   # Ä sorts with A

_ODD = "0123456789aAbBzZ_- .,()[]#%&'~+=@!"
_NAME_CHAR = st.one_of(st.sampled_from(_ODD),
                       st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF,
                                     categories=("L", "M", "N", "P", "S", "Zs")))
_LONG_DIGITS = st.integers(min_value=100, max_value=240).map(lambda n: "7" * n)
STEMS = st.one_of(st.text(_NAME_CHAR, min_size=1, max_size=30), _LONG_DIGITS,
                  st.tuples(st.sampled_from(["", ".", "scratch_", "img ", "Ä"]), st.integers(0, 10 ** 6),
                            st.sampled_from(["", "_a", " (1)", ".v2"])).map(lambda t: f"{t[0]}{t[1]}{t[2]}"))
SUFFIXES = st.sampled_from(IMAGE_EXTENSIONS).flatmap(lambda s: st.sampled_from([s, s.upper(), s.title()]))


def _fits(name: str) -> bool:
    return name not in (".", "..") and len(name.encode("utf-8")) <= MAX_NAME_BYTES


FILE_NAMES = st.builds(lambda stem, suffix: stem + suffix, STEMS, SUFFIXES).filter(_fits)
FOLDER_NAMES = st.text(_NAME_CHAR, min_size=1, max_size=20).filter(lambda n: _fits(n) and n.strip(". ") == n)
NAME_SETS = st.lists(FILE_NAMES, min_size=1, max_size=8, unique=True)
TREES = st.tuples(NAME_SETS, st.lists(st.tuples(FOLDER_NAMES, NAME_SETS), max_size=2, unique_by=lambda t: t[0]))
SMALL_TREES = st.tuples(st.lists(FILE_NAMES, min_size=1, max_size=4, unique=True),
                        st.lists(st.tuples(FOLDER_NAMES, st.lists(FILE_NAMES, min_size=1, max_size=2, unique=True)),
                                 max_size=1))
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_PROPERTY = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PNG = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(_PNG, format="PNG")
PNG_BYTES = _PNG.getvalue()   # one small image; its content does not matter here, its name does


def make_tree(root: Path, tree, content: bytes = PNG_BYTES) -> list[str]:
    """Write the files of `tree` (top-level names, [(folder, names)]) under root, last name first
    (creation order must not matter); returns their relative paths in natural order."""
    top, subs = tree
    rel = list(top) + [f"{folder}/{name}" for folder, names in subs for name in names]
    for r in reversed(rel):
        path = root / r
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return sorted(rel, key=natural_path_key)


def written(root: Path, files) -> list[str]:
    return [Path(f).relative_to(root).as_posix() for f in files]


def make_must_show_folder(root: Path) -> Path:
    """The issue's folder: numbered, prefixed, unicode and upper-case names and a subfolder with a space."""
    folder = root / "parts"
    make_tree(folder, (list(MUST_SHOW), [(MUST_SHOW_SUB, ["2 b.png", "1.png"])]))
    return folder


# ----------------------------------------------------------------------------- the order itself
@PROPERTY
@given(st.lists(st.text(max_size=40), max_size=30), st.randoms())
def test_any_names_sort_and_the_order_does_not_depend_on_the_input_order(names, rnd):
    ordered = sorted(names, key=natural_key)
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert sorted(shuffled, key=natural_key) == ordered
    assert sorted(shuffled, key=natural_path_key) == sorted(names, key=natural_path_key)


@PROPERTY
@given(st.sampled_from(["", "scratch_", "img ", "Ä", ".", "a1b"]), st.integers(0, 10 ** 30), st.integers(0, 10 ** 30),
       st.integers(0, 6), SUFFIXES)
def test_numbers_compare_by_value(prefix, a, b, pad, suffix):
    name_a, name_b = f"{prefix}{a:0{pad}d}{suffix}", f"{prefix}{b}{suffix}"
    if a != b:
        assert (natural_path_key(name_a) < natural_path_key(name_b)) == (a < b)


def test_the_issue_names_in_natural_order():
    names = ["scratch_0000.png", "0000.png", "10.png", "2.png", "x.png", "x1.png", "X2.png", "a b.png", "a.png"]
    assert sorted(names, key=natural_path_key) == ["0000.png", "2.png", "10.png", "a.png", "a b.png",
                                                  "scratch_0000.png", "x.png", "x1.png", "X2.png"]


@PROPERTY
@given(TREES)
def test_list_images_lists_every_image_in_natural_order(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = make_tree(root, tree)
        (root / "notes.txt").write_text("not an image")
        assert written(root, list_images(root)) == expected
        top = [r for r in expected if "/" not in r]
        assert written(root, list_images(root, recursive=False)) == top


# ----------------------------------------------------------------------------- consumers
def inspect_rows(model: Path, folder: Path, out: Path) -> tuple[int, list[dict]]:
    """`main.py inspect` in this process (output swallowed): exit code and CSV rows."""
    import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main.main(["inspect", str(folder), "--model", str(model), "--csv", str(out), "--quiet",
                          "--threshold", "0", "--category", "part0", "--save-overlays", str(out.parent / "overlays")])
    with open(out, newline="", encoding="utf-8") as f:
        return code, list(csv.DictReader(f))


@SLOW_PROPERTY
@given(tree=SMALL_TREES)
def test_inspect_command_inspects_every_file_in_natural_order(tiny_model, tree):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        expected = make_tree(folder, tree)
        code, rows = inspect_rows(tiny_model, folder, Path(tmp) / "out" / "r.csv")
        assert code == 1  # threshold 0: every part fails, none is an error
        assert [Path(r["file"]).relative_to(folder).as_posix() for r in rows] == expected
        assert {r["verdict"] for r in rows} == {"fail"}
        assert all(Path(r["overlay"]).is_file() for r in rows)


def test_inspect_command_on_the_issue_folder(tiny_model, tmp_path):
    folder = make_must_show_folder(tmp_path)
    result = run(folder, "--model", tiny_model, "--csv", tmp_path / "r.csv", "--threshold", "0", "--category", "part0")
    assert result.returncode == 1, result.stderr
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["file"]).relative_to(folder).as_posix() for r in rows] == MUST_SHOW_ORDER
    assert all(r["verdict"] == "fail" and r["score"] for r in rows)
    assert "Ä_1.png" in result.stdout and "8 inspected" in result.stdout


def read_folder_source(source) -> list[str]:
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        assert frame.rgb is not None, frame.error
        frames.append(frame.frame_id)
    return frames


@PROPERTY
@given(TREES)
def test_window_folder_source_reads_every_file_in_natural_order(tree):
    from inspector.sources import FolderSource

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = make_tree(root, tree)
        assert written(root, read_folder_source(FolderSource(root))) == expected


@PROPERTY
@given(NAME_SETS, NAME_SETS)
def test_watch_folder_picks_up_new_files_with_any_names(before, after):
    from inspector.sources import FolderSource

    after = [n for n in after if n not in before]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = make_tree(root, (before, []))
        source = FolderSource(root, watch=True, poll_interval=0.0, settle_polls=1)
        source.open()
        got = [source.read().frame_id for _ in first]
        make_tree(root, (after, []))
        got += [source.read().frame_id for _ in after]
        source.request_stop()
        assert source.read() is None
        assert written(root, got) == first + sorted(after, key=natural_path_key)


@PROPERTY
@given(NAME_SETS, NAME_SETS)
def test_training_datasets_take_every_visible_image_in_natural_order(good, defective):
    from training.datasets import FolderDataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = make_tree(root / "train", (good, []))
        test_good = make_tree(root / "test" / "good", (good, []))
        test_bad = make_tree(root / "test" / "odd kind", (defective, []))
        visible = lambda names: [n for n in names if not n.startswith(".")]  # noqa: E731 - datasets skip hidden files
        ds = FolderDataset(root / "train", split="train") if visible(train) else None
        if ds is not None:
            assert written(root / "train", [s.path for s in ds.samples]) == visible(train)
        if visible(test_good) or visible(test_bad):
            ds = FolderDataset(root / "train", root / "test", split="test")
            got = [(s.defect, Path(s.path).name) for s in ds.samples]
            assert got == [("good", n) for n in visible(test_good)] + [("odd kind", n) for n in visible(test_bad)]
            assert len(ds[len(ds) - 1]["image"].shape) == 3  # and it reads them


@PROPERTY
@given(TREES)
def test_vae_training_extra_images_are_every_image_in_natural_order(tree):
    from training.train_vae import extra_image_files, load_extra_images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = make_tree(root, tree)
        files = extra_image_files([str(root)])
        assert written(root, files) == expected
        assert len(load_extra_images(files, min_side=16)) == len(expected)
