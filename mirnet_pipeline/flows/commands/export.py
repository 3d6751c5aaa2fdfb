"""The ``mirnet-export`` command: a trained model as a TensorFlow SavedModel, an
ONNX model and an OpenVINO IR, each verified against the Keras model.

    mirnet-export models/mirnet/model.keras exported/mirnet
    mirnet-export models:/mirnet@champion exported/mirnet --format onnx --images photos/
    mirnet-export models/mirnet/model.keras exported/mirnet --int8 data/shards/tid2013

The exports go into DESTINATION (``saved_model/``, ``model.onnx``,
``openvino/model.xml``) with ``export.json``, the verification report: per
format, the largest absolute difference from the Keras model over the images
(at most 1e-3 to pass). Nothing is written unless every export passes.
DESTINATION is a new or empty folder, or a previous export, which is
replaced; any other folder, or one holding the model, is refused untouched.
``--int8`` adds ``model.int8.onnx``, quantized after calibration on training
crops, and its PSNR and SSIM against float32 on the validation split. A
registry model's exports are also stored with its version in MLflow
(``exports/`` of its logged model; the version's tag ``exports`` names them).
Images to verify on: ``--images`` (files or folders, repeatable), else the
repository's TID2013 pair and the first validation images of each prepared
dataset. Mistakes are reported in one line before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mirnet_pipeline.flows.commands import HelpWithDefaults, check_registered, tracking_uri, usage_error
from mirnet_pipeline.tasks.credentials import check_no_credentials
from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.export.formats import EXPORT_FORMATS, check_formats
from mirnet_pipeline.tasks.training.trained_models import registry_reference

PROG = "mirnet-export"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="A trained model as a TensorFlow SavedModel, an ONNX model "
                                "and an OpenVINO IR, each verified against the Keras model.",
                                formatter_class=HelpWithDefaults)
    p.add_argument("model", help="a .keras file, models:/<name>@<alias> or models:/<name>/<version>")
    p.add_argument("destination", help="folder for the exports and export.json")
    p.add_argument("--format", dest="formats", action="append", choices=list(EXPORT_FORMATS),
                   help="one format (repeatable; default: all)")
    p.add_argument("--images", action="append", help="image file or folder to verify on (repeatable)")
    p.add_argument("--int8", metavar="SHARDS",
                   help="also an int8 model (model.int8.onnx), calibrated on crops of SHARDS/train and scored on "
                        "SHARDS/validation (e.g. data/shards/tid2013)")
    p.add_argument("--calibration-crops", type=int, default=300, help="training crops to calibrate on")
    p.add_argument("--validation-images", type=int, help="validation images to score int8 on (default: all)")
    p.add_argument("--tracking-uri", help="the MLflow registry of models:/ URIs (default: MLFLOW_TRACKING_URI, "
                                          "else the project's store)")
    return p


def check(args) -> list[Path]:
    """What can be checked before TensorFlow starts; returns the image paths."""
    from mirnet_pipeline.tasks.config import PROJECT_ROOT

    formats = check_formats(args.formats or tuple(EXPORT_FORMATS))
    if args.int8:
        from mirnet_pipeline.tasks.data.shards import read_manifest

        if "onnx" not in formats:
            raise UsageError("--int8: the int8 model is quantized from the ONNX export; add --format onnx")
        for split in ("train", "validation"):
            read_manifest(Path(args.int8) / split)  # ShardError (a UsageError) names a missing set
        if args.calibration_crops < 1 or (args.validation_images is not None and args.validation_images < 1):
            raise UsageError("--calibration-crops and --validation-images: must be at least 1")
    if registry_reference(args.model) is None:
        from mirnet_pipeline.tasks.export.runtimes import model_files

        if not (Path(args.model).exists() or Path(args.model).is_symlink()):
            raise UsageError(f"model {args.model}: no such file (give a .keras file or models:/<name>@<alias>)")
        model_files(args.model)  # ModelFileError (a UsageError): a link out, a device, a pipe
    from mirnet_pipeline.tasks.export.bundle import check_export_folder

    check_export_folder(args.destination, None if registry_reference(args.model) else args.model)
    if args.images:
        paths = [Path(p) for p in args.images]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise UsageError(f"images {missing[0]}: no such file or folder")
        return paths
    from mirnet_pipeline.tasks.export.verification import default_image_paths

    paths = default_image_paths(PROJECT_ROOT)
    if not paths:
        raise UsageError("no images to verify on: give --images FOLDER")
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_no_credentials("--tracking-uri", args.tracking_uri)
        paths = check(args)
        if args.model.startswith("models:/"):
            uri = tracking_uri(args.tracking_uri)
            if uri:
                os.environ["MLFLOW_TRACKING_URI"] = uri
            check_registered(args.model, uri)
    except UsageError as exc:
        return usage_error(PROG, exc)
    from mirnet_pipeline.tasks.export.bundle import REPORT, log_to_registry, write_verified_export
    from mirnet_pipeline.tasks.export.verification import VerificationError, read_images
    from mirnet_pipeline.tasks.training.trained_models import load_model, registered_version

    model, version = load_model(args.model)
    int8 = None
    if args.int8:
        from mirnet_pipeline.tasks.export.quantize import calibration_crops, validation_pairs

        int8 = (calibration_crops(Path(args.int8) / "train", args.calibration_crops),
                validation_pairs(Path(args.int8) / "validation", args.validation_images))
    try:
        report = write_verified_export(model, args.destination, read_images(paths),
                                       args.formats or tuple(EXPORT_FORMATS), source=f"{args.model} ({version})",
                                       int8=int8)
    except VerificationError as exc:
        print(f"{PROG}: error: {exc}; nothing written", file=sys.stderr)
        return 1
    for name, entry in report["formats"].items():
        print(f"{name:12s} {Path(args.destination) / entry['file']}  max |difference| "
              f"{entry['max_abs_difference']:.1e} on {len(report['images'])} images ({entry['runtime']})")
    if "int8" in report:
        entry = report["int8"]
        print(f"{'int8':12s} {Path(args.destination) / entry['file']}  PSNR {entry['int8']['psnr']:.2f} dB against "
              f"{entry['float32']['psnr']:.2f} dB in float32 (loss {entry['psnr_loss_db']:.2f} dB, goal "
              f"{entry['psnr_loss_goal_db']} dB) on {entry['validation_images']} validation images")
    print(f"report: {Path(args.destination) / REPORT}")
    if args.model.startswith("models:/"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        stored = log_to_registry(client, registered_version(client, args.model), args.destination)
        print(f"stored with {version}: {stored}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
