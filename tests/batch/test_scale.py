"""The batch job at bucket scale, in miniature: the listing is consumed as it
comes with a bounded number of chunks in flight, the metrics are joined from
the chunks' row parts with one row per key, colliding keys far apart in the
listing are caught, and on a real Dask scheduler with two real workers
(started with Dask's own commands) a worker killed mid-chunk still leaves one
row and one output per key."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.dataset as ds
import pytest

from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.planning import Planner
from mirnet_pipeline.tasks.batch.stores import LocalStore, ObjectInfo
from tests.batch.samples import photo, save


def test_the_listing_is_consumed_as_chunks_go_with_a_bounded_number_in_flight(tmp_path, model_file,
                                                                               prefect_server, monkeypatch):
    import mirnet_pipeline.flows.enhance as enhance

    source = tmp_path / "in"
    for i in range(30):  # 15 chunks of 2, at most 2 in flight
        (source / f"d{i // 10}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i // 10}" / f"{i:02d}.png").write_bytes(save(photo(32, 24, seed=i), "PNG"))
    listed, seen = [0], []  # keys listed so far; (keys listed, keys of chunks started) at each chunk's start
    scan = LocalStore.scan

    def counted_scan(self, include=(), exclude=()):
        for info in scan(self, include, exclude):
            listed[0] += 1
            yield info

    chunk_summary = enhance.chunk_summary

    def recorded(job, infos, run_id, index, done):
        seen.append((listed[0], 2 * index + len(infos)))
        return chunk_summary(job, infos, run_id, index, done)

    monkeypatch.setattr(LocalStore, "scan", counted_scan)
    monkeypatch.setattr(enhance, "chunk_summary", recorded)
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file, chunk_size=2,
                     chunks_in_flight=2)
    summary = enhance.enhance_folder(job)
    assert (summary["keys"], summary["ok"]) == (30, 30)
    # the first chunk started before the listing was read to its end, and the
    # listing never ran more than the chunks in flight (and the one being cut) ahead
    assert seen[0][0] < 30
    assert all(keys_listed - started <= 2 * 2 + 2 for keys_listed, started in seen), seen
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(table.key) == sorted(f"d{i // 10}/{i:02d}.png" for i in range(30))
    runs = tmp_path / "out" / ".enhance" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # the row parts are in the metrics now, folders gone


def test_a_local_listing_comes_in_key_order_folder_by_folder(tmp_path):
    for key in ("a.png", "a/b.png", "a-b.png", "B.png", "a0/c.png", ".hidden/x.png", "z/.y.png"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    keys = [info.key for info in LocalStore(tmp_path).scan()]
    assert keys == sorted(["a.png", "a/b.png", "a-b.png", "B.png", "a0/c.png"])  # as S3 lists them


def test_keys_far_apart_that_share_an_output_are_caught_and_the_metrics_keep_key_order(tmp_path, model_file,
                                                                                      prefect_server):
    from mirnet_pipeline.flows.enhance import enhance_folder

    source = tmp_path / "in"
    source.mkdir()
    # x.PNG and x.png share the output x.png; thirty keys sort between them
    names = ["x.PNG", *[f"x.Q{i:03d}.png" for i in range(30)], "x.png"]
    for i, name in enumerate(names):
        (source / name).write_bytes(save(photo(32, 24, seed=i), "PNG"))
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file, chunk_size=4,
                     chunks_in_flight=2)
    state = enhance_folder(job, return_state=True)
    summary = state.result(raise_on_failure=False).summary
    assert (summary["ok"], summary["error"]) == (31, 1)
    assert summary["failures"] == [{"key": "x.png", "error": "output x.png is already the output of x.PNG (keys "
                                                              "that differ only in case, extension spelling or "
                                                              "slashes): rename one of them"}]
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(table.key) == sorted(names) and table.key.is_unique
    assert table.set_index("key").status["x.png"] == "error"
    # one table to every reader, one row per key
    assert ds.dataset(tmp_path / "out" / "metrics.parquet").count_rows() == len(names)


def test_the_planner_remembers_a_small_fixed_cost_per_key():
    """A hash of each output key, not the key: the same bytes for long keys as for short."""
    import tracemalloc

    def cost(length: int, count: int = 20_000) -> float:
        planner = Planner(EnhanceJob(source="in", destination="out", model="m.keras"))
        infos = [ObjectInfo(f"{i:0{length}d}.png", 1, "v") for i in range(count)]
        tracemalloc.start()
        kept = sum(1 for _ in planner.keep(infos))
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert kept == count
        return used / count

    short, long = cost(8), cost(200)  # bytes a key: a 128-bit integer and its slot in a set
    assert long < 1.1 * short and short < 200, (short, long)


# --- a real Dask cluster, a worker killed mid-chunk --------------------------------

def _start(command: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dask", *command], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two workers (no nanny: a killed worker stays dead) on
    127.0.0.1, each worker in a directory of its own; (scheduler address,
    worker processes)."""
    scheduler_file = tmp_path / "scheduler.json"
    processes = []
    with open(tmp_path / "dask.log", "wb") as log:
        processes.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(scheduler_file)], log))
        deadline = time.monotonic() + 120
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = []
        for n in range(2):
            folder = tmp_path / f"worker{n}"
            folder.mkdir()
            workers.append(_start(["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                   "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{n}",
                                   "--local-directory", str(folder)], log))
        processes += workers
        try:
            from distributed import Client

            address = json.loads(scheduler_file.read_text())["address"]
            with Client(address, timeout=120) as client:
                client.wait_for_workers(2, timeout=120)
            yield address, workers
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def test_a_worker_killed_mid_chunk_leaves_one_row_and_one_output_per_key(s3_bucket, model_file, prefect_server,
                                                                          dask_cluster):
    import threading

    from mirnet_pipeline.flows.enhance import enhance_folder, task_runner

    address, workers = dask_cluster
    endpoint, bucket, client = s3_bucket
    count = 32
    for i in range(count):
        client.put_object(Bucket=bucket, Key=f"photos/{i:02d}.png", Body=save(photo(320, 240, seed=i), "PNG"))
    job = EnhanceJob(source=f"s3://{bucket}/photos", destination=f"s3://{bucket}/enhanced", model=model_file,
                     endpoint_url=endpoint, chunk_size=8, chunks_in_flight=2, workers=1, batch_size=1)

    def outputs() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="enhanced/").get("Contents", [])
        return [o["Key"] for o in listed if o["Key"].endswith(".png")]

    killed = {}

    def kill_when_busy():  # once outputs appear, kill the first worker while the scheduler says it is on a chunk
        from distributed import Client

        with Client(address, timeout=120) as dask:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                processing = {dask.scheduler_info()["workers"][w]["name"]: tasks
                              for w, tasks in dask.processing().items()}
                if processing.get("w0") and len(outputs()) >= 2:
                    break
                time.sleep(0.05)
            killed.update(outputs=len(outputs()), tasks=len(processing.get("w0", ())))
            os.killpg(workers[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    summary = enhance_folder.with_options(task_runner=task_runner(address, 1))(job)
    killer.join()
    assert workers[0].wait(timeout=60) == -signal.SIGKILL and workers[1].poll() is None
    # killed while it was on a chunk, before all of the first two chunks' outputs were there
    assert killed["tasks"] == 1 and 2 <= killed["outputs"] < 2 * job.chunk_size, killed
    assert (summary["ok"], summary["error"]) == (count, 0), summary
    keys = [f"{i:02d}.png" for i in range(count)]
    assert sorted(outputs()) == [f"enhanced/{k}" for k in keys]
    table = pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key="enhanced/metrics.parquet")["Body"].read()))
    assert list(table.key) == keys and set(table.status) == {"ok"}
