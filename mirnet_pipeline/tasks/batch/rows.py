"""The batch job's rows: one per source key, their schema (``COLUMNS``,
``frame``), and how they reach the metrics Parquet without any process
holding every key's row.

Each chunk writes its rows as a part of its run (``write_rows``, under the
ledger's ``runs/<run id>/``) and returns only their counts and failures
(``ChunkSummary``; the rows too where their part could not be written). At
the end the flow joins the parts, in key order, into the one metrics file
(``write_metrics``): a first pass reads the few columns
the outlier flags need, a second streams each part through a Parquet writer
with its flags added, one row group per part. The file reads as one table
with one row per key (pandas, ``pyarrow.dataset``, DuckDB).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from mirnet_pipeline.tasks.batch.flags import FLAG_INPUTS, flag_hits, flag_texts
from mirnet_pipeline.tasks.batch.job import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, EnhanceJob
from mirnet_pipeline.tasks.batch.stores import LocalStore, open_store
from mirnet_pipeline.tasks.storage import atomic_write_bytes

MEASURES = ("mean_luminance", "rms_contrast", "colourfulness", "colour_cast", "sharpness")
COLUMNS = (["key", "status", "error", "output_key", "width", "height", "mode", "bit_depth",
            "bytes_in", "bytes_out", "seconds", "model_uri", "model_version", "precision", "runtime", "model_hash",
            "source_version"]
           + [f"before_{m}" for m in MEASURES] + [f"after_{m}" for m in MEASURES]
           + ["psnr", "ssim", "mae", "flags"])
STRINGS = ("key", "status", "error", "output_key", "mode", "model_uri", "model_version", "precision", "runtime",
           "model_hash", "source_version", "flags")
INTEGERS = ("width", "height", "bit_depth", "bytes_in", "bytes_out")
RUNS = "runs"  # the rows of each run, under the ledger's folder or prefix, until its metrics are written
FAILURES_KEPT = 1000  # failures a run lists (artifact, command's output); all are in the metrics


def frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` as a table of ``COLUMNS`` with the metrics' types."""
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    # an error message may quote a file name that is not UTF-8
    table["error"] = [e.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                      if isinstance(e, str) else e for e in table["error"]]
    for name in STRINGS:
        table[name] = table[name].astype("string")
    for name in INTEGERS:
        table[name] = table[name].astype("Int64")
    for name in COLUMNS:
        if name not in STRINGS and name not in INTEGERS:
            table[name] = table[name].astype("float64")
    return table


def parquet_bytes(rows: list[dict]) -> bytes:
    return frame(rows).to_parquet(index=False)


def rows_prefix(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def write_rows(job: EnhanceJob, run_id: str, name: str, rows: list[dict]) -> None:
    """A part of ``run_id``'s rows (``name`` sorts in key order: ``chunk-<index>``)."""
    job.state_store().write(f"{rows_prefix(run_id)}/{name}.parquet", parquet_bytes(rows))


def row_parts(job: EnhanceJob, run_id: str) -> list[str]:
    """The names of ``run_id``'s row parts, in key order."""
    try:
        return sorted(info.key for info in job.state_store().list([f"{rows_prefix(run_id)}/*.parquet"]))
    except FileNotFoundError:
        return []


def clear_rows(job: EnhanceJob) -> None:
    """Delete every run's row parts (those of killed runs at a start, this run's once in the metrics),
    and in a local ledger the folders that held them."""
    store = job.state_store()
    try:
        names = [info.key for info in store.list([f"{RUNS}/*"])]
    except FileNotFoundError:
        return
    for name in names:
        store.delete(name)
    if isinstance(store, LocalStore):
        for folder in sorted({PurePosixPath(name).parent for name in names}, reverse=True):
            with contextlib.suppress(OSError):  # not empty: something of another's, left alone
                (store.root / folder).rmdir()


@dataclass
class ChunkSummary:
    """What a chunk (or a whole run) tells the flow: counts, megapixels and
    image-seconds of the images it enhanced, and its first failures."""

    images: int = 0
    ok: int = 0
    skipped: int = 0
    error: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)  # {"key", "error"}, at most FAILURES_KEPT
    unsaved: list[dict] = field(default_factory=list)  # rows whose part could not be written (a full disk)

    @classmethod
    def of(cls, rows: list[dict]) -> ChunkSummary:
        summary = cls(images=len(rows))
        for row in rows:
            status = row["status"]
            if status == STATUS_OK:
                summary.ok += 1
                summary.megapixels += (row.get("width") or 0) * (row.get("height") or 0) / 1e6
                summary.seconds += row.get("seconds") or 0.0
            elif status == STATUS_SKIPPED:
                summary.skipped += 1
            elif status == STATUS_ERROR:
                summary.error += 1
                if len(summary.failures) < FAILURES_KEPT:
                    summary.failures.append({"key": row["key"], "error": row.get("error")})
        return summary

    def add(self, other: ChunkSummary) -> None:
        for name in ("images", "ok", "skipped", "error", "megapixels", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures[:FAILURES_KEPT - len(self.failures)])
        self.unsaved.extend(other.unsaved)

    def counts(self) -> dict:
        return {"images": self.images, "ok": self.ok, "skipped": self.skipped, "error": self.error,
                "megapixels": self.megapixels, "seconds": self.seconds}


