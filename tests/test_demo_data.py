"""Tests for the committed demo data (resources/demo_data) and its generator scripts/make_demo_data.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.preprocess import PreprocessConfig, crop_offset
from training.datasets import MVTecDataset, describe_dataset, detect_layout

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo_data"
SCRIPT = REPO / "scripts" / "make_demo_data.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_data_parses_as_mvtec_with_three_categories():
    assert detect_layout(DEMO) == "mvtec"
    info = describe_dataset(DEMO)
    assert len(info["categories"]) >= 3 and not info["warnings"]
    manifest = json.loads((DEMO / "manifest.json").read_text())
    for name, counts in info["categories"].items():
        expected = manifest["categories"][name]
        assert counts["train_good"] == expected["train_good"] >= 50
        assert counts["test_good"] == expected["test_good"] >= 15
        assert counts["defect_kinds"] == expected["defects"]
        assert 4 <= len(counts["defect_kinds"]) <= 6 and all(6 <= n <= 8 for n in counts["defect_kinds"].values())
        assert counts["masks_found"] == counts["test_defect"]
    test = MVTecDataset(DEMO, "all", "test")
    assert test.class_names == sorted(info["categories"]) and test.has_masks
    sample = test[len(test) - 1]
    assert sample["image"].shape == (3, 256, 256) and sample["label"] == 1 and sample["mask"].sum() > 0


def test_demo_masks_match_defective_images_and_sit_in_the_crop():
    o = crop_offset(PreprocessConfig())
    for category in (p for p in DEMO.iterdir() if p.is_dir()):
        assert not (category / "ground_truth" / "good").exists()
        for defect_dir in (category / "test").iterdir():
            for image_path in defect_dir.iterdir():
                size = Image.open(image_path).size
                assert size == (288, 288)
                mask_path = category / "ground_truth" / defect_dir.name / f"{image_path.stem}_mask.png"
                if defect_dir.name == "good":
                    assert not mask_path.exists()
                    continue
                mask = np.asarray(Image.open(mask_path))
                assert mask.shape == (288, 288) and mask.dtype == np.uint8, mask_path
                assert set(np.unique(mask)) == {0, 255}, mask_path
                fg = mask > 0
                assert fg.sum() >= 20, mask_path
                inside = fg[o : 288 - o, o : 288 - o].sum() / fg.sum()
                assert inside > 0.9, f"{mask_path}: only {inside:.0%} of the defect is in the central crop"


def test_demo_folder_size_and_docs():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 6.5e6
    readme = (DEMO / "README.md").read_text()
    assert "CC0" in readme and "make_demo_data.py" in readme
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert {"seed", "generator_version", "categories", "unseen_kinds"} <= set(manifest)


def test_generator_is_deterministic(generator, tmp_path):
    kwargs = dict(categories=["coin"], seed=7, train_count=1, test_good=1, per_defect=1, progress=False)
    generator.generate(tmp_path / "a", **kwargs)
    generator.generate(tmp_path / "b", **kwargs)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    kinds = generator.CATEGORIES["coin"].kinds
    assert len([k for k in a if k.endswith("_mask.png")]) == len(kinds)
    generator.generate(tmp_path / "a", **kwargs)
    assert _files(tmp_path / "a") == a


@pytest.mark.parametrize("category", ["brick", "label"])
def test_generator_reproduces_committed_files(generator, tmp_path, category):
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert sorted(manifest["categories"]) == sorted(generator.DEFAULT_CATEGORIES)
    kind = generator.CATEGORIES[category].kinds[0]
    generator.generate(tmp_path, [category], manifest["seed"], 1, 0, 1, progress=False)
    for rel in (f"{category}/train/good/000.jpg", f"{category}/test/{kind}/000.jpg"):
        new = np.asarray(Image.open(tmp_path / rel), dtype=np.float32)
        old = np.asarray(Image.open(DEMO / rel), dtype=np.float32)
        assert np.abs(new - old).mean() < 1.0, rel
    rel = f"{category}/ground_truth/{kind}/000_mask.png"
    differ = np.asarray(Image.open(tmp_path / rel)) != np.asarray(Image.open(DEMO / rel))
    assert differ.mean() < 1e-3


def test_generator_unseen_kinds_and_refusals(generator, tmp_path):
    generator.generate(tmp_path / "u", ["gravel"], 1, 0, 1, 1, unseen=True, progress=False)
    info = describe_dataset(tmp_path / "u", require_train=False)
    assert set(info["categories"]["gravel"]["defect_kinds"]) == set(generator.UNSEEN_KINDS)
    assert not set(generator.UNSEEN_KINDS) & {k for c in generator.CATEGORIES.values() for k in c.kinds}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generator.generate(tmp_path / "mine", ["coin"], 1, 1, 0, 0, progress=False)
    with pytest.raises(ValueError, match="unknown categories"):
        generator.generate(tmp_path / "x", ["nope"], progress=False)
