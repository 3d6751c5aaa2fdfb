"""The resume ledger does not grow with runs: a start reads one snapshot and
the parts written since, folds them into the next snapshot, and a run that
skips everything writes nothing; a kill at any moment of the folding loses
nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from mirnet_pipeline.tasks.batch.engine import process_chunk
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.ledger import ledger, new_run_id
from mirnet_pipeline.tasks.batch.stores import LocalStore, open_store
from tests.batch.samples import photo


def ledger_files(job) -> list[str]:
    return sorted(p.name for p in (job.destination_path / ".enhance").glob("*.parquet"))


@pytest.fixture
def job(tmp_path, model_file):
    source = tmp_path / "in"
    source.mkdir()
    for i in range(6):
        photo(32, 24, seed=i).save(source / f"img{i}.png")
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file)
    object.__setattr__(job, "destination_path", tmp_path / "out")  # for the helpers here
    return job


def run_chunks(job, infos, chunk: int = 2) -> list[dict]:
    """One run: the ledger read once, then the chunks (as the flow does)."""
    done, _ = ledger(job)
    run_id, rows = new_run_id(), []
    for index, start in enumerate(range(0, len(infos), chunk)):
        rows += process_chunk(job, infos[start:start + chunk], run_id, index, done)
    return rows


def test_every_start_reads_one_snapshot_and_the_parts_since_and_a_skipping_run_writes_nothing(job):
    infos = open_store(job.source).list(EnhanceJob.include, ())
    for n in (2, 4, 6):  # three runs, each with two new images
        run_chunks(job, infos[:n])
        files = ledger_files(job)
        assert [f for f in files if f.startswith("snapshot-")] == [f"snapshot-{n // 2 - 1:012d}.parquet"] * (n > 2)
        assert len([f for f in files if f.startswith("part-")]) == 1  # this run's one chunk of news
    done, set_aside = ledger(job)
    assert sorted(done) == [f"img{i}.png" for i in range(6)] and set_aside == []
    assert ledger_files(job) == ["snapshot-000000000003.parquet"]  # folded: one file, whatever came before
    rows = run_chunks(job, infos)
    assert [r["status"] for r in rows] == ["skipped"] * 6
    assert ledger_files(job) == ["snapshot-000000000003.parquet"]  # a run that skips everything writes nothing
    snapshot = pd.read_parquet(job.destination_path / ".enhance" / "snapshot-000000000003.parquet")
    assert sorted(snapshot.key) == sorted(done) and (snapshot.status == "ok").all()


@pytest.mark.parametrize("killed_after", [0, 1])  # deletions done before the kill
def test_a_kill_while_folding_loses_nothing(job, monkeypatch, killed_after):
    infos = open_store(job.source).list(EnhanceJob.include, ())
    run_chunks(job, infos[:4])  # parts of two chunks, no snapshot yet
    assert len(ledger_files(job)) == 2

    deleted = []
    original = LocalStore.delete

    def delete_then_die(self, key):
        if len(deleted) == killed_after:
            raise KeyboardInterrupt  # the process dies here
        deleted.append(key)
        original(self, key)

    monkeypatch.setattr(LocalStore, "delete", delete_then_die)
    with pytest.raises(KeyboardInterrupt):
        ledger(job)
    monkeypatch.setattr(LocalStore, "delete", original)
    assert "snapshot-000000000001.parquet" in ledger_files(job)  # written whole before anything was deleted
    done, set_aside = ledger(job)  # the next start
    assert sorted(done) == [f"img{i}.png" for i in range(4)] and set_aside == []
    assert ledger_files(job) == ["snapshot-000000000001.parquet"]  # the leftovers are gone
    rows = run_chunks(job, infos)
    assert sorted(r["status"] for r in rows) == ["ok"] * 2 + ["skipped"] * 4


def test_a_kill_before_the_snapshot_is_whole_loses_nothing(job, monkeypatch):
    infos = open_store(job.source).list(EnhanceJob.include, ())
    run_chunks(job, infos[:4])

    def die(self, key, data, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalStore, "write", die)
    with pytest.raises(KeyboardInterrupt):
        ledger(job)
    monkeypatch.undo()
    assert not [p for p in ledger_files(job) if p.startswith("snapshot-")]
    assert sorted(ledger(job)[0]) == [f"img{i}.png" for i in range(4)]


def test_a_ledger_that_cannot_be_written_is_still_read(job, monkeypatch):
    """A full or read-only ledger: the start reads it all and folds nothing (the job then meets the fault itself)."""
    import errno

    infos = open_store(job.source).list(EnhanceJob.include, ())
    run_chunks(job, infos[:4])
    parts = ledger_files(job)

    def full(self, key, data, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStore, "write", full)
    assert sorted(ledger(job)[0]) == [f"img{i}.png" for i in range(4)]
    assert ledger_files(job) == parts


def test_each_chunk_gets_exactly_the_ledger_rows_of_its_keys():
    """Binary search in the ledger's sorted keys, whatever order and escapes the chunk's keys come in."""
    import pyarrow as pa

    from mirnet_pipeline.tasks.batch.ledger import LedgerRows
    from mirnet_pipeline.tasks.batch.rows import frame

    keys = sorted(["a.png", "a\\\\x.png", "b/c.png", "caf\\xe9.png", "z.png"])
    rows = LedgerRows(pa.Table.from_pandas(frame([{"key": k, "status": "ok", "bytes_in": i}
                                                  for i, k in enumerate(keys)]), preserve_index=False))
    assert len(rows) == 5 and sorted(rows) == keys
    assert rows["b/c.png"]["bytes_in"] == keys.index("b/c.png")
    assert "b.png" not in rows and rows.get("b.png") is None
    assert set(rows.rows_for(["z.png", "a.png", "missing.png"])) == {"z.png", "a.png"}
    assert set(rows.rows_for(["caf\\xe9.png", "a\\\\x.png"])) == {"caf\\xe9.png", "a\\\\x.png"}
    assert rows.rows_for(["zz.png"]) == {} and rows.rows_for([]) == {}
    assert LedgerRows().rows_for(["a.png"]) == {}
