"""Lay out the ELPV solar-cell dataset (real electroluminescence images) as an MVTec-style dataset.

    pip install elpv-dataset
    python scripts/real_data.py --out ~/data/elpv [--seed 0] [--test-good 100] [--val-good 100]

ELPV (2,624 cells of 300 x 300 px, 8-bit grey, cut from EL images of solar modules; licence
CC BY-NC-SA 4.0: use it, never commit its images) gives each cell a defect probability from
expert votes. Cells at 0.0 are good, at 1.0 defective; the uncertain ones (1/3, 2/3) are left
out. Two categories, `mono` (monocrystalline) and `poly` (polycrystalline):

    <out>/<type>/train/good/          good cells to train on (the rest of the good cells)
    <out>/<type>/val/{good,defective} choose settings here (--val-good good cells, half the defects)
    <out>/<type>/test/{good,defective} report here only (--test-good good cells, the other half)

ELPV has no pixel masks, so `evaluate` reports image metrics (pixel metrics n/a). The split is
a seeded shuffle per category: the same seed writes the same files. A `split.json` beside the
categories records the counts, the seed and where every cell came from (its ELPV index).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_PROBABILITY = 0.0
DEFECT_PROBABILITY = 1.0
CELL_TYPES = ("mono", "poly")
DEFECT_FOLDER = "defective"


def load_elpv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N,300,300] uint8, defect probabilities [N], cell types [N]) from the installed
    elpv-dataset package; a clear SystemExit when it is not installed."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise SystemExit("the ELPV images come from the elpv-dataset package: pip install elpv-dataset") from None
    images, probabilities, types = load_dataset()
    return np.asarray(images), np.asarray(probabilities, dtype=np.float64), np.asarray(types).astype(str)


def split_indices(probabilities: np.ndarray, types: np.ndarray, cell_type: str, seed: int,
                  test_good: int, val_good: int) -> dict[str, dict[str, list[int]]]:
    """{split: {"good"|"defective": [ELPV index]}} for one cell type: a seeded shuffle; the first
    test_good good cells go to test, the next val_good to val, the rest to train; defective cells
    alternate between val and test (val gets the extra one)."""
    rng = np.random.default_rng([seed, CELL_TYPES.index(cell_type)])
    of_type = types == cell_type
    good = rng.permutation(np.flatnonzero(of_type & np.isclose(probabilities, GOOD_PROBABILITY)))
    bad = rng.permutation(np.flatnonzero(of_type & np.isclose(probabilities, DEFECT_PROBABILITY)))
    if len(good) < test_good + val_good + 8:
        raise SystemExit(f"{cell_type}: only {len(good)} good cells for {test_good} test + {val_good} val + training")
    return {
        "train": {"good": sorted(good[test_good + val_good:].tolist())},
        "val": {"good": sorted(good[test_good:test_good + val_good].tolist()),
                DEFECT_FOLDER: sorted(bad[0::2].tolist())},
        "test": {"good": sorted(good[:test_good].tolist()), DEFECT_FOLDER: sorted(bad[1::2].tolist())},
    }


def write_dataset(out: Path, images: np.ndarray, splits: dict[str, dict[str, dict[str, list[int]]]]) -> dict:
    """Write every cell as <out>/<type>/<split>/<kind>/elpv_<index>.png; returns the counts."""
    counts: dict = {}
    for cell_type, by_split in splits.items():
        for split, by_kind in by_split.items():
            for kind, indices in by_kind.items():
                folder = out / cell_type / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                for i in indices:
                    Image.fromarray(images[i]).save(folder / f"elpv_{i:04d}.png")
                counts.setdefault(cell_type, {}).setdefault(split, {})[kind] = len(indices)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Lay out ELPV solar cells as an MVTec-style dataset (train/val/test).")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--test-good", type=int, default=100, help="good cells per type in the test split")
    p.add_argument("--val-good", type=int, default=100, help="good cells per type in the validation split")
    p.add_argument("--types", default=",".join(CELL_TYPES), help="cell types to write (mono, poly)")
    args = p.parse_args(argv)
    types_wanted = [t for t in args.types.split(",") if t]
    unknown = [t for t in types_wanted if t not in CELL_TYPES]
    if unknown:
        raise SystemExit(f"unknown cell types {unknown}; ELPV has {', '.join(CELL_TYPES)}")
    images, probabilities, types = load_elpv()
    splits = {t: split_indices(probabilities, types, t, args.seed, args.test_good, args.val_good)
              for t in types_wanted}
    if args.out.exists():
        shutil.rmtree(args.out)
    counts = write_dataset(args.out, images, splits)
    (args.out / "split.json").write_text(json.dumps(
        {"source": "ELPV (elpv-dataset package), CC BY-NC-SA 4.0", "seed": args.seed,
         "good_probability": GOOD_PROBABILITY, "defect_probability": DEFECT_PROBABILITY,
         "counts": counts, "indices": splits}, indent=1), encoding="utf-8")
    for cell_type, by_split in counts.items():
        print(f"{cell_type}: " + ", ".join(f"{s} " + "/".join(f"{n} {k}" for k, n in kinds.items())
                                          for s, kinds in by_split.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
