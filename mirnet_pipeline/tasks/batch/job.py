"""Batch enhancement: every image under a source (folder or S3 prefix) through
a model into a destination, with one metrics row per source object.

Work is split into chunks of keys (one Prefect task each). Within a chunk,
reading and decoding run ahead in a thread pool while the model works, images
of one size are batched, large images go through in overlapping tiles, and
encoding and writing run in the pool too. A bad file becomes an ``error`` row
and the batch goes on. Each chunk's rows of enhanced images land in a Parquet
part file of the resume ledger after their outputs are written (each start
folds the parts into one snapshot, ``ledger``); a re-run skips keys whose
output exists for the same source version and model (``skipped``), so a
killed batch resumes without duplicates. The rows every chunk returns make
the metrics file at the end (``metrics_table``, ``write_metrics``).

Nothing is overwritten that the job did not write itself: every output key is
planned before any work (``plan``), and a key whose output would be another
key's (``x.png`` and ``x.PNG``, ``a.jpg`` and ``a.jpeg``, ``dir//a.png`` and
``dir/a.png``) gets an error row naming the key that keeps the output (the
first in sorted order). A destination equal to the source, or holding it, is
refused; a destination inside the source is left out of the listing. Each
output has the format its key's extension names (or ``output_format``), so
its name is known before the image is read.

Keys are text in the metrics and ledger: a name that is not valid UTF-8 (a
local file system allows any bytes) is written with its undecodable bytes as
``\\xNN`` and backslashes doubled (``key_text``), a reversible escape.

The job touches only what it owns: a local destination's temporaries live in
its ``.enhance/tmp`` (``claim``), nothing is written through a link
(``stores``), one job holds a destination at a time (``claim``), and a signal
or a full disk stops it with everything done written (``stopping``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mirnet_pipeline.tasks.batch.claim import OWN_FOLDER, staging_folder
from mirnet_pipeline.tasks.batch.flags import FlagThresholds, flag
from mirnet_pipeline.tasks.batch.images import (
    EXTENSIONS,
    HEADER_BYTES,
    IMAGE_FORMATS,
    ImageError,
    check_header,
    decode,
    encode,
    no_reference,
)
from mirnet_pipeline.tasks.batch.stopping import Stop, destination_fault, stop_of
from mirnet_pipeline.tasks.batch.stores import UnsafeKey, check_key, check_reachable, open_store
from mirnet_pipeline.tasks.credentials import check_no_credentials
from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.export.runtimes import RUNTIMES, ModelFileError, model_files, runtime_for
from mirnet_pipeline.tasks.storage import atomic_write_bytes
from mirnet_pipeline.tasks.training.trained_models import load_model as load_trained
from mirnet_pipeline.tasks.training.trained_models import registry_reference
from mirnet_pipeline.tasks.tuning import limit_malloc_arenas, release_freed_memory

STATUS_OK, STATUS_SKIPPED, STATUS_ERROR = "ok", "skipped", "error"
# model.precision.PRECISIONS' names, written out so that checking a job does
# not import Keras (a test checks that the two agree)
PRECISION_NAMES = ("float32", "bfloat16", "float16")
MEASURES = ("mean_luminance", "rms_contrast", "colourfulness", "colour_cast", "sharpness")
COLUMNS = (["key", "status", "error", "output_key", "width", "height", "mode", "bit_depth",
            "bytes_in", "bytes_out", "seconds", "model_uri", "model_version", "precision", "runtime", "model_hash",
            "source_version"]
           + [f"before_{m}" for m in MEASURES] + [f"after_{m}" for m in MEASURES]
           + ["psnr", "ssim", "mae", "flags"])


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


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded once per process, its version, the runtime that runs it,
    the hash of its file(s), and the lock that lets one inference at a time run
    on it (each runtime already uses every core for one)."""

    model: object
    version: str
    runtime: str = "keras"
    hash: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


