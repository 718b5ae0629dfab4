"""Tests for training.datasets on tiny generated MVTec, VisA and folder layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from engine.categories import MVTEC_CATEGORIES, VISA_CATEGORIES
from engine.preprocess import PreprocessConfig, preprocess_frames, preprocess_mask
from training.datasets import (
    DatasetLayoutError,
    FolderDataset,
    ImageReadError,
    MVTecDataset,
    VisADataset,
    build_dataset,
    describe_dataset,
    detect_layout,
)

SIZE = 288


def _save_rgb(path: Path, seed: int, size: int = 48) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _save_mask(path: Path, box: tuple[int, int, int, int], size: int = 48, value: int = 255) -> None:
    """A square mask, box = (y0, y1, x0, x1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size, size), dtype=np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = value
    Image.fromarray(m).save(path)


def make_mvtec(root: Path, categories=("bottle",), n_train=3, n_good=2, defects=("broken", "crack"), per=2) -> Path:
    """MVTec AD layout with small random images and square masks."""
    seed = 0
    for cat in categories:
        for i in range(n_train):
            _save_rgb(root / cat / "train" / "good" / f"{i:03d}.png", seed := seed + 1)
        for i in range(n_good):
            _save_rgb(root / cat / "test" / "good" / f"{i:03d}.png", seed := seed + 1)
        for d in defects:
            for i in range(per):
                _save_rgb(root / cat / "test" / d / f"{i:03d}.png", seed := seed + 1)
                _save_mask(root / cat / "ground_truth" / d / f"{i:03d}_mask.png", (10, 30, 12, 20))
    return root


def make_visa(root: Path, categories=("candle", "pcb1"), n_train=3, n_good=2, n_bad=2, with_csv=True) -> Path:
    """VisA layout: <cat>/Data/Images/{Normal,Anomaly}, <cat>/Data/Masks/Anomaly (masks 0/1), and
    optionally split_csv/1cls.csv."""
    rows = []
    seed = 100
    for cat in categories:
        for i in range(n_train + n_good):
            rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            _save_rgb(root / rel, seed := seed + 1)
            rows.append([cat, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_bad):
            rel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            _save_rgb(root / rel, seed := seed + 1)
            _save_mask(root / mrel, (5, 20, 5, 20), value=1)
            rows.append([cat, "test", "anomaly", rel, mrel])
    if with_csv:
        (root / "split_csv").mkdir(parents=True)
        with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["object", "split", "label", "image", "mask"])
            w.writerows(rows)
    return root


def test_mvtec_counts_labels_and_class_ids(tmp_path):
    root = make_mvtec(tmp_path)
    train = MVTecDataset(root, "bottle", "train")
    test = MVTecDataset(root, "all", "test")
    assert len(train) == 3 and len(test) == 2 + 2 * 2
    assert train.class_names == list(MVTEC_CATEGORIES)
    s = train[0]
    assert s["image"].shape == (3, 256, 256) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (1, 256, 256) and s["mask"].sum() == 0
    assert -1.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert (s["label"], s["class_id"], s["category"], s["defect"]) == (0, 1, "bottle", "good")
    assert Path(s["path"]).parent.name == "good"
    labels = sorted((test[i]["defect"], test[i]["label"]) for i in range(len(test)))
    assert labels == [("broken", 1)] * 2 + [("crack", 1)] * 2 + [("good", 0)] * 2
    assert test.counts() == {"bottle": {"good": 2, "broken": 2, "crack": 2}}
    assert test.has_masks


def test_mvtec_image_matches_engine_preprocessing(tmp_path):
    root = make_mvtec(tmp_path)
    ds = MVTecDataset(root, "bottle", "train")
    rgb = np.asarray(Image.open(ds.samples[0].path).convert("RGB"))
    torch.testing.assert_close(ds[0]["image"], preprocess_frames([rgb], PreprocessConfig())[0], rtol=0, atol=0)


