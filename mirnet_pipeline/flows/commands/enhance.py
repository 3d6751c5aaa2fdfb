"""The ``mirnet-enhance`` command: enhance every image under a folder or S3 prefix.

    mirnet-enhance SOURCE DESTINATION --model models:/mirnet_lol@candidate
    mirnet-enhance photos enhanced --model models/mirnet_lol/model.keras --tracking-uri sqlite:////srv/mlflow.db
    mirnet-enhance photos enhanced --model exported/mirnet/model.onnx          # ONNX Runtime
    mirnet-enhance photos enhanced --model models:/mirnet@champion --runtime openvino

What the user gives is checked first, before Prefect, Keras or TensorFlow
are imported: the options, that no option carries credentials, that local
folders exist and S3 buckets answer, that the model's files are what they
should be or the registry holds the model and its files, that the destination
is not the source and can be written. A mistake costs a second and ends with
one line (``mirnet-enhance: error: ...``) and exit status 2; the flow itself
is ``flows/enhance.py``. Paths are the user's, read from the working
directory. The MLflow registry is ``--tracking-uri``, else
``MLFLOW_TRACKING_URI``, else the project's own store (params.yaml's
``mlflow.tracking_uri``, read from the project's folder), wherever the
command runs from.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from mirnet_pipeline.flows.commands import HelpWithDefaults, check_registered, tracking_uri, usage_error
from mirnet_pipeline.tasks.batch.claim import own_folder
from mirnet_pipeline.tasks.batch.flags import FlagThresholds
from mirnet_pipeline.tasks.batch.images import IMAGE_FORMATS
from mirnet_pipeline.tasks.batch.job import CHUNK_WORKERS, PRECISION_NAMES, EnhanceJob, JobInputError, preflight
from mirnet_pipeline.tasks.batch.planning import check_locations
from mirnet_pipeline.tasks.credentials import check_no_credentials
from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.export.runtimes import RUNTIMES

PROG = "mirnet-enhance"
JOB = {f.name: f.default for f in dataclasses.fields(EnhanceJob) if f.default is not dataclasses.MISSING}
NOT_JOB_FIELDS = ("chunk_workers", "dask_address", "include", "tracking_uri")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Enhance every image under a folder or S3 prefix into "
                                "another, with a metrics Parquet of one row per image.",
                                formatter_class=HelpWithDefaults)
    p.add_argument("source", help="folder or s3://bucket/prefix of the images")
    p.add_argument("destination", help="folder or s3://bucket/prefix for the enhanced images")
    p.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version>, a .keras file "
                                                  "or an export (model.onnx, openvino/model.xml, saved_model/)")
    p.add_argument("--runtime", choices=list(RUNTIMES),
                   help="what runs the model (default: the file's own; keras for registry URIs, whose exports "
                        "run when a runtime is named)")
    p.add_argument("--tracking-uri", help="the MLflow registry of models:/ URIs (default: MLFLOW_TRACKING_URI, "
                                          "else the project's store)")
    p.add_argument("--include", action="append", default=None,
                   help="glob of keys to take, in any case (repeatable; default: every image extension)")
    p.add_argument("--exclude", action="append", default=[], help="glob of keys to leave out (repeatable)")
    p.add_argument("--format", dest="output_format", choices=list(IMAGE_FORMATS), type=str.upper,
                   help="output format (default: the format each input's extension names)")
    p.add_argument("--suffix", default=JOB["suffix"], help="added to each output name before the extension")
    p.add_argument("--png-level", type=int, default=JOB["png_level"],
                   help="zlib level of PNG outputs, 0-9: higher is slower and, on drawings and flat colour, "
                        "smaller; 1 is much faster, and on photographs a few percent larger than the default")
    p.add_argument("--reference", help="folder or s3:// prefix of ground truth with the same keys")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--region", help="S3 region (default: the AWS configuration's)")
    p.add_argument("--max-pixels", type=int, default=JOB["max_pixels"], help="larger images are refused unread")
    p.add_argument("--tile", type=int, default=JOB["tile"], help="larger images go through the model in tiles")
    p.add_argument("--overlap", type=int, default=JOB["overlap"], help="pixels of overlap between tiles")
    p.add_argument("--batch-size", type=int, default=JOB["batch_size"], help="whole images of one size per model call")
    p.add_argument("--tile-batch-size", type=int, default=JOB["tile_batch_size"], help="tiles per model call")
    p.add_argument("--chunk-size", type=int, default=JOB["chunk_size"], help="images per chunk (one Prefect task)")
    p.add_argument("--precision", choices=list(PRECISION_NAMES), default=JOB["precision"],
                   help="compute precision: bfloat16 (recent x86 CPUs) or float16 (GPUs) is faster and "
                        "changes the output slightly")
    p.add_argument("--workers", type=int, default=JOB["workers"], help="I/O threads per chunk")
    p.add_argument("--chunk-workers", type=int, default=CHUNK_WORKERS, help="chunks in parallel (threads)")
    p.add_argument("--chunks-in-flight", type=int, default=JOB["chunks_in_flight"],
                   help="chunks submitted and not yet collected (at least the chunk workers or Dask workers)")
    p.add_argument("--metrics", help="where the metrics Parquet goes (default: DESTINATION/metrics.parquet)")
    p.add_argument("--state-dir", help="where the resume ledger goes (default: DESTINATION/.enhance)")
    p.add_argument("--dask-address", help="run chunks on this Dask scheduler")
    p.add_argument("--flag", dest="flag_thresholds", action="append", default=[], metavar="NAME=VALUE",
                   help="when an image is flagged as standing out (repeatable): z (modified z-score), colour_cast, "
                        "brightness, contrast, sharpness, slow; see the docs' batch page for the defaults")
    return p


def parse(argv: list[str]) -> tuple[EnhanceJob, argparse.Namespace]:
    """The job the arguments describe (``ValueError`` naming the option if one is bad)."""
    args = parser().parse_args(argv)
    for name in ("tracking_uri", "dask_address"):
        check_no_credentials(f"--{name.replace('_', '-')}", getattr(args, name))
    fields = {k: v for k, v in vars(args).items() if k not in NOT_JOB_FIELDS}
    fields["exclude"] = tuple(args.exclude)
    try:
        fields["flag_thresholds"] = FlagThresholds.parse(args.flag_thresholds)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None
    if args.include:
        fields["include"] = tuple(args.include)
    return EnhanceJob(**fields), args


def check_exported(job: EnhanceJob) -> None:
    """An exported model opens on its runtime (a corrupt file fails here, named,
    not in the first chunk); opened once, the chunks of this process reuse it."""
    from mirnet_pipeline.tasks.batch.engine import load_job_model

    load_job_model(job.model, job.precision, job.runtime)


def main(argv: list[str] | None = None) -> int:
    try:
        job, args = parse(sys.argv[1:] if argv is None else argv)
        preflight(job)
        check_locations(job)
        uri = tracking_uri(args.tracking_uri)
        if uri:
            os.environ["MLFLOW_TRACKING_URI"] = uri  # for this process and the workers it starts
        if job.model.startswith("models:/"):
            check_registered(job.model, uri, job.runtime)
        if job.runtime not in (None, "keras") or (not job.model.startswith("models:/")
                                                  and Path(job.model).suffix != ".keras"):
            check_exported(job)
        if not job.destination.startswith("s3://"):  # last: the destination's own folder is made here
            own_folder(job.destination)
    except UsageError as exc:
        return usage_error(PROG, exc)
    from mirnet_pipeline.flows.enhance import run

    return run(job, args.dask_address, args.chunk_workers)


if __name__ == "__main__":
    sys.exit(main())