@functools.lru_cache(maxsize=4)
def load_job_model(uri: str, precision: str = "float32", runtime: str | None = None) -> LoadedModel:
    """The model from MLflow (``models:/...``), a ``.keras`` file or an export,
    run by ``runtime`` in ``precision``; chunk processors of one process share
    it and its lock. ``ModelFileError`` names a file that cannot be run."""
    from mirnet_pipeline.tasks.export.runtimes import ExportedModel, model_hash
    from mirnet_pipeline.tasks.training.trained_models import runnable_file

    path, label = runnable_file(uri, runtime)
    if path is None:  # a registry version from before the .keras file was stored with it
        model, label = load_trained(uri)
        return LoadedModel(_with_precision(model, precision), label)
    runtime = runtime_for(path, runtime)
    digest = model_hash(path)
    label = label or f"sha256:{digest.removeprefix('sha256:')[:12]}"
    if runtime == "keras":
        model, _ = load_trained(path)
        return LoadedModel(_with_precision(model, precision), label, runtime, digest)
    return LoadedModel(ExportedModel(path, runtime, precision), label, runtime, digest)


def _with_precision(model, precision: str):
    from mirnet_pipeline.model import with_precision

    return with_precision(model, precision)


def _stored(row: dict, name: str, default):
    """``row[name]`` of a ledger row, ``default`` where the part predates the column or holds no value."""
    value = row.get(name)
    return default if value is None or value is pd.NA or value != value else value


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


def plan(job: EnhanceJob, infos: list) -> tuple[list, list[dict]]:
    """(the objects to process, error rows for those whose output another key
    already has): every kept key gets its own output key."""
    owners: dict[str, str] = {}
    keep, refused = [], []
    previous = None
    for info in sorted(infos, key=lambda i: i.key):
        if info.key == previous:  # listed twice (a listing that repeats a page): one object, one row
            continue
        previous = info.key
        target = output_of(job, info.key)
        owner = owners.setdefault(target, info.key)
        if owner == info.key:
            keep.append(info)
        else:
            refused.append({"key": key_text(info.key), "status": STATUS_ERROR, "bytes_in": info.size,
                            "source_version": info.version, "model_uri": job.model, "precision": job.precision,
                            "error": f"output {key_text(target)} is already the output of {key_text(owner)} "
                                     "(keys that differ only in case, extension spelling or slashes): "
                                     "rename one of them"})
    return keep, refused


class OverlappingLocations(UsageError):
    """Source and destination where outputs would overwrite or mix with the originals."""


def _location(uri: str) -> tuple[str, str]:
    """(store, normalised path with a trailing slash) for comparing locations."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = "/".join(part for part in prefix.split("/") if part not in ("", "."))
        return f"s3://{bucket}", f"{prefix}/" if prefix else ""
    return "local", str(Path(uri).resolve()).rstrip("/") + "/"


def check_locations(job: EnhanceJob) -> None:
    """Refuse a destination that is the source or holds it (before anything is
    written there)."""
    (src_store, src), (dst_store, dst) = _location(job.source), _location(job.destination)
    if src_store == dst_store and src.startswith(dst):
        where = "is" if src == dst else "holds"
        raise OverlappingLocations(f"destination {job.destination} {where} the source {job.source}: outputs would "
                                   "overwrite or mix with the originals; choose a destination outside it")


def listing(job: EnhanceJob) -> list:
    """The source's objects for ``job``, less a destination inside the source."""
    check_locations(job)
    (src_store, src), (dst_store, dst) = _location(job.source), _location(job.destination)
    infos = open_store(job.source, job.endpoint_url, job.region).list(job.include, job.exclude)
    if src_store == dst_store and dst.startswith(src):
        inner = dst[len(src):]  # the destination's folder, relative to the source
        infos = [info for info in infos if not info.key.startswith(inner)]
    return infos


def _reference_scores(reference: np.ndarray, output: np.ndarray) -> dict:
    from mirnet_pipeline.model import reference_scores

    if reference.shape != output.shape:
        raise ImageError(f"reference is {reference.shape[1]}x{reference.shape[0]}, "
                         f"output {output.shape[1]}x{output.shape[0]}")
    return reference_scores(reference[None], output[None])[0]


