"""Anomaly-detection datasets: MVTec AD, VisA and plain folders of images -> model-ready samples.

Every dataset yields `AnomalySample` dicts. Images go through the engine's preprocessing
(`engine.preprocess`: PIL RGB, resize to image_size^2 with the configured filter, center crop,
[-1, 1]); ground-truth masks through `preprocess_mask` (PIL 'L', bicubic resize, > 0, same crop),
exactly as the DeCo-Diff reference prepares them.

Training augmentation (the reference's): with probability 0.5 the resized image is shifted by a
constant +t px in x and in y before the crop, t = int(image_size / 8 - center_size / 8) (4 for
288/256), zero fill; VisA additionally rotates the crop by 180 degrees with probability 0.5.
Files are read lazily in `__getitem__`; an unreadable file raises `ImageReadError` naming it.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from engine.categories import MVTEC_CATEGORIES, VISA_CATEGORIES
from engine.imageio import natural_key, natural_path_key
from engine.preprocess import RESIZE_FILTERS, PreprocessConfig, preprocess_frames, preprocess_mask

__all__ = [
    "IMAGE_EXTENSIONS",
    "MVTEC_LAYOUT",
    "VISA_LAYOUT",
    "FOLDER_LAYOUT",
    "DatasetLayoutError",
    "ImageReadError",
    "AnomalySample",
    "SampleRecord",
    "AnomalyDataset",
    "MVTecDataset",
    "VisADataset",
    "FolderDataset",
    "detect_layout",
    "describe_dataset",
    "build_dataset",
    "read_rgb",
    "read_mask",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

MVTEC_LAYOUT = (
    "MVTec AD layout: <category>/train/good, <category>/test/<defect>, "
    "<category>/ground_truth/<defect>/<name>_mask.png"
)
VISA_LAYOUT = (
    "VisA layout: split_csv/1cls.csv with columns object,split,label,image,mask, "
    "or <category>/Data/Images/Normal, <category>/Data/Images/Anomaly, <category>/Data/Masks/Anomaly/<name>.png"
)
FOLDER_LAYOUT = (
    "folder layout: a folder of good images (searched recursively); for testing, a folder with good/ "
    "and one subfolder per defect kind, optional masks in ground_truth/<defect>/<name>_mask.png or <name>.png"
)
_ANY_LAYOUT = f"{MVTEC_LAYOUT}; {VISA_LAYOUT}; {FOLDER_LAYOUT}"

GOOD = "good"
SPLITS = ("train", "val", "test")
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_CSV_COLUMNS = ("object", "split", "label", "image", "mask")
VISA_TEST_GOOD_MODULO = 10


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout; the message says what was expected where."""


class ImageReadError(OSError):
    """An image or mask file exists in a dataset but cannot be decoded."""


class AnomalySample(TypedDict):
    """One item. image: float32 [3, S, S] in [-1, 1]; mask: float32 [1, S, S] in {0, 1} (all zero for
    good images and for defective ones without a mask, see has_mask); label: 0 good, 1 defective."""

    image: torch.Tensor
    mask: torch.Tensor
    label: int
    class_id: int
    category: str
    defect: str
    path: str
    has_mask: bool


@dataclass(frozen=True)
class SampleRecord:
    """Where one sample lives. defect: "good" or the defect kind; mask_path: None for good images
    and for defective images without a mask."""

    path: Path
    category: str
    defect: str
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else 1

    @property
    def has_mask(self) -> bool:
        return self.label == 0 or self.mask_path is not None