def test_mvtec_class_ids_for_custom_categories(tmp_path):
    root = make_mvtec(tmp_path, categories=("widget", "bottle", "gadget"), n_train=1, n_good=1, per=1)
    ds = MVTecDataset(root, ["bottle", "widget"], "train")
    assert ds.class_names == ["bottle", "gadget", "widget"]
    assert {s["category"]: s["class_id"] for s in (ds[0], ds[1])} == {"bottle": 0, "widget": 2}
    given = MVTecDataset(root, "gadget", "train", class_names=["gadget", "bottle", "widget"])
    assert given[0]["class_id"] == 0
    with pytest.raises(DatasetLayoutError, match=r"categories \['nope'\] not found"):
        MVTecDataset(root, "nope", "train")


def test_mvtec_mask_is_binarised_and_cropped_like_the_image(tmp_path):
    root = make_mvtec(tmp_path, per=1, defects=("broken",))
    gt = root / "bottle" / "ground_truth" / "broken" / "000_mask.png"
    _save_mask(gt, (40, 80, 100, 130), size=SIZE, value=200)  # already 288: resize is the identity
    ds = MVTecDataset(root, "bottle", "test")
    sample = next(ds[i] for i in range(len(ds)) if ds.samples[i].defect == "broken")
    mask = sample["mask"][0].numpy()
    assert set(np.unique(mask)) == {0.0, 1.0}
    expected = np.zeros((256, 256), dtype=np.float32)
    expected[40 - 16 : 80 - 16, 100 - 16 : 130 - 16] = 1  # crop offset 16
    np.testing.assert_array_equal(mask, expected)
    assert sample["has_mask"] and sample["label"] == 1


def test_small_masks_follow_engine_preprocess_mask(tmp_path):
    root = make_mvtec(tmp_path, per=1, defects=("broken",))
    ds = MVTecDataset(root, "bottle", "test")
    i = next(i for i, s in enumerate(ds.samples) if s.defect == "broken")
    raw = np.asarray(Image.open(ds.samples[i].mask_path).convert("L"))
    np.testing.assert_array_equal(ds[i]["mask"][0].numpy(), preprocess_mask(raw, PreprocessConfig()))
    rows, cols = np.nonzero(ds[i]["mask"][0].numpy())
    # box rows 10..30, cols 12..20 of 48 px, x6 to 288, minus 16; bicubic spreads the edge by < 3 px
    assert abs(rows.min() - (60 - 16)) <= 3 and abs(rows.max() + 1 - (180 - 16)) <= 3
    assert abs(cols.min() - (72 - 16)) <= 3 and abs(cols.max() + 1 - (120 - 16)) <= 3


def _block_image(path: Path) -> None:
    img = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    img[100:110, 50:60] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _block_position(image: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image[0].numpy() > 0)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def test_augmentation_shifts_content_by_exactly_four_pixels(tmp_path):
    root = tmp_path / "data"
    _block_image(root / "bottle" / "train" / "good" / "000.png")
    plain = MVTecDataset(root, "bottle", "train")
    shifted = MVTecDataset(root, "bottle", "train", augment=True)
    assert plain.shift_p == 0 and shifted.shift_p == 0.5 and shifted.translate_px == 4
    assert not shifted.rotate180 and shifted.rot180_p == 0
    assert _block_position(plain[0]["image"]) == (84, 94, 34, 44)
    assert _block_position(plain.load(0, shift=True)["image"]) == (88, 98, 38, 48)
    shifted.shift_p = 1.0
    assert _block_position(shifted[0]["image"]) == (88, 98, 38, 48)
    torch.testing.assert_close(
        shifted[0]["image"][:, 4:, 4:], plain[0]["image"][:, :-4, :-4], rtol=0, atol=0
    )


def test_augmentation_shifts_mask_with_image(tmp_path):
    root = make_mvtec(tmp_path, per=1, defects=("broken",))
    gt = root / "bottle" / "ground_truth" / "broken" / "000_mask.png"
    _save_mask(gt, (40, 80, 100, 130), size=SIZE)
    ds = MVTecDataset(root, "bottle", "test", augment=True)
    ds.shift_p = 1.0
    i = next(i for i, s in enumerate(ds.samples) if s.defect == "broken")
    assert _block_position(ds[i]["mask"]) == (40 - 12, 80 - 12, 100 - 12, 130 - 12)


