"""An export folder, whole or not at all: the exports are written and verified
in a temporary sibling, and only a folder whose every export passed
verification replaces the previous one. Only a previous export is replaced
(a folder with ``export.json`` and nothing an export does not write); a new
or empty folder is filled; any other folder is refused, untouched. The registry copy: the folder becomes
``exports/`` of the model version's logged model, so ``models:/<name>@<alias>``
leads to it."""

from __future__ import annotations

from pathlib import Path

from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.export.formats import EXPORT_FORMATS, export_model
from mirnet_pipeline.tasks.export.quantize import INT8_FILE, int8_report, quantize_onnx
from mirnet_pipeline.tasks.export.verification import TOLERANCE, check_report, verify_exports
from mirnet_pipeline.tasks.storage import atomic_directory, atomic_write_json

REPORT = "export.json"
REGISTRY_FOLDER = "exports"
# what an export folder holds: the report, each format's file or folder, the int8 model
EXPORT_NAMES = {REPORT, INT8_FILE} | {Path(location).parts[0] for _, location in EXPORT_FORMATS.values()}


def check_export_folder(folder: str | Path, model: str | Path | None = None) -> None:
    """``UsageError`` naming ``folder`` unless an export may go there: it is
    new, empty, or a previous export (``export.json`` and only what an export
    writes), and it does not hold ``model``, the file being exported."""
    folder = Path(folder)
    if folder.is_symlink():
        raise UsageError(f"destination {folder}: is a symbolic link; give the folder itself")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UsageError(f"destination {folder}: is a file, not a folder")
    if model is not None and Path(model).resolve().is_relative_to(folder.resolve()):
        raise UsageError(f"destination {folder}: holds the model being exported ({model}); "
                         "export into another folder")
    names = sorted(p.name for p in folder.iterdir())
    if names and REPORT not in names:
        raise UsageError(f"destination {folder}: holds {_listed(names)} and is not an export (no {REPORT}); "
                         "give a new or empty folder")
    foreign = [name for name in names if name not in EXPORT_NAMES]
    if foreign:
        raise UsageError(f"destination {folder}: is an export but also holds {_listed(foreign)}, which "
                         "replacing it would delete; move that out or give another folder")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def write_verified_export(model, folder: str | Path, images: dict, formats=tuple(EXPORT_FORMATS),
                          tolerance: float = TOLERANCE, source: str | None = None, int8=None) -> dict:
    """Export ``model`` into ``folder`` and verify it on ``images``; returns the
    report. ``VerificationError`` (and nothing written) when an export differs.
    ``int8``: (calibration crops, validation pairs) to also write the int8
    model (``model.int8.onnx``, needs the onnx format) and score it against
    float32 on the validation pairs."""
    if int8 is not None and "onnx" not in formats:
        raise ValueError("int8: the int8 model is quantized from the ONNX export; add the onnx format")
    check_export_folder(folder)
    with atomic_directory(folder) as staging:
        written = export_model(model, staging, formats)
        report = verify_exports(model, written, images, staging, tolerance)
        report["source"] = source
        check_report(report)
        if int8 is not None:
            report["int8"] = quantize_and_score(written["onnx"], staging / INT8_FILE, *int8)
        atomic_write_json(staging / REPORT, report)
    return report


def quantize_and_score(onnx: Path, out: Path, crops, pairs) -> dict:
    from mirnet_pipeline.tasks.export.runtimes import ExportedModel, model_hash

    quantize_onnx(onnx, crops, out)
    entry = int8_report(ExportedModel(onnx), ExportedModel(out), pairs, len(crops))
    return {"file": out.name, "hash": model_hash(out), "runtime": "onnxruntime", **entry}


def log_to_registry(client, version, folder: str | Path) -> str:
    """Store ``folder`` as ``exports/`` of the logged model behind ``version``;
    returns the artifact URI."""
    from mirnet_pipeline.tasks.training.trained_models import logged_model_id

    model_id = logged_model_id(version)
    if model_id is None:
        raise ValueError(f"models:/{version.name}/{version.version}: has no logged model to keep the exports with")
    client.log_model_artifacts(model_id, str(folder), artifact_path=REGISTRY_FOLDER)
    location = client.get_logged_model(model_id).artifact_location.rstrip("/")
    uri = f"{location}/{REGISTRY_FOLDER}"
    client.set_model_version_tag(version.name, version.version, "exports", uri)
    return uri


def export_variant(params, variant: str) -> dict:
    """The export stage's work for one variant: ``models/<variant>/model.keras``
    exported and verified into ``exports/<variant>/`` (paths relative to the
    project folder, the working directory), then stored with the registry
    version that training registered for it (``reports/<variant>/mlflow.json``)."""
    from mirnet_pipeline.tasks import artifacts
    from mirnet_pipeline.tasks.export.verification import default_image_paths, read_images
    from mirnet_pipeline.tasks.training.tracking import training_record
    from mirnet_pipeline.tasks.training.trained_models import load_model

    settings = params.export
    source = artifacts.model_file(variant)
    model, label = load_model(source)
    images = read_images(default_image_paths(Path("."), settings.images_per_dataset))
    folder = artifacts.export_folder(variant)
    int8 = None
    if settings.int8:
        from mirnet_pipeline.tasks.export.quantize import calibration_crops, validation_pairs

        dataset = params.variants[variant].dataset
        int8 = (calibration_crops(artifacts.shard_set(dataset, "train"), settings.calibration_crops),
                validation_pairs(artifacts.shard_set(dataset, "validation"), settings.int8_validation_images))
    report = write_verified_export(model, folder, images, tuple(settings.formats), source=f"{source} ({label})",
                                   int8=int8)
    _, version = training_record(variant, params.mlflow)
    if version is not None:
        from mlflow.tracking import MlflowClient

        report["registry"] = {"version": f"{version.name}/{version.version}",
                              "artifacts": log_to_registry(MlflowClient(), version, folder)}
    return report