def summarize(rows: list[dict]) -> dict:
    """Counts of the rows, and the megapixels and image-seconds of the images enhanced by this run."""
    return ChunkSummary.of(rows).counts()


def metrics_table(job: EnhanceJob, rows: list[dict]) -> pd.DataFrame:
    """The metrics of ``rows`` held in memory: one row per source key, in key
    order, with the ``flags`` of the images that stand out in the whole table."""
    from mirnet_pipeline.tasks.batch.flags import flag

    table = frame(rows).drop_duplicates("key", keep="last").sort_values("key").reset_index(drop=True)
    table["flags"] = flag(table, job.flag_thresholds)
    return table


def _read_part(store, name: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.read(name)), columns=columns)


def write_metrics(job: EnhanceJob, run_id: str, held: list[dict] = ()) -> tuple[str, int]:
    """Join ``run_id``'s row parts and the rows ``held`` in memory (keys
    refused before any work, rows whose part could not be written) into the
    metrics Parquet, in key order, flags added; returns (where it went, how
    many images are flagged). Memory: the flag inputs (a few numbers a key),
    one part at a time and the held rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    store = job.state_store()
    names = row_parts(job, run_id)
    schema = pa.Schema.from_pandas(frame([]), preserve_index=False)
    held_frame = frame(list(held))
    inputs = [_read_part(store, name, FLAG_INPUTS).to_pandas() for name in names] + [held_frame[FLAG_INPUTS]]
    sizes = [len(part) for part in inputs]
    enhanced, hits = flag_hits(pd.concat(inputs, ignore_index=True), job.flag_thresholds)
    del inputs
    flagged = int(np.logical_or.reduce(list(hits.values())).sum()) if hits and len(enhanced) else 0
    starts = np.cumsum([0, *sizes])

    def flagged_table(table, number: int):
        window = slice(starts[number], starts[number + 1])
        flags = flag_texts(enhanced[window], {k: v[window] for k, v in hits.items()})
        return table.set_column(table.schema.get_field_index("flags"), schema.field("flags"),
                                pa.array(flags, schema.field("flags").type))

    rest = flagged_table(pa.Table.from_pandas(held_frame, schema=schema, preserve_index=False), len(names))
    rest = rest.sort_by("key")
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, schema) as writer:
        for number, name in enumerate(names):
            part = flagged_table(_read_part(store, name).cast(schema), number)
            # the held rows (few) join the part whose keys they fall among
            among = (pc.less_equal(rest["key"], pc.max(part["key"])) if len(part) and number < len(names) - 1
                     else pa.array([True] * len(rest), pa.bool_()))
            writer.write_table(pa.concat_tables([part, rest.filter(among)]).sort_by("key"))
            rest = rest.filter(pc.invert(among))
        writer.write_table(rest)  # all of them when no part was written
    return _put_metrics(job, buffer.getvalue()), flagged


def _put_metrics(job: EnhanceJob, data: bytes) -> str:
    if job.metrics:
        if job.metrics.startswith("s3://"):
            store_uri, _, key = job.metrics.rpartition("/")
            open_store(store_uri, job.endpoint_url, job.region).write(key, data)
        else:
            atomic_write_bytes(job.metrics, data)
        return job.metrics
    job.destination_store().write("metrics.parquet", data)
    return metrics_uri(job)


def metrics_uri(job: EnhanceJob) -> str:
    return job.metrics or f"{job.destination.rstrip('/')}/metrics.parquet"


# what the report reads of the metrics; the columns of a few values each come as categories
REPORT_COLUMNS = ["key", "status", "error", "output_key", "flags", "model_version", "runtime", "precision",
                  *(f"{when}_{m}" for when in ("before", "after") for m in MEASURES), "psnr", "ssim"]
REPORT_CATEGORIES = ["status", "model_version", "runtime", "precision"]


def read_metrics(job: EnhanceJob) -> pd.DataFrame:
    """The columns of the metrics file the report needs, strings held by
    Arrow and the few-valued ones as categories (a fraction of the memory of
    Python objects)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = metrics_uri(job)
    if uri.startswith("s3://"):
        store_uri, _, key = uri.rpartition("/")
        data = open_store(store_uri, job.endpoint_url, job.region).read(key)
    else:
        with open(uri, "rb") as handle:
            data = handle.read()
    table = pq.read_table(io.BytesIO(data), columns=REPORT_COLUMNS, read_dictionary=REPORT_CATEGORIES)
    del data
    strings = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}
    return table.to_pandas(types_mapper=strings.get, self_destruct=True)
