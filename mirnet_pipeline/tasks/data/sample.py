"""The offline sample: real photographs that ship inside installed packages
(scikit-image, scikit-learn, matplotlib), laid out exactly like TID2013 and LoL.

Nothing is downloaded. References are cropped to 4:3 and resized to 512x384;
each gets the 24 TID2013-style distortions at 5 levels (``tasks.data.distortions``).
LoL-style pairs are 600x400 crops whose ``low`` twin is a dark, noisy
exposure of the ``high`` photo made the way a camera makes one
(``tasks.data.low_light``). Everything is deterministic for a seed.

Sources are assigned so that no photograph appears in two TID2013 splits
(train 01-15, test 16-20, validation 21-25).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mirnet_pipeline.tasks.data import lol, low_light, tid2013
from mirnet_pipeline.tasks.data.distortions import DISTORTIONS, LEVELS, distort


def _skimage(name):
    import skimage.data

    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image


def _sklearn(filename):
    from sklearn.datasets import load_sample_image

    return load_sample_image(filename)


def _matplotlib(filename):
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data(filename)) as image:
        return np.asarray(image.convert("RGB"))


SOURCES = {
    "astronaut": lambda: _skimage("astronaut"),
    "rocket": lambda: _skimage("rocket"),
    "hubble": lambda: _skimage("hubble_deep_field"),
    "motorcycle_left": lambda: _skimage("stereo_motorcycle"),
    "motorcycle_right": lambda: __import__("skimage.data").data.stereo_motorcycle()[1],
    "china": lambda: _sklearn("china.jpg"),
    "camera": lambda: _skimage("camera"),
    "coins": lambda: _skimage("coins"),
    "gravel": lambda: _skimage("gravel"),
    "moon": lambda: _skimage("moon"),
    "flower": lambda: _sklearn("flower.jpg"),
    "coffee": lambda: _skimage("coffee"),
    "retina": lambda: _skimage("retina"),
    "ihc": lambda: _skimage("immunohistochemistry"),
    "grass": lambda: _skimage("grass"),
    "grace_hopper": lambda: _matplotlib("grace_hopper.jpg"),
    "chelsea": lambda: _skimage("chelsea"),
    "cell": lambda: _skimage("cell"),
    "brick": lambda: _skimage("brick"),
    "colorwheel": lambda: _skimage("colorwheel"),
}


@functools.cache
def load_source(name: str) -> np.ndarray:
    """A packaged photograph as RGB uint8."""
    image = np.asarray(SOURCES[name]())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


@dataclass(frozen=True)
class Crop:
    source: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # left, top, right, bottom


# Reference number -> crop. 01-15 train, 16-20 test, 21-25 validation. Every
# reference is a colour photograph, as in TID2013: on a grey one some types
# (colour saturation change) would do nothing, leaving a "distorted" image
# identical to its reference.
TID_REFERENCES: dict[int, Crop] = {
    1: Crop("astronaut"),
    2: Crop("astronaut", (0.25, 0.0, 0.75, 0.5)),
    3: Crop("rocket"),
    4: Crop("rocket", (0.3, 0.25, 0.8, 0.85)),
    5: Crop("hubble", (0.0, 0.0, 0.6, 0.6)),
    6: Crop("hubble", (0.4, 0.4, 1.0, 1.0)),
    7: Crop("motorcycle_left"),
    8: Crop("motorcycle_right", (0.1, 0.2, 0.6, 0.8)),
    9: Crop("china"),
    10: Crop("china", (0.45, 0.1, 0.95, 0.6)),
    11: Crop("astronaut", (0.0, 0.4, 0.6, 1.0)),
    12: Crop("rocket", (0.0, 0.0, 0.5, 0.6)),
    13: Crop("motorcycle_left", (0.5, 0.3, 1.0, 0.9)),
    14: Crop("china", (0.0, 0.4, 0.5, 1.0)),
    15: Crop("hubble", (0.2, 0.5, 0.55, 0.95)),
    16: Crop("flower"),
    17: Crop("coffee"),
    18: Crop("retina", (0.1, 0.1, 0.9, 0.9)),
    19: Crop("ihc"),
    20: Crop("flower", (0.3, 0.2, 0.9, 0.8)),
    21: Crop("grace_hopper"),
    22: Crop("chelsea"),
    23: Crop("grace_hopper", (0.2, 0.05, 0.8, 0.6)),
    24: Crop("chelsea", (0.3, 0.1, 0.9, 0.9)),
    25: Crop("colorwheel"),
}


def crop_resize(image: np.ndarray, box, size) -> np.ndarray:
    """Crop ``box`` (fractions), then the largest centred window of the target
    aspect ratio, then resize to ``size`` (width, height) with Lanczos."""
    height, width = image.shape[:2]
    left, top, right, bottom = box
    region = image[int(top * height) : int(bottom * height), int(left * width) : int(right * width)]
    rh, rw = region.shape[:2]
    aspect = size[0] / size[1]
    if rw / rh > aspect:
        cw, ch = int(round(rh * aspect)), rh
    else:
        cw, ch = rw, int(round(rw / aspect))
    y0, x0 = (rh - ch) // 2, (rw - cw) // 2
    window = region[y0 : y0 + ch, x0 : x0 + cw]
    return np.asarray(Image.fromarray(window).resize(size, Image.Resampling.LANCZOS))


def tid_reference(number: int) -> np.ndarray:
    crop = TID_REFERENCES[number]
    return crop_resize(load_source(crop.source), crop.box, tid2013.SIZE)


def _write_tid_reference(number: int, root: str, seed: int) -> list[str]:
    root_path = Path(root)
    reference = tid_reference(number)
    Image.fromarray(reference).save(root_path / "reference_images" / tid2013.reference_file(number))
    names = []
    for d in DISTORTIONS:
        for level in LEVELS:
            name = tid2013.distorted_name(number, d.number, level)
            image = distort(reference, d.number, level, seed=seed * 100 + number)
            Image.fromarray(image).save(root_path / "distorted_images" / name)
            names.append(name)
    return names


def _pool(workers: int | None):
    workers = workers or min(4, os.cpu_count() or 1)
    return ProcessPoolExecutor(max_workers=workers)


def write_tid2013_sample(root: str | os.PathLike, seed: int = 0, workers: int | None = None) -> Path:
    """Write the 25 references and 25 x 24 x 5 distorted images into ``root``
    (which must exist and be empty) in TID2013's layout."""
    root = Path(root)
    (root / "reference_images").mkdir(parents=True)
    (root / "distorted_images").mkdir()
    with _pool(workers) as pool:
        names = [n for chunk in pool.map(_write_tid_reference, sorted(TID_REFERENCES),
                                         [str(root)] * 25, [seed] * 25) for n in chunk]
    # The sample has no subjective scores: every MOS is "nan" (unknown).
    (root / tid2013.MOS_FILE).write_text("".join(f"nan {n}\n" for n in names))
    (root / "readme.txt").write_text(
        "Offline sample in the layout of TID2013 (Ponomarenko et al., 2013), made from\n"
        "photographs bundled with scikit-image, scikit-learn and matplotlib; distortions\n"
        "imitate TID2013's 24 types at 5 levels. MOS values are unknown (nan).\n"
    )
    return root


