"""LoL, the low-light pairs of Wei et al. (BMVC 2018): layout and pairs manifest.

Layout: ``our485/{low,high}/N.png`` and ``eval15/{low,high}/N.png``, 600x400,
a low image and its high twin sharing the name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mirnet_pipeline.tasks.data.layout import check_images, find_child, find_dataset_root, index_folder, raise_if

SIZE = (600, 400)
PARTS = ("our485", "eval15")


def natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def dataset_root(folder: str | Path) -> Path:
    return find_dataset_root(Path(folder), "our485")


def pairs(root: Path, part: str) -> tuple[dict, dict]:
    folder = find_child(root, part) or root / part
    low = index_folder(find_child(folder, "low") or folder / "low")
    high = index_folder(find_child(folder, "high") or folder / "high")
    return low, high


def validate(folder: str | Path, check_sizes: bool = True) -> Path:
    """Check a LoL folder; raise ``LayoutError`` listing every problem."""
    root = dataset_root(folder)
    problems = []
    images = []
    for part in PARTS:
        low, high = pairs(root, part)
        if not low:
            problems.append(f"{root / part / 'low'}: folder missing or empty")
        if not high:
            problems.append(f"{root / part / 'high'}: folder missing or empty")
        problems += [f"{low[n]}: low image without its high twin {root / part / 'high' / low[n].name}"
                     for n in sorted(set(low) - set(high), key=natural_key)]
        problems += [f"{high[n]}: high image without its low twin {root / part / 'low' / high[n].name}"
                     for n in sorted(set(high) - set(low), key=natural_key)]
        images += [low[n] for n in low if n in high] + [high[n] for n in high if n in low]
    raise_if(problems, f"LoL layout of {root}")
    raise_if(check_images(images, SIZE if check_sizes else None), f"LoL images in {root}")
    return root


def manifest(folder: str | Path, train_count: int) -> pd.DataFrame:
    """``our485`` sorted by name: the first ``train_count`` pairs train, the rest
    validation; ``eval15`` test. Same columns as the TID2013 manifest."""
    root = dataset_root(folder)
    rows = []
    for part in PARTS:
        low, high = pairs(root, part)
        for i, name in enumerate(sorted(set(low) & set(high), key=natural_key)):
            split = "test" if part == "eval15" else ("train" if i < train_count else "validation")
            rows.append(
                {
                    "input_path": low[name].as_posix(),
                    "target_path": high[name].as_posix(),
                    "image_id": f"{part}/{Path(name).stem}",
                    "distortion": 0,
                    "distortion_name": "Low light",
                    "level": 0,
                    "mos": None,
                    "split": split,
                }
            )
    return pd.DataFrame(rows).astype({"distortion": "int16", "level": "int16", "mos": "float64"})
