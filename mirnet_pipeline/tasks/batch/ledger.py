"""The resume ledger: which keys a destination holds outputs of, made from
which source version, model, runtime and precision.

It lives with the destination (``DESTINATION/.enhance`` or the job's
``state_dir``): a snapshot (``snapshot-<generation>``) and the parts chunks
wrote since (``part-<run>-<chunk>``, the rows of the images they enhanced,
written after their outputs). Each start folds the parts into the next
snapshot (``compact_ledger``), so a start reads one snapshot and the parts of
the runs since the last start, however many runs came before, and a run that
skips everything writes nothing. The rows stay in Arrow, sorted by key
(``LedgerRows``): a few hundred bytes a key, and each chunk gets the rows of
its own keys by binary search.
"""

from __future__ import annotations

import bisect
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from mirnet_pipeline.tasks.batch.job import STATUS_OK, STATUS_SKIPPED, EnhanceJob
from mirnet_pipeline.tasks.batch.rows import frame, parquet_bytes

LEDGER_PARTS = "part-*.parquet"
SNAPSHOTS = "snapshot-*.parquet"
DAMAGED = "damaged"  # where files that cannot be read are set aside, under the ledger's folder or prefix
FOLDED = b"ledger_parts"  # the snapshot's Parquet metadata: the parts folded into it, {name: version} (JSON)
LEDGER_COLUMNS = {"key", "status", "source_version", "model_version"}
# values written before these columns existed
DEFAULTS = {"precision": "float32", "runtime": "keras"}