# --- LoL-style low-light pairs ---------------------------------------------------

LOL_SOURCES = sorted(s for s in SOURCES if s not in {"colorwheel"})
LOL_TRAIN_COUNT = 485  # our485
LOL_EVAL_COUNT = 15  # eval15


def lol_pair(index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``index``: a random 3:2 crop (40-100 % of the photo), maybe mirrored,
    as ``high``; its dark exposure (``low_light.darken``) as ``low``."""
    rng = np.random.default_rng([seed, index])
    source = load_source(LOL_SOURCES[int(rng.integers(len(LOL_SOURCES)))])
    scale = rng.uniform(0.4, 1.0)
    left, top = rng.uniform(0, 1 - scale, 2)
    high = crop_resize(source, (left, top, left + scale, top + scale), lol.SIZE)
    if rng.random() < 0.5:
        high = high[:, ::-1]
    high = np.ascontiguousarray(high)
    return low_light.darken(high, rng), high


def _write_lol_pair(index: int, folder: str, seed: int) -> str:
    low, high = lol_pair(index, seed)
    name = f"{index}.png"
    Image.fromarray(low).save(Path(folder) / "low" / name, compress_level=1)
    Image.fromarray(high).save(Path(folder) / "high" / name, compress_level=1)
    return name


def write_lol_sample(root: str | os.PathLike, seed: int = 0, workers: int | None = None) -> Path:
    """Write ``our485/{low,high}/N.png`` (N = 1..485) and ``eval15/{low,high}/N.png``
    (N = 486..500) into ``root`` (which must exist and be empty)."""
    root = Path(root)
    plan = [(i, "our485") for i in range(1, LOL_TRAIN_COUNT + 1)] + [
        (i, "eval15") for i in range(LOL_TRAIN_COUNT + 1, LOL_TRAIN_COUNT + LOL_EVAL_COUNT + 1)
    ]
    for part in ("our485", "eval15"):
        for kind in ("low", "high"):
            (root / part / kind).mkdir(parents=True)
    with _pool(workers) as pool:
        list(pool.map(_write_lol_pair, [i for i, _ in plan], [str(root / p) for _, p in plan],
                      [seed] * len(plan), chunksize=16))
    return root