def _read(path: Path | str, mode: str, what: str) -> np.ndarray:
    """An image file converted by PIL to `mode`; ImageReadError names the file (as `what`) on failure."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except FileNotFoundError as e:
        raise ImageReadError(f"{what} file not found: {path}") from e
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"cannot read {what} {path}: {e}") from e


def read_rgb(path: Path | str) -> np.ndarray:
    """Image file -> HxWx3 uint8 RGB (PIL convert('RGB')); ImageReadError names the file on failure."""
    return _read(path, "RGB", "image")


def read_mask(path: Path | str) -> np.ndarray:
    """Mask file -> HxW uint8 (PIL convert('L')); ImageReadError names the file on failure."""
    return _read(path, "L", "mask")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in folder, in natural order (engine.imageio); [] when the folder does not exist."""
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in found if _is_image(p)), key=lambda p: natural_path_key(p.relative_to(folder)))


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _find_mask(folder: Path, names: Sequence[str]) -> Path | None:
    """First existing mask among folder/<name>.<image extension>, names in order of preference."""
    for name in names:
        for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
            for candidate in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _select_categories(categories: str | Sequence[str], found: Sequence[str], root: Path, layout: str) -> list[str]:
    """'all' | one name | names -> the chosen categories, each checked against those found under root."""
    if isinstance(categories, str):
        chosen = list(found) if categories == "all" else [categories]
    else:
        chosen = list(categories)
    if not chosen:
        raise ValueError("categories is empty; pass 'all', a category name or a list of names")
    missing = [c for c in chosen if c not in found]
    if missing:
        raise DatasetLayoutError(
            f"{root}: categories {missing} not found; found {list(found)} ({layout})"
        )
    return chosen


def _default_class_names(found: Sequence[str], known_order: Sequence[str]) -> list[str]:
    """The public dataset's order when every category found belongs to it, else the sorted names found."""
    if found and all(c in known_order for c in found):
        return list(known_order)
    return sorted(found)