class ChunkProcessor:
    """Enhances one chunk of keys; safe to use from several threads."""

    def __init__(self, job: EnhanceJob):
        limit_malloc_arenas()  # before the I/O threads start
        self.job = job
        self.source = open_store(job.source, job.endpoint_url, job.region, job.workers * 2)
        self.destination = job.destination_store(job.workers * 2)
        self.reference = open_store(job.reference, job.endpoint_url, job.region) if job.reference else None
        loaded = load_job_model(job.model, job.precision, job.runtime)
        self.model, self.model_version, self.lock = loaded.model, loaded.version, loaded.lock
        self.runtime, self.model_hash = loaded.runtime, loaded.hash

    def _infer_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Images of one shape: batched whole when they fit a tile, else tiled one by one."""
        from mirnet_pipeline.model import infer, infer_tiled

        with self.lock:
            height, width = images[0].shape[:2]
            if height <= self.job.tile and width <= self.job.tile:
                return list(infer(self.model, np.stack(images), batch_size=len(images)))
            return [infer_tiled(self.model, image, tile=self.job.tile, overlap=self.job.overlap,
                                  batch_size=self.job.tile_batch_size) for image in images]

    def _read(self, key: str, size: int):
        """(decoded image, error, seconds spent); the file's first bytes and
        ``size`` are checked before it is read whole."""
        started = time.perf_counter()
        try:
            check_key(key)
            check_header(self.source.read_head(key, HEADER_BYTES), size, self.job.max_pixels)
            return decode(self.source.read(key), key, self.job.max_pixels), None, time.perf_counter() - started
        except (ImageError, UnsafeKey) as exc:
            return None, str(exc), time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001  (storage errors: one row, not the batch)
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started

    def _finish(self, row: dict, decoded, output: np.ndarray) -> dict:
        """Encode, write and measure; adds its own time to ``row["seconds"]``."""
        started = time.perf_counter()
        key = row.pop("_key")  # the object's own key (row["key"] is its text form)
        out_key = output_of(self.job, key)
        encoded = encode(decoded, output, output_format(self.job, key))
        self.destination.write(out_key, encoded, metadata={
            "source-version": row["source_version"], "model": self.job.model, "model-version": self.model_version,
            "precision": self.job.precision, "runtime": self.runtime})
        row.update(status=STATUS_OK, output_key=key_text(out_key), bytes_out=len(encoded))
        row.update({f"before_{k}": v for k, v in no_reference(decoded.rgb).items()})
        row.update({f"after_{k}": v for k, v in no_reference(output).items()})
        if self.reference is not None:
            try:
                ref = decode(self.reference.read(key), key, self.job.max_pixels)
                row.update(_reference_scores(ref.rgb, output))
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"reference: {exc}"
        row["seconds"] += time.perf_counter() - started
        return row

    def run(self, infos: list, done: dict, on_row=None, stop: Stop | None = None) -> list[dict]:
        """The chunk's rows; ``on_row()`` is called as each one is done
        (progress). Once ``stop`` is set no more images are read: the rows are
        those of the images done (a write that finds the destination full or
        read-only sets it)."""
        stop = stop if stop is not None else Stop()
        rows = _Rows(on_row)
        todo = []
        for info in infos:
            base = {"key": key_text(info.key), "_key": info.key, "bytes_in": info.size,
                    "source_version": info.version, "model_uri": self.job.model,
                    "model_version": self.model_version, "precision": self.job.precision,
                    "runtime": self.runtime, "model_hash": self.model_hash}
            previous = done.get(base["key"])
            # the same source object, model, runtime and precision: a re-exported
            # or replaced model file is another model (rows from before the hash
            # column was written have none: their model_version decides)
            same = (previous is not None
                    and (previous["source_version"], previous["model_version"], previous["precision"],
                         previous["runtime"]) == (info.version, self.model_version, self.job.precision, self.runtime)
                    and previous.get("model_hash") in (None, self.model_hash))
            if same and self.destination.exists(output_of(self.job, info.key)):
                # its measures and the time it took stay: the whole destination is judged on one scale
                rows.append({**previous, "status": STATUS_SKIPPED})
            else:
                todo.append(base)
        with ThreadPoolExecutor(self.job.workers) as pool:
            # reads run at most `ahead` images in front of the model, and finished
            # writes are collected as they go: memory follows the settings, not the chunk
            ahead = self.job.workers + self.job.batch_size
            queue = iter(todo)
            reads: collections.deque = collections.deque()

            def read_ahead():
                while len(reads) < ahead and not stop.requested:
                    base = next(queue, None)
                    if base is None:
                        return
                    reads.append((base, pool.submit(self._read, base["_key"], base["bytes_in"])))

            writes: collections.deque = collections.deque()

            def collect(block_above: int):
                while writes and (len(writes) > block_above or writes[0][1].done()):
                    row, future = writes.popleft()
                    try:
                        rows.append(future.result())
                    except Exception as exc:  # noqa: BLE001
                        row.pop("_key", None)
                        rows.append({**row, "status": STATUS_ERROR, "error": f"write: {exc}"})
                        if destination_fault(exc):
                            stop.request(f"destination {self.job.destination}: {exc.strerror}")

            pending: list = []  # same-size images waiting to be batched

            def flush():
                if not pending:
                    return
                started = time.perf_counter()
                try:
                    outputs = self._infer_batch([d.rgb for _, d, _ in pending])
                except Exception as exc:  # noqa: BLE001
                    rows.extend({**_public(r), "status": STATUS_ERROR, "error": f"inference: {exc}"}
                                for r, _, _ in pending)
                    pending.clear()
                    return
                share = (time.perf_counter() - started) / len(pending)
                for (row, decoded, seconds), output in zip(pending, outputs, strict=True):
                    row["seconds"] = seconds + share
                    writes.append((row, pool.submit(self._finish, row, decoded, output)))
                pending.clear()
                collect(block_above=self.job.workers)

            read_ahead()
            while reads:
                base, future = reads.popleft()
                decoded, error, seconds = future.result()
                read_ahead()
                if error is not None:
                    rows.append({**_public(base), "status": STATUS_ERROR, "error": error, "seconds": seconds})
                    continue
                row = {**base, "width": decoded.size[0], "height": decoded.size[1],
                       "mode": decoded.mode, "bit_depth": decoded.bits}
                if pending and (pending[0][1].pixels.shape != decoded.pixels.shape
                                or len(pending) >= self.job.batch_size):
                    flush()
                pending.append((row, decoded, seconds))
                width, height = decoded.size
                if width > self.job.tile or height > self.job.tile:
                    flush()  # tiled one by one anyway: no reason to hold it
                    release_freed_memory()  # the previous photo's buffers
            flush()
            collect(block_above=0)
        return rows


def _public(row: dict) -> dict:
    """``row`` without the fields only the processor uses."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def frame(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    # an error message may quote a file name that is not UTF-8
    table["error"] = [e.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                      if isinstance(e, str) else e for e in table["error"]]
    for name in ("key", "status", "error", "output_key", "mode", "model_uri", "model_version", "precision",
                 "runtime", "model_hash", "source_version", "flags"):
        table[name] = table[name].astype("string")
    for name in ("width", "height", "bit_depth", "bytes_in", "bytes_out"):
        table[name] = table[name].astype("Int64")
    for name in COLUMNS:
        if name.startswith(("before_", "after_")) or name in ("seconds", "psnr", "ssim", "mae"):
            table[name] = table[name].astype("float64")
    return table


