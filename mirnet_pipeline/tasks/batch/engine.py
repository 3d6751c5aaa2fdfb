"""The chunk engine: one chunk of keys through the model.

Within a chunk, reading and decoding run ahead in a thread pool while the
model works, images of one size are batched, large images go through in
overlapping tiles, and encoding and writing run in the pool too. A bad file
becomes an ``error`` row and the chunk goes on; a key whose output exists
for the same source version, model, runtime and precision is ``skipped``.
After its outputs, a chunk writes the rows of the images it enhanced to the
resume ledger (``ledger``) and all its rows to its run's row parts
(``rows``), so no process holds more than a chunk's rows.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mirnet_pipeline.tasks.batch.images import HEADER_BYTES, ImageError, check_header, decode, encode, no_reference
from mirnet_pipeline.tasks.batch.job import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    EnhanceJob,
    key_text,
    output_format,
    output_of,
)
from mirnet_pipeline.tasks.batch.ledger import write_ledger_part
from mirnet_pipeline.tasks.batch.rows import ChunkSummary, write_rows
from mirnet_pipeline.tasks.batch.stopping import Stop, destination_fault, stop_of
from mirnet_pipeline.tasks.batch.stores import UnsafeKey, check_key, open_store
from mirnet_pipeline.tasks.export.runtimes import runtime_for
from mirnet_pipeline.tasks.training.trained_models import load_model as load_trained
from mirnet_pipeline.tasks.tuning import limit_malloc_arenas, release_freed_memory


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


def _reference_scores(reference: np.ndarray, output: np.ndarray) -> dict:
    from mirnet_pipeline.model import reference_scores

    if reference.shape != output.shape:
        raise ImageError(f"reference is {reference.shape[1]}x{reference.shape[0]}, "
                         f"output {output.shape[1]}x{output.shape[0]}")
    return reference_scores(reference[None], output[None])[0]


def _public(row: dict) -> dict:
    """``row`` without the fields only the processor uses."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


class _Rows(list):
    """A chunk's rows, each reported to ``on_row`` as it is added."""

    def __init__(self, on_row=None):
        super().__init__()
        self.on_row = on_row

    def append(self, row: dict) -> None:
        super().append(row)
        if self.on_row is not None:
            self.on_row()


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

    def infer_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Images of one shape: batched whole when they fit a tile, else tiled one by one."""
        from mirnet_pipeline.model import infer, infer_tiled

        with self.lock:
            height, width = images[0].shape[:2]
            if height <= self.job.tile and width <= self.job.tile:
                return list(infer(self.model, np.stack(images), batch_size=len(images)))
            return [infer_tiled(self.model, image, tile=self.job.tile, overlap=self.job.overlap,
                                  batch_size=self.job.tile_batch_size) for image in images]

    def read(self, key: str, size: int):
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

    def finish(self, row: dict, decoded, output: np.ndarray) -> dict:
        """Encode, write and measure; adds its own time to ``row["seconds"]``."""
        started = time.perf_counter()
        key = row.pop("_key")  # the object's own key (row["key"] is its text form)
        out_key = output_of(self.job, key)
        encoded = encode(decoded, output, output_format(self.job, key), png_level=self.job.png_level)
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

    def base_row(self, info) -> dict:
        """What a key's row says before its image is read."""
        return {"key": key_text(info.key), "_key": info.key, "bytes_in": info.size,
                "source_version": info.version, "model_uri": self.job.model,
                "model_version": self.model_version, "precision": self.job.precision,
                "runtime": self.runtime, "model_hash": self.model_hash}

    def unchanged(self, previous: dict | None, info) -> bool:
        """Whether the ledger's row ``previous`` is of the same source object,
        model, runtime and precision, and its output is still there. A
        re-exported or replaced model file is another model (rows from before
        the hash column have none: their model version decides)."""
        return (previous is not None
                and (previous["source_version"], previous["model_version"],
                     _stored(previous, "precision", "float32"), _stored(previous, "runtime", "keras"))
                == (info.version, self.model_version, self.job.precision, self.runtime)
                and _stored(previous, "model_hash", None) in (None, self.model_hash)
                and self.destination.exists(output_of(self.job, info.key)))

    def run(self, infos, done, on_row=None, stop: Stop | None = None) -> list[dict]:
        """The chunk's rows; ``on_row()`` is called as each one is done
        (progress). Once ``stop`` is set no more images are read: the rows are
        those of the images done (a write that finds the destination full or
        read-only sets it)."""
        rows = _Rows(on_row)
        todo = []
        for info in infos:
            base = self.base_row(info)
            previous = done.get(base["key"])
            if self.unchanged(previous, info):
                # its measures and the time it took stay: the whole destination is judged on one scale
                rows.append({**previous, "status": STATUS_SKIPPED})
            else:
                todo.append(base)
        with ThreadPoolExecutor(self.job.workers) as pool:
            _ChunkRun(self, pool, rows, stop if stop is not None else Stop()).run(todo)
        return rows