def new_run_id() -> str:
    """Sortable by start time (the ledger relies on it), unique."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:6]


def write_ledger_part(job: EnhanceJob, run_id: str, index: int, enhanced: list[dict]) -> None:
    """The rows of the images chunk ``index`` enhanced (after their outputs were written)."""
    job.state_store().write(f"part-{run_id}-{index:06d}.parquet", parquet_bytes(enhanced))


class _Keys:
    """An Arrow string array as a sequence of Python strings, for ``bisect``."""

    def __init__(self, keys):
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> str:
        return self.keys[i].as_py()


class LedgerRows(Mapping):
    """key -> the row of its latest success, from an Arrow table sorted by key."""

    def __init__(self, table=None):
        import pyarrow as pa

        self.table = table if table is not None else pa.Table.from_pandas(frame([]), preserve_index=False)
        self.keys = self.table.column("key").combine_chunks()

    def _position(self, key: str) -> int:
        """Where ``key`` is or would be (binary search on the Arrow column, no copy of the keys)."""
        return bisect.bisect_left(_Keys(self.keys), key)

    def __getitem__(self, key: str) -> dict:
        i = self._position(key)
        if i < len(self.keys) and self.keys[i].as_py() == key:
            return self.table.slice(i, 1).to_pylist()[0]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys.to_pylist())

    def __len__(self) -> int:
        return len(self.keys)

    def rows_for(self, keys: list[str]) -> dict:
        """{key: row} for those of ``keys`` the ledger holds: one slice between the least and greatest."""
        if not keys or not len(self.keys):
            return {}
        low, high = self._position(min(keys)), self._position(max(keys))
        high += high < len(self.keys) and self.keys[high].as_py() == max(keys)
        wanted = set(keys)
        return {row["key"]: row for row in self.table.slice(low, high - low).to_pylist() if row["key"] in wanted}


def _read_ledger_file(store, name: str, job: EnhanceJob, set_aside: list[str]):
    """(Arrow table, the parts folded into it as {name: version}) of a ledger part or snapshot; None when
    it cannot be read, after moving it to ``damaged/`` and naming it in ``set_aside``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(store.read(name)))
        if table.num_rows and not LEDGER_COLUMNS <= set(table.column_names):
            raise ValueError("not a ledger file: it lacks the key, status and version columns")
        folded = json.loads((table.schema.metadata or {}).get(FOLDED, b"{}"))
        return table, folded
    except Exception as exc:  # noqa: BLE001  (Arrow's errors for damaged files are of many kinds)
        store.move(name, f"{DAMAGED}/{name}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        set_aside.append(f"{job.state_uri().rstrip('/')}/{name}: {first[:200]} (moved to {DAMAGED}/)")
        return None


def _latest_per_key(tables: list):
    """The rows of ``tables`` (oldest first) that are the last of their key, sorted by key, in the ledger's schema."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pa.Schema.from_pandas(frame([]), preserve_index=False)
    aligned = []
    for table in tables:
        columns = {name: table.column(name) if name in table.column_names else pa.nulls(len(table), field.type)
                   for name, field in zip(schema.names, schema, strict=True)}
        for name, default in DEFAULTS.items():  # parts written before these columns existed
            columns[name] = pc.fill_null(columns[name].cast(pa.string()), default)
        aligned.append(pa.table([columns[name].cast(field.type) for name, field in zip(schema.names, schema,
                                                                                        strict=True)], schema=schema))
    table = pa.concat_tables(aligned) if aligned else schema.empty_table()
    table = table.filter(pc.is_in(table["status"], pa.array([STATUS_OK, STATUS_SKIPPED])))
    table = table.append_column("_order", pa.array(np.arange(len(table)))).sort_by([("key", "ascending"),
                                                                                    ("_order", "ascending")])
    keys = table["key"].combine_chunks()
    if len(keys) > 1:  # the last row of each run of equal keys
        last = pc.not_equal(keys.slice(0, len(keys) - 1), keys.slice(1))
        table = table.filter(pa.concat_arrays([last, pa.array([True])]))
    return table.drop_columns(["_order"]).replace_schema_metadata(None)


def ledger(job: EnhanceJob) -> tuple[LedgerRows, list[str]]:
    """(key -> the row of its latest success, i.e. what its output holds now;
    the files set aside). Reading folds the parts since the last start into
    a new snapshot. A file that cannot be read is moved to ``damaged/`` under
    the ledger and named in the list: what it described is simply done again."""
    store = job.state_store()
    try:
        versions = {info.key: info.version for info in store.scan([LEDGER_PARTS, SNAPSHOTS]) if "/" not in info.key}
    except FileNotFoundError:  # no ledger yet
        versions = {}
    names = sorted(versions)
    snapshots = [n for n in names if n.startswith("snapshot-")]
    parts = [n for n in names if n.startswith("part-")]
    set_aside, folded, tables = [], {}, []
    base = None
    for snapshot in reversed(snapshots):  # the newest that can be read
        read = _read_ledger_file(store, snapshot, job, set_aside)
        if read is not None:
            base, folded = snapshot, read[1]
            tables.append(read[0])
            break
    # part names sort by their run's start time; a part folded already is the same name and version
    fresh = [p for p in parts if folded.get(p) != versions[p]]
    for part in fresh:
        read = _read_ledger_file(store, part, job, set_aside)
        if read is not None:
            tables.append(read[0])
    done = _latest_per_key(tables)
    del tables
    try:
        compact_ledger(store, done, base, {p: versions[p] for p in fresh},
                       leftovers=[n for n in names if n != base and n not in fresh])
    except OSError:  # a full or read-only ledger: the next start folds them; the job meets the fault itself
        pass
    return LedgerRows(_shared_values(done)), set_aside


# columns whose values most keys share (one model, one runtime): held once, each key an index
SHARED = ("status", "mode", "model_uri", "model_version", "precision", "runtime", "model_hash")


def _shared_values(table):
    """``table`` with the ``SHARED`` columns dictionary-encoded (the same rows, in less memory)."""
    import pyarrow.compute as pc

    for name in SHARED:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.dictionary_encode(table.column(name)))
    return table


def compact_ledger(store, done, base: str | None, fresh: dict[str, str], leftovers: list[str]) -> None:
    """Fold the ``fresh`` parts ({name: version}) into a new snapshot of
    ``done`` (an Arrow table; the next generation after ``base``, naming the
    parts in its metadata), then delete the parts and older snapshots it
    replaces. A kill at any moment loses nothing: until the new snapshot is
    whole the old one and the parts are read; after, the parts it names are
    skipped and deleted by the next start."""
    import pyarrow.parquet as pq

    if fresh:
        generation = int(base.removeprefix("snapshot-").removesuffix(".parquet")) + 1 if base else 1
        table = done.replace_schema_metadata({FOLDED: json.dumps(fresh).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        store.write(f"snapshot-{generation:012d}.parquet", buffer.getvalue())
        leftovers = [*fresh, *([base] if base else []), *leftovers]
    for name in sorted(leftovers):  # parts oldest first, then snapshots
        store.delete(name)