LEDGER_PARTS = "part-*.parquet"
SNAPSHOTS = "snapshot-*.parquet"
DAMAGED = "damaged"  # where files that cannot be read are set aside, under the ledger's folder or prefix
FOLDED = b"ledger_parts"  # the snapshot's Parquet metadata: the parts folded into it, {name: version} (JSON)
LEDGER_COLUMNS = {"key", "status", "source_version", "model_version"}


def _read_ledger_file(store, name: str, job: EnhanceJob, set_aside: list[str]):
    """(rows, the parts folded into it as {name: version}) of a ledger part or snapshot; None when it
    cannot be read, after moving it to ``damaged/`` and naming it in ``set_aside``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(store.read(name)))
        if table.num_rows and not LEDGER_COLUMNS <= set(table.column_names):
            raise ValueError("not a ledger file: it lacks the key, status and version columns")
        folded = json.loads((table.schema.metadata or {}).get(FOLDED, b"{}"))
        return table.to_pandas().to_dict("records"), folded
    except Exception as exc:  # noqa: BLE001  (Arrow's errors for damaged files are of many kinds)
        store.move(name, f"{DAMAGED}/{name}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        set_aside.append(f"{job.state_uri().rstrip('/')}/{name}: {first[:200]} (moved to {DAMAGED}/)")
        return None


def ledger(job: EnhanceJob) -> tuple[dict, list[str]]:
    """(key -> the row of its latest success, i.e. what its output holds now;
    the files set aside). The ledger is a snapshot (``snapshot-<generation>``)
    and the parts chunks wrote since (``part-<run>-<chunk>``); reading it
    folds those parts into a new snapshot (``compact_ledger``), so a start
    reads one snapshot and the parts of the runs since the last one, however
    many runs came before. A file that cannot be read is moved to
    ``damaged/`` under the ledger and named in the list: what it described
    is simply done again."""
    store = job.state_store()
    try:
        versions = {info.key: info.version for info in store.list([LEDGER_PARTS, SNAPSHOTS]) if "/" not in info.key}
    except FileNotFoundError:  # no ledger yet
        versions = {}
    names = sorted(versions)
    snapshots = [n for n in names if n.startswith("snapshot-")]
    parts = [n for n in names if n.startswith("part-")]
    done, set_aside, folded = {}, [], {}
    base = None
    for snapshot in reversed(snapshots):  # the newest that can be read
        read = _read_ledger_file(store, snapshot, job, set_aside)
        if read is not None:
            base = snapshot
            rows, folded = read[0], read[1]
            done = {row["key"]: row for row in rows}
            break
    # part names sort by their run's start time; a part folded already is the same name and version
    fresh = [p for p in parts if folded.get(p) != versions[p]]
    for part in fresh:
        read = _read_ledger_file(store, part, job, set_aside)
        for row in read[0] if read else []:
            if row["status"] in (STATUS_OK, STATUS_SKIPPED):
                # parts written before these columns existed
                row["precision"] = _stored(row, "precision", "float32")
                row["runtime"] = _stored(row, "runtime", "keras")
                row["model_hash"] = _stored(row, "model_hash", None)
                done[row["key"]] = row
    try:
        compact_ledger(store, done, base, {p: versions[p] for p in fresh},
                       leftovers=[n for n in names if n != base and n not in fresh])
    except OSError:  # a full or read-only ledger: the next start folds them; the job meets the fault itself
        pass
    return done, set_aside


def compact_ledger(store, done: dict, base: str | None, fresh: dict[str, str], leftovers: list[str]) -> None:
    """Fold the ``fresh`` parts ({name: version}) into a new snapshot of ``done`` (the next
    generation after ``base``, naming the parts in its metadata), then delete
    the parts and older snapshots it replaces. A kill at any moment loses
    nothing: until the new snapshot is whole the old one and the parts are
    read; after, the parts it names are skipped and deleted by the next start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fresh:
        generation = int(base.removeprefix("snapshot-").removesuffix(".parquet")) + 1 if base else 1
        table = pa.Table.from_pandas(frame(list(done.values())), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), FOLDED: json.dumps(fresh).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        store.write(f"snapshot-{generation:012d}.parquet", buffer.getvalue())
        leftovers = [*fresh, *([base] if base else []), *leftovers]
    for name in sorted(leftovers):  # parts oldest first, then snapshots
        store.delete(name)