class _ChunkRun:
    """One chunk's images through a processor on its thread pool: reads run at
    most ``workers + batch_size`` images in front of the model, images of one
    size wait to be batched, and finished writes are collected as they go, so
    memory follows the settings, not the chunk."""

    def __init__(self, processor: ChunkProcessor, pool: ThreadPoolExecutor, rows: _Rows, stop: Stop):
        self.processor, self.job, self.pool, self.rows, self.stop = processor, processor.job, pool, rows, stop
        self.reads: collections.deque = collections.deque()  # (row, future of the read)
        self.writes: collections.deque = collections.deque()  # (row, future of the write)
        self.pending: list = []  # (row, decoded, seconds) of same-size images waiting to be batched

    def run(self, todo: list[dict]) -> None:
        queue = iter(todo)
        self.read_ahead(queue)
        while self.reads:
            base, future = self.reads.popleft()
            decoded, error, seconds = future.result()
            self.read_ahead(queue)
            if error is None:
                self.batch(base, decoded, seconds)
            else:
                self.rows.append({**_public(base), "status": STATUS_ERROR, "error": error, "seconds": seconds})
        self.flush()
        self.collect(block_above=0)

    def read_ahead(self, queue) -> None:
        while len(self.reads) < self.job.workers + self.job.batch_size and not self.stop.requested:
            base = next(queue, None)
            if base is None:
                return
            self.reads.append((base, self.pool.submit(self.processor.read, base["_key"], base["bytes_in"])))

    def batch(self, base: dict, decoded, seconds: float) -> None:
        """Queue a decoded image for the model: with the pending ones of its size, or after them."""
        row = {**base, "width": decoded.size[0], "height": decoded.size[1], "mode": decoded.mode,
               "bit_depth": decoded.bits}
        if self.pending and (self.pending[0][1].pixels.shape != decoded.pixels.shape
                             or len(self.pending) >= self.job.batch_size):
            self.flush()
        self.pending.append((row, decoded, seconds))
        width, height = decoded.size
        if width > self.job.tile or height > self.job.tile:
            self.flush()  # tiled one by one anyway: no reason to hold it
            release_freed_memory()  # the previous photo's buffers

    def flush(self) -> None:
        """The pending images through the model, their writes onto the pool."""
        if not self.pending:
            return
        started = time.perf_counter()
        try:
            outputs = self.processor.infer_batch([d.rgb for _, d, _ in self.pending])
        except Exception as exc:  # noqa: BLE001
            self.rows.extend({**_public(r), "status": STATUS_ERROR, "error": f"inference: {exc}"}
                             for r, _, _ in self.pending)
            self.pending.clear()
            return
        share = (time.perf_counter() - started) / len(self.pending)
        for (row, decoded, seconds), output in zip(self.pending, outputs, strict=True):
            row["seconds"] = seconds + share
            self.writes.append((row, self.pool.submit(self.processor.finish, row, decoded, output)))
        self.pending.clear()
        self.collect(block_above=self.job.workers)

    def collect(self, block_above: int) -> None:
        """Rows of the finished writes (waiting while more than ``block_above`` are out)."""
        while self.writes and (len(self.writes) > block_above or self.writes[0][1].done()):
            row, future = self.writes.popleft()
            try:
                self.rows.append(future.result())
            except Exception as exc:  # noqa: BLE001
                row.pop("_key", None)
                self.rows.append({**row, "status": STATUS_ERROR, "error": f"write: {exc}"})
                if destination_fault(exc):
                    self.stop.request(f"destination {self.job.destination}: {exc.strerror}")


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


def chunk_name(index: int) -> str:
    return f"chunk-{index:09d}"


def process_chunk(job: EnhanceJob, infos: list, run_id: str, index: int, done) -> list[dict]:
    """Enhance one chunk, save the rows of the images it enhanced to the
    resume ledger and all its rows to the run's row parts; returns the rows.
    ``done``: the ledger's rows (of these keys, or all). A chunk of a job that
    is stopping returns at once, or after the images it has read; where the
    ledger cannot be written (a full disk) its rows still return, and the job
    stops."""
    return _process_chunk(job, infos, run_id, index, done)[0]


def chunk_summary(job: EnhanceJob, infos: list, run_id: str, index: int, done) -> ChunkSummary:
    """``process_chunk`` for the flow: what comes back is the chunk's counts and
    first failures, and its rows only where their part could not be written."""
    rows, saved = _process_chunk(job, infos, run_id, index, done)
    summary = ChunkSummary.of(rows)
    if not saved:
        summary.unsaved = rows
    return summary


def _process_chunk(job: EnhanceJob, infos: list, run_id: str, index: int, done) -> tuple[list[dict], bool]:
    """(the chunk's rows, whether they are saved in its row part)."""
    stop = stop_of(run_id)
    if stop is None:  # a chunk on a Dask worker runs to its end
        stop = Stop()
    if stop.requested:
        return [], True
    progress = PROGRESS.get(run_id)
    rows = list(ChunkProcessor(job).run(infos, done, on_row=(lambda: progress(index)) if progress else None,
                                        stop=stop))
    enhanced = [row for row in rows if row["status"] == STATUS_OK]  # the rest are in the ledger or not needed
    release_freed_memory()  # the chunk's buffers, freed on its I/O threads: a process's memory stays flat
    try:
        if enhanced:
            write_ledger_part(job, run_id, index, enhanced)
        if rows:
            write_rows(job, run_id, chunk_name(index), rows)
    except OSError as exc:
        if not destination_fault(exc):
            raise
        stop.request(f"ledger {job.state_uri()}: {exc.strerror}")
        return rows, False
    return rows, True