def test_shift_probability_is_about_half(tmp_path):
    root = tmp_path / "data"
    _block_image(root / "bottle" / "train" / "good" / "000.png")
    ds = MVTecDataset(root, "bottle", "train", augment=True)
    torch.manual_seed(0)
    shifted = sum(_block_position(ds[0]["image"])[0] == 88 for _ in range(100))
    assert 30 < shifted < 70


def test_mvtec_layout_errors_are_one_clear_message(tmp_path):
    root = make_mvtec(tmp_path)
    (root / "cable" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as e:
        MVTecDataset(root, "cable", "train")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{root / 'cable'}: expected train/good/ with images (MVTec AD layout: <category>/train/good")
    with pytest.raises(DatasetLayoutError) as e:
        describe_dataset(root)
    assert str(e.value) == msg
    with pytest.raises(DatasetLayoutError, match="choose its parent folder"):
        MVTecDataset(root / "bottle", "all", "train")
    with pytest.raises(DatasetLayoutError, match="folder not found"):
        MVTecDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="split must be one of"):
        MVTecDataset(root, "bottle", "validation")


def test_missing_mask_names_expected_path(tmp_path):
    root = make_mvtec(tmp_path)
    (root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetLayoutError) as e:
        MVTecDataset(root, "bottle", "test")
    assert str(root / "bottle" / "ground_truth" / "crack" / "001_mask.png") in str(e.value)
    assert str(root / "bottle" / "test" / "crack" / "001.png") in str(e.value)
    assert len(MVTecDataset(root, "bottle", "train")) == 3


def test_corrupt_image_raises_clear_error_at_load(tmp_path):
    root = make_mvtec(tmp_path)
    bad = root / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    ds = MVTecDataset(root, "bottle", "train")
    ds[0]
    with pytest.raises(ImageReadError, match="cannot read image") as e:
        ds[1]
    assert str(bad) in str(e.value)
    (root / "bottle" / "train" / "good" / "002.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="002.png"):
        ds[2]


def test_visa_csv_layout(tmp_path):
    root = make_visa(tmp_path)
    assert detect_layout(root) == "visa"
    train = VisADataset(root, "all", "train")
    test = VisADataset(root, "pcb1", "test")
    assert len(train) == 6 and len(test) == 4
    assert train.class_names == list(VISA_CATEGORIES)
    ids = sorted({(s["category"], s["class_id"]) for s in (train[i] for i in range(6))})
    assert ids == [("candle", 0), ("pcb1", 9)]
    bad = [test[i] for i in range(len(test)) if test[i]["label"] == 1]
    assert len(bad) == 2 and all(b["defect"] == "anomaly" and b["mask"].sum() > 0 for b in bad)
    assert set(np.unique(bad[0]["mask"].numpy())) == {0.0, 1.0}  # 0/1 masks become {0, 1}


def test_visa_augmentation_rotates_180(tmp_path):
    root = make_visa(tmp_path, categories=("candle",))
    plain = VisADataset(root, "candle", "test")
    rot = VisADataset(root, "candle", "test", augment=True)
    assert plain.rotate180 and plain.rot180_p == 0 and rot.rot180_p == 0.5
    rot.shift_p, rot.rot180_p = 0.0, 1.0
    i = next(i for i, s in enumerate(plain.samples) if s.label == 1)
    torch.testing.assert_close(rot[i]["image"], torch.flip(plain[i]["image"], dims=(-2, -1)), rtol=0, atol=0)
    torch.testing.assert_close(rot[i]["mask"], torch.flip(plain[i]["mask"], dims=(-2, -1)), rtol=0, atol=0)
    both = plain.load(i, shift=True, rotate=True)
    torch.testing.assert_close(both["image"], torch.flip(plain.load(i, shift=True)["image"], dims=(-2, -1)))


def test_visa_folder_layout_without_csv(tmp_path):
    root = make_visa(tmp_path, n_train=18, n_good=2, with_csv=False)
    train = VisADataset(root, "all", "train")
    test = VisADataset(root, "all", "test")
    assert len(train) + len(test) == 2 * (20 + 2)
    assert not {s.path for s in train.samples} & {s.path for s in test.samples}
    assert sum(s.label for s in test.samples) == 4
    info = describe_dataset(root)
    assert info["layout"] == "visa" and info["categories"]["candle"]["masks_found"] == 2


def test_visa_csv_errors(tmp_path):
    root = make_visa(tmp_path, categories=("candle",))
    (root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"has no mask; expected .*001\.png"):
        VisADataset(root, "candle", "test")
    (root / "split_csv" / "1cls.csv").write_text("object,image\ncandle,x.png\n")
    with pytest.raises(DatasetLayoutError, match=r"missing columns \['split', 'label', 'mask'\]"):
        VisADataset(root, "candle", "train")


def _make_folder(root: Path, masks: bool) -> tuple[Path, Path]:
    good = root / "good_parts"
    for i in range(3):
        _save_rgb(good / ("a" if i else "b") / f"{i}.jpg", i)
    test = root / "test"
    _save_rgb(test / "good" / "g0.png", 10)
    _save_rgb(test / "dent" / "d0.png", 11)
    _save_rgb(test / "dent" / "d1.png", 12)
    if masks:
        _save_mask(test / "ground_truth" / "dent" / "d0_mask.png", (0, 10, 0, 10))
        _save_mask(test / "ground_truth" / "dent" / "d1.png", (0, 10, 0, 10))
    return good, test


def test_folder_dataset_with_masks(tmp_path):
    good, test = _make_folder(tmp_path, masks=True)
    train = FolderDataset(good, split="train", category="widget")
    assert len(train) == 3 and train.class_names == ["widget"] and train[0]["class_id"] == 0
    ds = FolderDataset(good, test, split="test", category="widget")
    assert ds.has_masks and len(ds) == 3
    bad = [ds[i] for i in range(3) if ds[i]["label"]]
    assert len(bad) == 2 and all(b["has_mask"] and b["mask"].sum() > 0 and b["defect"] == "dent" for b in bad)


def test_folder_dataset_without_masks(tmp_path):
    good, test = _make_folder(tmp_path, masks=False)
    ds = build_dataset("folder", good, "widget", "test", test_dir=test)
    assert isinstance(ds, FolderDataset) and not ds.has_masks and not ds.augment
    bad = [ds[i] for i in range(3) if ds[i]["label"]]
    assert all(not b["has_mask"] and b["mask"].sum() == 0 for b in bad)
    assert detect_layout(good) == "folder"
    info = describe_dataset(good, test_dir=test)
    counts = info["categories"]["good_parts"]
    assert (counts["train_good"], counts["test_good"], counts["test_defect"], counts["masks_missing"]) == (3, 1, 2, 2)
    assert info["warnings"]
    with pytest.raises(ValueError, match="needs test_dir"):
        FolderDataset(good, split="test")
    with pytest.raises(DatasetLayoutError, match="expected good images"):
        FolderDataset(tmp_path / "empty_dir_that_is_missing")


def test_describe_dataset_counts(tmp_path):
    root = make_mvtec(tmp_path, categories=("bottle", "screw"), n_train=4, n_good=3, per=2)
    (root / "screw" / "ground_truth" / "crack" / "000_mask.png").unlink()
    info = describe_dataset(root)
    assert info["layout"] == "mvtec" and info["class_names"] == list(MVTEC_CATEGORIES)
    assert info["categories"]["bottle"] == {
        "train_good": 4,
        "test_good": 3,
        "test_defect": 4,
        "defect_kinds": {"broken": 2, "crack": 2},
        "masks_found": 4,
        "masks_missing": 0,
    }
    assert info["categories"]["screw"]["masks_missing"] == 1
    assert info["warnings"] == ["screw: 1 defective test images have no mask"]


def test_detect_layout_and_build_dataset(tmp_path):
    root = make_mvtec(tmp_path / "m")
    assert detect_layout(root) == "mvtec"
    ds = build_dataset("auto", root, "bottle", "train")
    assert isinstance(ds, MVTecDataset) and ds.augment
    assert not build_dataset("mvtec", root, "bottle", "test").augment
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images found; expected one of: MVTec AD layout"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("coco", root)


def test_dataloader_collates_samples(tmp_path):
    root = make_mvtec(tmp_path)
    batch = next(iter(DataLoader(MVTecDataset(root, "bottle", "test"), batch_size=4)))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["mask"].shape == (4, 1, 256, 256)
    assert batch["class_id"].tolist() == [1, 1, 1, 1] and len(batch["path"]) == 4