class _Rows(list):
    """A chunk's rows, each reported to ``on_row`` as it is added."""

    def __init__(self, on_row=None):
        super().__init__()
        self.on_row = on_row

    def append(self, row: dict) -> None:
        super().append(row)
        if self.on_row is not None:
            self.on_row()


# run id -> callback(chunk index) of a job whose chunks run in this process
# (threads): progress per image. Chunks in other processes (Dask) report when done.
PROGRESS: dict = {}


@contextlib.contextmanager
def progress_reports(run_id: str, callback):
    """Within the block, chunks of ``run_id`` run in this process call
    ``callback(chunk index)`` per image done. (A flow refers to this function,
    never to the registry itself: Dask pickles the flow's globals.)"""
    PROGRESS[run_id] = callback
    try:
        yield
    finally:
        PROGRESS.pop(run_id, None)


def process_chunk(job: EnhanceJob, infos: list, run_id: str, index: int, done: dict) -> list[dict]:
    """Enhance one chunk and save its rows to the resume ledger; ``done``: the
    ledger's rows for these keys (the flow reads the ledger once per job).
    A chunk of a job that is stopping returns at once, or after the images it
    has read; where the ledger cannot be written (a full disk) its rows still
    return, and the job stops."""
    stop = stop_of(run_id)
    if stop is None:  # a chunk on a Dask worker runs to its end
        stop = Stop()
    if stop.requested:
        return []
    processor = ChunkProcessor(job)
    progress = PROGRESS.get(run_id)
    rows = list(processor.run(infos, done, on_row=(lambda: progress(index)) if progress else None, stop=stop))
    enhanced = [row for row in rows if row["status"] == STATUS_OK]  # the rest are in the ledger or not needed
    if enhanced:
        try:
            job.state_store().write(f"part-{run_id}-{index:06d}.parquet", frame(enhanced).to_parquet(index=False))
        except OSError as exc:
            if not destination_fault(exc):
                raise
            stop.request(f"ledger {job.state_uri()}: {exc.strerror}")
    return rows