class AnomalyDataset(Dataset):
    """Samples from `SampleRecord`s; subclasses only find the records.

    Attributes: samples (list[SampleRecord]), class_names (index = class id), split, preprocess,
    rotate180 (the dataset's augmentation includes the 180 degree turn, VisA), shift_p and rot180_p
    (the probabilities `__getitem__` draws the shift and the turn with; 0 unless augment).
    """

    def __init__(
        self,
        samples: Sequence[SampleRecord],
        class_names: Sequence[str],
        split: str,
        preprocess: PreprocessConfig | None = None,
        augment: bool = False,
        rotate180: bool = False,
    ) -> None:
        self.split = _check_split(split)
        self.preprocess = preprocess if preprocess is not None else PreprocessConfig()
        self.class_names = list(class_names)
        unknown = sorted({s.category for s in samples} - set(self.class_names))
        if unknown:
            raise ValueError(f"categories {unknown} are not in class_names {self.class_names}")
        self.samples = list(samples)
        self.augment = bool(augment)
        self.rotate180 = bool(rotate180)
        self.shift_p = 0.5 if self.augment else 0.0
        self.rot180_p = 0.5 if self.augment and self.rotate180 else 0.0
        self._class_ids = {name: i for i, name in enumerate(self.class_names)}

    @property
    def translate_px(self) -> int:
        """The reference's constant augmentation shift, int(image_size/8 - center_size/8)."""
        return int(self.preprocess.image_size / 8 - self.preprocess.center_size / 8)

    @property
    def categories(self) -> list[str]:
        """Categories present, in class-id order."""
        present = {s.category for s in self.samples}
        return [c for c in self.class_names if c in present]

    @property
    def has_masks(self) -> bool:
        """True when every defective sample has a ground-truth mask (pixel metrics are meaningful)."""
        return all(s.has_mask for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> AnomalySample:
        shift = self.shift_p > 0 and float(torch.rand(())) < self.shift_p
        rotate = self.rot180_p > 0 and float(torch.rand(())) < self.rot180_p
        return self.load(index, shift=shift, rotate=rotate)

    def load(self, index: int, shift: bool = False, rotate: bool = False) -> AnomalySample:
        """Sample `index` with the augmentation chosen: shift by +translate_px before the crop,
        rotate the crop by 180 degrees (image and mask alike)."""
        record = self.samples[index]
        rgb = read_rgb(record.path)
        raw_mask = read_mask(record.mask_path) if record.mask_path is not None else None
        cfg = self.preprocess
        if shift:
            t = self.translate_px
            rgb = _shift(_resize(rgb, cfg.image_size, cfg.resize_filter), t)
            if raw_mask is not None:
                raw_mask = _shift(_resize(raw_mask, cfg.image_size, "bicubic"), t)
        image = preprocess_frames([rgb], cfg)[0]
        if raw_mask is not None:
            mask = torch.from_numpy(preprocess_mask(raw_mask, cfg)).to(torch.float32)[None]
        else:
            mask = torch.zeros(1, cfg.center_size, cfg.center_size, dtype=torch.float32)
        if rotate:
            image = torch.flip(image, dims=(-2, -1)).contiguous()
            mask = torch.flip(mask, dims=(-2, -1)).contiguous()
        return AnomalySample(
            image=image,
            mask=mask,
            label=record.label,
            class_id=self._class_ids[record.category],
            category=record.category,
            defect=record.defect,
            path=str(record.path),
            has_mask=record.has_mask,
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """{category: {defect: number of samples}}."""
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            per = out.setdefault(s.category, {})
            per[s.defect] = per.get(s.defect, 0) + 1
        return out


def _resize(array: np.ndarray, size: int, resize_filter: str) -> np.ndarray:
    """HxW[x3] uint8 -> size x size with PIL, as `preprocess_frames` resizes."""
    return np.asarray(Image.fromarray(array).resize((size, size), resample=RESIZE_FILTERS[resize_filter]))


def _shift(array: np.ndarray, t: int) -> np.ndarray:
    """Content moved by +t px in x and y (out[y + t, x + t] = in[y, x]), zero fill."""
    if t == 0:
        return array
    out = np.zeros_like(array)
    h, w = array.shape[:2]
    if t < h and t < w:
        out[t:, t:] = array[: h - t, : w - t]
    return out


class _CategoryDataset(AnomalyDataset):
    """A dataset of several categories under one root (MVTec AD, VisA): the categories found are
    chosen from, class ids default to the layout's known order, and each layout reads its records
    (`_found`, `_records`)."""

    layout = ""                       # the layout's one-line description, for errors
    known_categories: Sequence[str] = ()
    rotate180 = False

    def __init__(
        self,
        root: Path | str,
        categories: str | Sequence[str] = "all",
        split: str = "train",
        preprocess: PreprocessConfig | None = None,
        augment: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        found = self._found(_check_split(split))
        chosen = _select_categories(categories, found, self.root, self.layout)
        if class_names is None:
            class_names = _default_class_names(found, self.known_categories)
        super().__init__(self._records(chosen, split), class_names, split, preprocess, augment,
                         rotate180=self.rotate180)

    def _found(self, split: str) -> list[str]:
        """The category names under root (a DatasetLayoutError when the layout does not fit)."""
        raise NotImplementedError

    def _records(self, chosen: list[str], split: str) -> list[SampleRecord]:
        """The records of the chosen categories in `split`."""
        raise NotImplementedError


class MVTecDataset(_CategoryDataset):
    """MVTec AD layout: root/<category>/train/good/*, root/<category>/test/<defect>/*,
    root/<category>/ground_truth/<defect>/<stem>_mask.png.

    Class ids follow MVTEC_CATEGORIES when every category under root is an MVTec name (so a single
    'bottle' keeps id 1), otherwise the sorted category names found; or pass class_names.
    """

    layout, known_categories = MVTEC_LAYOUT, MVTEC_CATEGORIES

    def _found(self, split: str) -> list[str]:
        return _mvtec_category_names(self.root)

    def _records(self, chosen: list[str], split: str) -> list[SampleRecord]:
        return [r for category in chosen for r in _mvtec_records(self.root / category, split, strict=True)]


def _mvtec_category_names(root: Path) -> list[str]:
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found ({MVTEC_LAYOUT})")
    names = [d.name for d in _subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()]
    if not names:
        if (root / "train" / GOOD).is_dir():
            raise DatasetLayoutError(
                f"{root}: this looks like a single category; choose its parent folder {root.parent} ({MVTEC_LAYOUT})"
            )
        raise DatasetLayoutError(
            f"{root}: expected one folder per category with train/ and test/ inside ({MVTEC_LAYOUT})"
        )
    return names


def _mvtec_records(cat_dir: Path, split: str, strict: bool) -> list[SampleRecord]:
    """Records of one category; split 'val' reads <category>/val/<defect> laid out like test/.
    A category without a ground_truth/ folder has image-level labels only (ELPV and other
    datasets without masks): its defective images get mask_path None. With ground_truth/, a
    missing mask is a layout error when strict (else mask_path None); strict also raises when
    there are no images."""
    category = cat_dir.name
    if split == "train":
        images = _images_in(cat_dir / "train" / GOOD)
        if not images and strict:
            raise DatasetLayoutError(f"{cat_dir}: expected train/good/ with images ({MVTEC_LAYOUT})")
        return [SampleRecord(p, category, GOOD) for p in images]
    has_masks = (cat_dir / "ground_truth").is_dir()
    records = []
    for defect_dir in _subdirs(cat_dir / split):
        defect = defect_dir.name
        for p in _images_in(defect_dir):
            mask = None
            if defect != GOOD and has_masks:
                mask_dir = cat_dir / "ground_truth" / defect
                mask = _find_mask(mask_dir, [f"{p.stem}_mask"])
                if mask is None and strict:
                    raise DatasetLayoutError(
                        f"{p}: defective test image has no mask; expected {mask_dir / (p.stem + '_mask.png')} "
                        f"(or no ground_truth/ folder at all for image-level labels only) ({MVTEC_LAYOUT})"
                    )
            records.append(SampleRecord(p, category, defect, mask))
    if not records and strict:
        raise DatasetLayoutError(f"{cat_dir}: expected {split}/<defect>/ folders with images ({MVTEC_LAYOUT})")
    return records


class VisADataset(_CategoryDataset):
    """VisA: root/split_csv/1cls.csv (object,split,label,image,mask; label 'normal'|'anomaly'; paths
    relative to root), or without it root/<category>/Data/Images/{Normal,Anomaly} with masks in
    root/<category>/Data/Masks/Anomaly/<stem>.png, where a fixed 10% of the Normal images (CRC32 of
    the file name) are the test good ones. Class ids follow VISA_CATEGORIES when every category is a
    VisA name. Augmentation adds the reference's 180 degree turn.
    """

    layout, known_categories, rotate180 = VISA_LAYOUT, VISA_CATEGORIES, True

    def _found(self, split: str) -> list[str]:
        if split == "val":
            raise DatasetLayoutError(f"{self.root}: the VisA layout has no val split; use train or test ({VISA_LAYOUT})")
        self._by_category = _visa_records(self.root, strict=True)
        return list(self._by_category)

    def _records(self, chosen: list[str], split: str) -> list[SampleRecord]:
        samples = [r for c in chosen for r in self._by_category[c][split]]
        if not samples:
            raise DatasetLayoutError(f"{self.root}: no {split} images for categories {chosen} ({VISA_LAYOUT})")
        return samples


def _visa_records(root: Path, strict: bool) -> dict[str, dict[str, list[SampleRecord]]]:
    """{category: {"train": records, "test": records}} from the CSV split or the per-category folders."""
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found ({VISA_LAYOUT})")
    if (root / VISA_CSV).is_file():
        return _visa_records_from_csv(root, strict)
    cat_dirs = [d for d in _subdirs(root) if (d / "Data" / "Images").is_dir()]
    if not cat_dirs:
        raise DatasetLayoutError(f"{root}: expected {VISA_CSV} or <category>/Data/Images/ folders ({VISA_LAYOUT})")
    out = {}
    for cat_dir in cat_dirs:
        category = cat_dir.name
        normal = _images_in(cat_dir / "Data" / "Images" / "Normal")
        anomaly = _images_in(cat_dir / "Data" / "Images" / "Anomaly")
        if not normal and strict:
            raise DatasetLayoutError(f"{cat_dir}: expected Data/Images/Normal/ with images ({VISA_LAYOUT})")
        is_test = [zlib.crc32(p.name.encode()) % VISA_TEST_GOOD_MODULO == 0 for p in normal]
        train = [SampleRecord(p, category, GOOD) for p, t in zip(normal, is_test) if not t]
        test = [SampleRecord(p, category, GOOD) for p, t in zip(normal, is_test) if t]
        mask_dir = cat_dir / "Data" / "Masks" / "Anomaly"
        for p in anomaly:
            mask = _find_mask(mask_dir, [p.stem])
            if mask is None and strict:
                raise DatasetLayoutError(
                    f"{p}: anomalous image has no mask; expected {mask_dir / (p.stem + '.png')} ({VISA_LAYOUT})"
                )
            test.append(SampleRecord(p, category, "anomaly", mask))
        out[category] = {"train": train, "test": test}
    return out


def _visa_records_from_csv(root: Path, strict: bool) -> dict[str, dict[str, list[SampleRecord]]]:
    csv_path = root / VISA_CSV
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing_cols = [c for c in VISA_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise DatasetLayoutError(
                f"{csv_path}: missing columns {missing_cols}, found {reader.fieldnames} ({VISA_LAYOUT})"
            )
        rows = list(reader)
    out: dict[str, dict[str, list[SampleRecord]]] = {}
    for line, row in enumerate(rows, start=2):
        category, split, label = row["object"].strip(), row["split"].strip(), row["label"].strip()
        if split not in SPLITS or label not in ("normal", "anomaly"):
            raise DatasetLayoutError(
                f"{csv_path} line {line}: split must be train|test and label normal|anomaly, "
                f"got {split!r}, {label!r} ({VISA_LAYOUT})"
            )
        image = root / row["image"].strip()
        if strict and not image.is_file():
            raise DatasetLayoutError(f"{csv_path} line {line}: image {image} not found ({VISA_LAYOUT})")
        mask = None
        if label == "anomaly":
            mask_rel = (row["mask"] or "").strip()
            mask = root / mask_rel if mask_rel else None
            if mask is not None and not mask.is_file():
                mask = None
            if mask is None and strict:
                raise DatasetLayoutError(
                    f"{csv_path} line {line}: anomalous image {image} has no mask; expected "
                    f"{root / mask_rel if mask_rel else 'a path in the mask column'} ({VISA_LAYOUT})"
                )
        per = out.setdefault(category, {"train": [], "test": []})
        per[split].append(SampleRecord(image, category, GOOD if label == "normal" else "anomaly", mask))
    if not out:
        raise DatasetLayoutError(f"{csv_path}: no rows ({VISA_LAYOUT})")
    return out


class FolderDataset(AnomalyDataset):
    """A custom product. train: every image under good_dir (recursive). test: test_dir/good/** and
    test_dir/<defect>/** with optional masks test_dir/ground_truth/<defect>/<stem>_mask.png or
    <stem>.png; a defective image without one has has_mask False and an all-zero mask (see
    `has_masks`). class_names defaults to [category]."""

    def __init__(
        self,
        good_dir: Path | str,
        test_dir: Path | str | None = None,
        split: str = "train",
        category: str = "custom",
        preprocess: PreprocessConfig | None = None,
        augment: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.good_dir = Path(good_dir)
        self.test_dir = Path(test_dir) if test_dir is not None else None
        _check_split(split)
        if split == "train":
            samples = _folder_train_records(self.good_dir, category, strict=True)
        else:
            if self.test_dir is None:
                raise ValueError(
                    "FolderDataset split 'test' needs test_dir (a folder with good/ and defect subfolders)"
                )
            samples = _folder_test_records(self.test_dir, category, strict=True)
        super().__init__(samples, class_names or [category], split, preprocess, augment)


def _folder_train_records(good_dir: Path, category: str, strict: bool) -> list[SampleRecord]:
    images = _images_in(good_dir, recursive=True)
    if not images and strict:
        raise DatasetLayoutError(f"{good_dir}: expected good images ({', '.join(IMAGE_EXTENSIONS)}) ({FOLDER_LAYOUT})")
    return [SampleRecord(p, category, GOOD) for p in images]


def _folder_test_records(test_dir: Path, category: str, strict: bool) -> list[SampleRecord]:
    records = []
    for sub in _subdirs(test_dir):
        if sub.name == "ground_truth":
            continue
        defect = sub.name
        for p in _images_in(sub, recursive=True):
            mask = None
            if defect != GOOD:
                mask = _find_mask(test_dir / "ground_truth" / defect, [f"{p.stem}_mask", p.stem])
            records.append(SampleRecord(p, category, defect, mask))
    if not records and strict:
        raise DatasetLayoutError(f"{test_dir}: expected good/ and defect subfolders with images ({FOLDER_LAYOUT})")
    return records


def detect_layout(root: Path | str) -> str:
    """'mvtec' | 'visa' | 'folder' for a dataset folder; DatasetLayoutError when it is none of them."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found; expected one of: {_ANY_LAYOUT}")
    children = _subdirs(root)
    if (root / VISA_CSV).is_file() or any((d / "Data" / "Images").is_dir() for d in children):
        return "visa"
    if any((d / "train").is_dir() or (d / "test").is_dir() for d in children):
        return "mvtec"
    if (root / "train" / GOOD).is_dir():
        raise DatasetLayoutError(
            f"{root}: this looks like a single MVTec category; choose its parent folder {root.parent} ({MVTEC_LAYOUT})"
        )
    if _images_in(root, recursive=True):
        return "folder"
    raise DatasetLayoutError(f"{root}: no images found; expected one of: {_ANY_LAYOUT}")


def _summarise(train: Sequence[SampleRecord], test: Sequence[SampleRecord]) -> dict:
    kinds: dict[str, int] = {}
    for r in test:
        if r.label:
            kinds[r.defect] = kinds.get(r.defect, 0) + 1
    defective = [r for r in test if r.label]
    return {
        "train_good": len(train),
        "test_good": sum(1 for r in test if not r.label),
        "test_defect": len(defective),
        "defect_kinds": dict(sorted(kinds.items())),
        "masks_found": sum(1 for r in defective if r.mask_path is not None),
        "masks_missing": sum(1 for r in defective if r.mask_path is None),
    }


def describe_dataset(root: Path | str, test_dir: Path | str | None = None, require_train: bool = True) -> dict:
    """Counts for a dataset folder, for a wizard to validate and show.

    Returns {"layout", "root", "class_names", "categories": {name: {train_good, test_good,
    test_defect, defect_kinds: {kind: n}, masks_found, masks_missing}}, "warnings": [str]}.
    test_dir: the test folder of a 'folder' layout. require_train: a category without training
    images raises DatasetLayoutError (the one-line message says what was expected where).
    """
    root = Path(root)
    layout = detect_layout(root)
    warnings: list[str] = []
    if layout == "mvtec":
        found = _mvtec_category_names(root)
        class_names = _default_class_names(found, MVTEC_CATEGORIES)
        per = {}
        for name in found:
            train = _mvtec_records(root / name, "train", strict=require_train)
            per[name] = _summarise(train, _mvtec_records(root / name, "test", strict=False))
    elif layout == "visa":
        records = _visa_records(root, strict=False)
        class_names = _default_class_names(list(records), VISA_CATEGORIES)
        per = {}
        for name, by_split in records.items():
            if require_train and not by_split["train"]:
                raise DatasetLayoutError(f"{root}: category {name!r} has no training (normal) images ({VISA_LAYOUT})")
            per[name] = _summarise(by_split["train"], by_split["test"])
    else:
        category = root.name or "custom"
        class_names = [category]
        train = _folder_train_records(root, category, strict=require_train)
        test = _folder_test_records(Path(test_dir), category, strict=False) if test_dir is not None else []
        per = {category: _summarise(train, test)}
    for name, counts in per.items():
        if counts["masks_missing"]:
            warnings.append(f"{name}: {counts['masks_missing']} defective test images have no mask")
        if counts["test_defect"] and not counts["test_good"]:
            warnings.append(f"{name}: no good test images, so image-level metrics cannot be computed")
    return {
        "layout": layout,
        "root": str(root),
        "class_names": class_names,
        "categories": per,
        "warnings": warnings,
    }


def build_dataset(
    kind: str,
    data_dir: Path | str,
    categories: str | Sequence[str] = "all",
    split: str = "train",
    preprocess: PreprocessConfig | None = None,
    augment: bool | None = None,
    *,
    test_dir: Path | str | None = None,
    class_names: Sequence[str] | None = None,
) -> AnomalyDataset:
    """kind 'mvtec' | 'visa' | 'folder' | 'auto' (detect_layout) -> the dataset.

    augment None: on for split 'train', off for 'test'. For 'folder', data_dir holds the good
    images, test_dir the test folder, and categories (a single name, 'all' -> 'custom') names it.
    """
    if kind == "auto":
        kind = detect_layout(data_dir)
    if augment is None:
        augment = split == "train"
    if kind == "mvtec":
        return MVTecDataset(data_dir, categories, split, preprocess, augment, class_names)
    if kind == "visa":
        return VisADataset(data_dir, categories, split, preprocess, augment, class_names)
    if kind == "folder":
        if not isinstance(categories, str):
            if len(categories) != 1:
                raise ValueError(f"a folder dataset has one category, got {list(categories)}")
            categories = categories[0]
        category = "custom" if categories == "all" else categories
        return FolderDataset(data_dir, test_dir, split, category, preprocess, augment, class_names)
    raise ValueError(f"unknown dataset kind {kind!r}: expected 'mvtec', 'visa', 'folder' or 'auto'")
