"""TID2013 (Ponomarenko et al., 2013): layout, scores and the pairs manifest.

Layout: ``reference_images/I01.BMP ... I24.BMP`` and ``i25.bmp``;
``distorted_images/iXX_YY_Z.bmp`` (XX reference 01-25, YY type 01-24, Z level
1-5); ``mos_with_names.txt`` ("MOS name" per line). Names match ignoring case.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mirnet_pipeline.tasks.data.distortions import DISTORTION_NAMES, LEVELS
from mirnet_pipeline.tasks.data.layout import (
    LayoutError,
    check_images,
    find_child,
    find_dataset_root,
    index_folder,
    raise_if,
)

REFERENCES = tuple(range(1, 26))
TYPES = tuple(range(1, 25))
SIZE = (512, 384)
MOS_FILE = "mos_with_names.txt"


def reference_file(number: int) -> str:
    """TID2013's file names: I01.BMP ... I24.BMP, then a lower-case i25.bmp."""
    return "i25.bmp" if number == 25 else f"I{number:02d}.BMP"


def reference_name(number: int) -> str:
    return reference_file(number).lower()  # names are matched ignoring case


def distorted_name(number: int, distortion: int, level: int) -> str:
    return f"i{number:02d}_{distortion:02d}_{level}.bmp"


def dataset_root(folder: str | Path) -> Path:
    return find_dataset_root(Path(folder), "reference_images")


def validate(folder: str | Path, check_sizes: bool = True) -> Path:
    """Check a TID2013 folder; raise ``LayoutError`` listing everything missing or
    wrong. Returns the dataset root (the folder holding ``reference_images``)."""
    root = dataset_root(folder)
    references = index_folder(find_child(root, "reference_images") or root / "reference_images")
    distorted = index_folder(find_child(root, "distorted_images") or root / "distorted_images")
    problems = []
    if not references:
        problems.append(f"{root / 'reference_images'}: folder missing or empty")
    if not distorted:
        problems.append(f"{root / 'distorted_images'}: folder missing or empty")
    if find_child(root, MOS_FILE) is None:
        problems.append(f"{root / MOS_FILE}: missing")
    if references:
        problems += [f"{root / 'reference_images'}: missing {reference_name(n)}"
                     for n in REFERENCES if reference_name(n) not in references]
    if distorted:
        problems += [
            f"{root / 'distorted_images'}: missing {distorted_name(n, t, level)}"
            for n in REFERENCES for t in TYPES for level in LEVELS
            if distorted_name(n, t, level) not in distorted
        ]
    raise_if(problems, f"TID2013 layout of {root}")
    images = [references[reference_name(n)] for n in REFERENCES] + [
        distorted[distorted_name(n, t, level)] for n in REFERENCES for t in TYPES for level in LEVELS
    ]
    raise_if(check_images(images, SIZE if check_sizes else None), f"TID2013 images in {root}")
    return root


def read_mos(path: str | Path) -> dict[str, float]:
    """``mos_with_names.txt`` as {lower-case name: MOS}; "nan" means unknown."""
    scores = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            scores[parts[1].lower()] = float(parts[0])
        except (IndexError, ValueError):
            raise LayoutError(f"{path}:{number}: expected 'MOS name', got {line!r}") from None
    return scores


def manifest(folder: str | Path, splits: dict[str, list[int]], levels, types) -> pd.DataFrame:
    """One row per (distorted input, reference target) pair of the selected
    levels and types whose reference falls in a split; columns: input_path,
    target_path, image_id, distortion, distortion_name, level, mos, split."""
    root = dataset_root(folder)
    references = index_folder(find_child(root, "reference_images"))
    distorted = index_folder(find_child(root, "distorted_images"))
    mos = read_mos(find_child(root, MOS_FILE))
    split_of = {n: name for name, numbers in splits.items() for n in numbers}
    rows = []
    for n in REFERENCES:
        if n not in split_of:
            continue
        for t in types:
            for level in levels:
                name = distorted_name(n, t, level)
                score = mos.get(name, math.nan)
                rows.append(
                    {
                        "input_path": distorted[name].as_posix(),
                        "target_path": references[reference_name(n)].as_posix(),
                        "image_id": f"i{n:02d}",
                        "distortion": t,
                        "distortion_name": DISTORTION_NAMES[t],
                        "level": level,
                        "mos": None if math.isnan(score) else score,
                        "split": split_of[n],
                    }
                )
    return pd.DataFrame(rows).astype({"distortion": "int16", "level": "int16", "mos": "float64"})
