"""What a batch enhancement job is: every image under a source (folder or
S3 prefix) through a model into a destination, with one metrics row per
source object (``EnhanceJob``), checked before any work (``preflight``),
and where each key's output goes (``output_of``).

The job's parts, by concern: ``planning`` (the listing, read as it comes,
and one output per key), ``ledger`` (what a destination holds, for resuming),
``engine`` (a chunk through the model), ``rows`` (the rows of each key and the
metrics Parquet), ``claim`` (one job per destination), ``stopping`` (signals,
a full disk), ``report`` (the run's page); the flow that chains them is
``flows/enhance.py``.

Each output has the format its key's extension names (or ``output_format``),
so its name is known before the image is read. Keys are text in the metrics
and ledger: a name that is not valid UTF-8 (a local file system allows any
bytes) is written with its undecodable bytes as ``\\xNN`` and backslashes
doubled (``key_text``), a reversible escape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mirnet_pipeline.tasks.batch.claim import OWN_FOLDER, staging_folder
from mirnet_pipeline.tasks.batch.flags import FlagThresholds
from mirnet_pipeline.tasks.batch.images import EXTENSIONS, IMAGE_FORMATS
from mirnet_pipeline.tasks.batch.stores import check_reachable, open_store
from mirnet_pipeline.tasks.credentials import check_no_credentials
from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.export.runtimes import RUNTIMES, ModelFileError, model_files, runtime_for
from mirnet_pipeline.tasks.training.trained_models import registry_reference

STATUS_OK, STATUS_SKIPPED, STATUS_ERROR = "ok", "skipped", "error"
# model.precision.PRECISIONS' names, written out so that checking a job does
# not import Keras (a test checks that the two agree)
PRECISION_NAMES = ("float32", "bfloat16", "float16")


# PNG outputs' zlib level: zlib's own default; on photographs level 1 writes
# files a few percent larger in much less time (docs/performance.md measures both)
PNG_LEVEL = 6
CHUNK_WORKERS = 1  # chunks at a time unless the user says otherwise (each has its own I/O threads)


class JobInputError(UsageError):
    """A mistake in what the job was given; the message says what, where and what to do."""


@dataclass(frozen=True)
class EnhanceJob:
    source: str
    destination: str
    model: str  # models:/<name>@<alias>, models:/<name>/<version>, a .keras file or an export (tasks.export)
    # every extension the job reads (globs match in any case: *.jpg takes photo.Jpg)
    include: tuple[str, ...] = tuple(f"*{e}" for e in EXTENSIONS)
    exclude: tuple[str, ...] = ()
    output_format: str | None = None  # PNG, JPEG, WEBP, TIFF, BMP; None: same as input
    suffix: str = ""
    png_level: int = PNG_LEVEL  # zlib level of PNG outputs: 0 (fastest, largest) to 9 (slowest, smallest)
    reference: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    max_pixels: int = 100_000_000
    tile: int = 512
    overlap: int = 32
    batch_size: int = 4  # whole images of one size per model call
    tile_batch_size: int = 2  # tiles per model call (bounds memory for large photos)
    chunk_size: int = 200
    chunks_in_flight: int = 8  # chunks submitted and not yet collected (bounds the flow's memory and task runs)
    workers: int = 4
    precision: str = "float32"  # or bfloat16 / float16: faster where the hardware has it, slightly different output
    # keras, onnxruntime, openvino or tensorflow (a SavedModel); None: the model file's own
    # (keras for .keras files and registry URIs; a registry version's exports are run by naming one)
    runtime: str | None = None
    metrics: str | None = None  # default: <destination>/metrics.parquet
    state_dir: str | None = None  # folder or s3:// prefix of the resume ledger; default: <destination>/.enhance
    lease_seconds: float = 60.0  # an S3 destination's claim lapses this long after its holder's last renewal
    flag_thresholds: FlagThresholds = FlagThresholds()  # when an image stands out (tasks.batch.flags)

    def __post_init__(self):
        for name in ("source", "destination", "model", "reference", "endpoint_url", "metrics", "state_dir"):
            check_no_credentials(name, getattr(self, name))
        if not (math.isfinite(self.lease_seconds) and self.lease_seconds > 0):
            raise JobInputError(f"lease_seconds: must be a positive number of seconds, got {self.lease_seconds}")
        if self.precision not in PRECISION_NAMES:
            raise JobInputError(f"precision: expected one of {', '.join(PRECISION_NAMES)}, got {self.precision!r}")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise JobInputError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.output_format is not None and self.output_format.upper() not in IMAGE_FORMATS:
            raise JobInputError(f"output_format: expected one of {', '.join(IMAGE_FORMATS)}, "
                                f"got {self.output_format!r}")
        for name in ("max_pixels", "tile", "batch_size", "tile_batch_size", "chunk_size", "chunks_in_flight",
                     "workers"):
            if getattr(self, name) < 1:
                raise JobInputError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.png_level <= 9:
            raise JobInputError(f"png_level: expected 0 (fastest) to 9 (smallest), got {self.png_level}")
        if not 0 <= 2 * self.overlap < self.tile:
            raise JobInputError(f"overlap: must be at least 0 and less than half the tile ({self.tile}), "
                                f"got {self.overlap}")

    def state_uri(self) -> str:
        """Where the resume ledger lives: with the destination (``.enhance``
        under its folder or prefix), so every worker on every machine, and a
        re-run from any directory, sees the same state."""
        return self.state_dir or f"{self.destination.rstrip('/')}/{OWN_FOLDER}"

    def state_store(self):
        return open_store(self.state_uri(), self.endpoint_url, self.region)

    def destination_store(self, max_connections: int = 16):
        """The destination; a local one keeps its temporaries in its ``.enhance/tmp``."""
        return open_store(self.destination, self.endpoint_url, self.region, max_connections,
                          staging=staging_folder(self.destination))


def preflight(job: EnhanceJob) -> None:
    """Check what can be checked without Keras or the registry: the local
    folders exist, the S3 buckets answer with the credentials at hand, and the
    model is a well-formed registry URI or a model whose files are what they
    should be (none of their bytes read)."""
    for name, location in (("source", job.source), ("reference", job.reference)):
        if location and not location.startswith("s3://") and not Path(location).is_dir():
            raise JobInputError(f"{name} {location}: no such folder (give a folder or an s3://bucket/prefix)")
    try:
        registered = registry_reference(job.model)
    except ValueError as exc:
        raise JobInputError(str(exc)) from None
    if registered is None:
        if not Path(job.model).exists():
            raise JobInputError(f"model {job.model}: no such file (give a .keras file, an exported model "
                                "or models:/<name>@<alias>)")
        try:
            runtime_for(job.model, job.runtime)
            model_files(job.model)
        except ModelFileError as exc:
            raise JobInputError(str(exc)) from None
    locations = {job.source: "source", job.destination: "destination", job.reference: "reference",
                 job.state_uri(): "state-dir", job.metrics: "metrics"}
    for location, name in locations.items():
        if location and location.startswith("s3://"):
            try:
                check_reachable(location, job.endpoint_url, job.region)
            except ValueError as exc:
                raise JobInputError(f"{name} {exc}") from None


def output_key(key: str, suffix: str, fmt: str) -> str:
    """Where ``key``'s output goes: its normalised path (``dir//./a.png`` is
    ``dir/a.png``), ``suffix`` added to the stem, the extension of ``fmt``."""
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}{suffix}{IMAGE_FORMATS[fmt]}"))


def output_format(job: EnhanceJob, key: str) -> str:
    """The job's output format, else the one the key's extension names (PNG
    for an extension no format claims)."""
    return (job.output_format or EXTENSIONS.get(PurePosixPath(key).suffix.lower(), "PNG")).upper()


def output_of(job: EnhanceJob, key: str) -> str:
    """The output key the job writes for ``key``."""
    return output_key(key, job.suffix, output_format(job, key))


def key_text(key: str) -> str:
    """``key`` as it is stored in the metrics and ledger: unchanged when it is
    UTF-8 without backslashes, else with undecodable bytes as ``\\xNN`` and
    each backslash doubled (reversible)."""
    raw = key.encode("utf-8", "surrogateescape")
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
