"""Checking that an export computes what the Keras model computes, on real
images: every format is run by its runtime on each image, whole, and compared
with ``infer`` on the Keras model. The report (``export.json`` in the export
folder) gives, per format, the file, its hash, the runtime and the largest
absolute difference over all images; a float32 export passes at
``TOLERANCE`` or less."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirnet_pipeline.tasks.export.formats import ONNX_OPSET
from mirnet_pipeline.tasks.export.runtimes import FORMAT_RUNTIMES, ExportedModel, model_hash

TOLERANCE = 1e-3  # on outputs in [0, 1]: a quarter of one 8-bit level
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


class VerificationError(RuntimeError):
    """An export computes something else than the Keras model; the message says which and by how much."""


def read_images(paths) -> dict[str, np.ndarray]:
    """{name: float32 (H, W, 3) in [0, 1]} of image files, or of every image in folders."""
    from mirnet_pipeline.tasks.data.shards import load_rgb

    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"images {path}: no such file or folder")
    if not files:
        raise ValueError(f"images {', '.join(map(str, paths))}: no images to verify on")
    return {str(file): load_rgb(file).astype(np.float32) / 255.0 for file in files}


def verify_exports(model, written: dict[str, Path], images: dict[str, np.ndarray], folder: Path,
                   tolerance: float = TOLERANCE) -> dict:
    """The report for the exports in ``written`` ({format: path} under
    ``folder``) against ``model`` on ``images``."""
    import keras

    from mirnet_pipeline.model import infer

    expected = {name: infer(model, image) for name, image in images.items()}
    formats = {}
    for name, path in written.items():
        exported = ExportedModel(path, FORMAT_RUNTIMES[name])
        worst = max(float(np.abs(infer(exported, image) - expected[key]).max()) for key, image in images.items())
        formats[name] = {"file": Path(path).relative_to(folder).as_posix(), "runtime": exported.runtime,
                         "hash": model_hash(path), "precision": "float32",
                         "max_abs_difference": worst, "passed": worst <= tolerance}
    return {"tolerance": tolerance, "onnx_opset": ONNX_OPSET, "keras": keras.__version__,
            "backend": keras.backend.backend(), "images": sorted(images), "formats": formats}


def check_report(report: dict) -> None:
    failed = {name: entry["max_abs_difference"] for name, entry in report["formats"].items() if not entry["passed"]}
    if failed:
        listed = ", ".join(f"{name} {difference:.2e}" for name, difference in failed.items())
        raise VerificationError(f"exports differ from the Keras model by more than {report['tolerance']}: {listed}")


# real images every checkout has: a TID2013 reference and one of its distortions
REFERENCE_PAIR = Path("tests/testdata/tid2013")


def default_image_paths(root: Path, per_dataset: int = 8) -> list[Path]:
    """The TID2013 pair shipped with the repository and the first
    ``per_dataset`` validation inputs of each prepared dataset under ``root``."""
    import pandas as pd

    from mirnet_pipeline.tasks import artifacts

    paths = [root / REFERENCE_PAIR] if (root / REFERENCE_PAIR).is_dir() else []
    for manifest in sorted((root / artifacts.PREPARED).glob("*.parquet")):
        pairs = pd.read_parquet(manifest, columns=["input_path", "split"])
        inputs = pairs.loc[pairs.split == "validation", "input_path"].head(per_dataset)
        paths += [Path(p) if Path(p).is_absolute() else root / p for p in inputs]
    return paths