def new_run_id() -> str:
    """Sortable by start time (the ledger relies on it), unique."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:6]


def metrics_table(job: EnhanceJob, rows: list[dict]) -> pd.DataFrame:
    """The metrics: one row per source key, in key order, with the ``flags``
    of the images that stand out in the whole table."""
    table = frame(rows).drop_duplicates("key", keep="last").sort_values("key").reset_index(drop=True)
    table["flags"] = flag(table, job.flag_thresholds)
    return table


def write_metrics(job: EnhanceJob, table: pd.DataFrame) -> str:
    """Write the metrics Parquet (``metrics_table``); returns where it went."""
    data = table.to_parquet(index=False)
    if job.metrics:
        if job.metrics.startswith("s3://"):
            store_uri, _, key = job.metrics.rpartition("/")
            open_store(store_uri, job.endpoint_url, job.region).write(key, data)
        else:
            atomic_write_bytes(job.metrics, data)
        return job.metrics
    job.destination_store().write("metrics.parquet", data)
    return f"{job.destination.rstrip('/')}/metrics.parquet"


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def summarize(rows: list[dict]) -> dict:
    """Counts of the rows, and the megapixels and image-seconds of the images enhanced by this run."""
    table = frame(rows)
    enhanced = table[table.status == STATUS_OK]
    return {
        "images": int(len(table)),
        "ok": int(len(enhanced)),
        "skipped": int((table.status == STATUS_SKIPPED).sum()),
        "error": int((table.status == STATUS_ERROR).sum()),
        "megapixels": float((enhanced.width * enhanced.height).fillna(0).sum() / 1e6),
        "seconds": float(enhanced.seconds.fillna(0).sum()),
    }


__all__ = ["EnhanceJob", "EXTENSIONS", "OverlappingLocations", "check_locations", "chunks", "key_text", "ledger",
           "listing", "load_job_model", "metrics_table", "new_run_id", "plan", "process_chunk", "summarize",
           "write_metrics"]
