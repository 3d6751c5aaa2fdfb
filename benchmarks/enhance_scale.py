"""How the batch job's own cost grows with the bucket: tiny images, the cheapest model.

For each size, a folder (and with ``--s3-sizes`` a bucket on a local S3
server, moto on 127.0.0.1) of 16x16 PNG images goes through the batch job
twice, each run in a child process against one Prefect server: a fresh run,
then a re-run with everything done. The model is a one-layer CNN, so what is
measured is the job's own work per key (listing, planning, the ledger,
chunks, reading, writing, metrics, report), not the model's. Per size and
run it reports the time, the time per key, the child's peak resident memory,
how many ledger objects the start read and how many task runs Prefect
recorded, and the bytes a key of the ledger (on disk and as a start holds
it) and of the metrics; then the ratios between the sizes (per-key time, peak
memory), and the bytes a key the planner keeps to catch colliding outputs.

    ./pipeline run python benchmarks/enhance_scale.py
    ./pipeline run python benchmarks/enhance_scale.py --sizes 2000,20000,200000 --s3-sizes 2000,20000
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from mirnet_pipeline.flows.enhance import enhance_folder
from mirnet_pipeline.tasks.batch.job import EnhanceJob
job = EnhanceJob(source={source!r}, destination={destination!r}, model={model!r}, endpoint_url={endpoint!r})
started = time.perf_counter()
state = enhance_folder(job, return_state=True)
seconds = time.perf_counter() - started
summary = state.result(raise_on_failure=False)
summary = summary if isinstance(summary, dict) else getattr(summary, "summary", {{}})
print(json.dumps({{"seconds": seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value,
                  "ok": summary.get("ok"), "skipped": summary.get("skipped")}}))
"""


def tiny_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def fill_folder(folder: Path, count: int) -> None:
    """``count`` images, 1,000 to a sub-folder (as buckets are laid out)."""
    images = [tiny_png(i) for i in range(64)]
    for i in range(count):
        path = folder / f"{i // 1000:05d}" / f"img{i:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[i % 64])


def fill_bucket(client, bucket: str, count: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    images = [tiny_png(i) for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"in/{i // 1000:05d}/img{i:07d}.png",
                                                  Body=images[i % 64]), range(count)))


def ledger_objects(store) -> int:
    """The files a start's ledger read lists and reads (snapshot and parts)."""
    try:
        return sum(1 for info in store.list(["part-*.parquet", "snapshot-*.parquet"]) if "/" not in info.key)
    except FileNotFoundError:
        return 0


def task_runs(flow_run_id: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    time.sleep(2)  # the server records task runs from the events it receives
    runs, page = 0, 200  # the API returns at most 200 a call
    with get_client(sync_client=True) as client:
        while True:
            found = len(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                              limit=page, offset=runs))
            runs += found
            if found < page:
                return runs


def run_job(source: str, destination: str, model: str, endpoint: str | None) -> dict:
    from mirnet_pipeline.tasks.batch.stores import open_store

    state = open_store(f"{destination.rstrip('/')}/.enhance", endpoint)
    read = ledger_objects(state)
    code = CHILD.format(root=str(ROOT), source=source, destination=destination, model=model, endpoint=endpoint)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-3000:])
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(ledger_objects_read=read, task_runs=task_runs(result.pop("flow_run_id")),
                  ledger_objects_after=ledger_objects(state))
    return result


def state_sizes(destination: str, endpoint: str | None, count: int) -> dict:
    """Bytes a key of the ledger on disk (its snapshot), of the ledger as a start holds it (Arrow), and of
    the metrics Parquet."""
    from mirnet_pipeline.tasks.batch.job import EnhanceJob
    from mirnet_pipeline.tasks.batch.ledger import ledger
    from mirnet_pipeline.tasks.batch.stores import open_store

    job = EnhanceJob(source=destination, destination=destination, model="m.keras", endpoint_url=endpoint)
    store = job.state_store()
    snapshots = [name for name in (info.key for info in store.scan(["snapshot-*.parquet"])) if "/" not in name]
    rows, _ = ledger(job)
    return {"ledger_file_bytes_per_key": sum(len(store.read(name)) for name in snapshots) / count,
            "ledger_memory_bytes_per_key": rows.table.nbytes / count,
            "metrics_bytes_per_key": len(open_store(destination, endpoint).read("metrics.parquet")) / count}


def per_key_steps(folder: Path, model: str, count: int = 1000) -> dict[str, float]:
    """Milliseconds a key of each step of the per-key path, one after the other on one thread over
    ``count`` of the tiny images (a profile of where a key's time goes; in the job they overlap on the
    I/O threads)."""
    from mirnet_pipeline.model import infer
    from mirnet_pipeline.tasks.batch.engine import load_job_model
    from mirnet_pipeline.tasks.batch.images import HEADER_BYTES, check_header, decode, encode, no_reference
    from mirnet_pipeline.tasks.batch.stores import LocalStore

    source, out = LocalStore(folder / "in"), LocalStore(folder / "steps", staging=folder / "steps-tmp")
    infos = source.list()[:count]
    m = load_job_model(model).model
    times = dict.fromkeys(("list", "read", "decode", "model", "encode", "write", "measures", "exists"), 0.0)

    def timed(name, call):
        started = time.perf_counter()
        value = call()
        times[name] += time.perf_counter() - started
        return value

    timed("list", lambda: source.list())
    infer(m, np.zeros((4, 16, 16, 3), np.float32), batch_size=4)  # compiled before the clock
    for start in range(0, len(infos), 4):
        batch = infos[start:start + 4]
        data = timed("read", lambda b=batch: [(check_header(source.read_head(i.key, HEADER_BYTES), i.size, 10**9),
                                               source.read(i.key))[1] for i in b])
        decoded = timed("decode", lambda d=data: [decode(x, "k", 10**9) for x in d])
        outputs = timed("model", lambda d=decoded: infer(m, np.stack([x.rgb for x in d]), batch_size=len(d)))
        encoded = timed("encode", lambda d=decoded, o=outputs: [encode(x, y, "PNG") for x, y in zip(d, o, strict=True)])
        timed("write", lambda b=batch, e=encoded: [out.write(i.key, x) for i, x in zip(b, e, strict=True)])
        timed("measures", lambda d=decoded, o=outputs: [(no_reference(x.rgb), no_reference(y))
                                                        for x, y in zip(d, o, strict=True)])
        timed("exists", lambda b=batch: [out.exists(i.key) for i in b])
    times["list"] *= len(infos) / max(1, len(source.list()))  # the listing's share of these keys
    return {name: 1000 * seconds / len(infos) for name, seconds in times.items()}


def planner_bytes_per_key(count: int) -> float:
    """Memory the planner keeps per key (its collision check), over ``count`` keys of a bucket's shape."""
    import tracemalloc

    from mirnet_pipeline.tasks.batch.job import EnhanceJob
    from mirnet_pipeline.tasks.batch.planning import Planner
    from mirnet_pipeline.tasks.batch.stores import ObjectInfo

    planner = Planner(EnhanceJob(source="in", destination="out", model="m.keras"))
    infos = (ObjectInfo(f"{i // 1000:05d}/img{i:07d}.png", 1, "v") for i in range(count))
    tracemalloc.start()
    for _ in planner.keep(infos):
        pass
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / count


def measure(kind: str, count: int, source: str, destination: str, model: str, endpoint: str | None) -> dict:
    fresh = run_job(source, destination, model, endpoint)
    again = run_job(source, destination, model, endpoint)
    row = {"store": kind, "keys": count, "fresh": fresh, "rerun": again,
           "fresh_ms_per_key": 1000 * fresh["seconds"] / count, "rerun_ms_per_key": 1000 * again["seconds"] / count,
           **state_sizes(destination, endpoint, count)}
    print(f"{kind:6} {count:>9,} keys: fresh {fresh['seconds']:7.1f} s ({row['fresh_ms_per_key']:.2f} ms/key, "
          f"peak {fresh['peak_gb']:.2f} GB, {fresh['task_runs']} task runs); re-run {again['seconds']:6.1f} s "
          f"({row['rerun_ms_per_key']:.2f} ms/key, peak {again['peak_gb']:.2f} GB, ledger objects read "
          f"{again['ledger_objects_read']}, after {again['ledger_objects_after']}); bytes a key: ledger "
          f"{row['ledger_file_bytes_per_key']:.0f} on disk, {row['ledger_memory_bytes_per_key']:.0f} in memory, "
          f"metrics {row['metrics_bytes_per_key']:.0f}", flush=True)
    return row


def growth(rows: list[dict]) -> list[dict]:
    """Between consecutive sizes of one store: the marginal time per key
    (what each key beyond the smaller size cost) and the ratio of peak memory."""
    out = []
    for small, large in zip(rows, rows[1:], strict=False):
        if small["store"] != large["store"]:
            continue
        extra = large["keys"] - small["keys"]
        out.append({"store": small["store"], "from": small["keys"], "to": large["keys"],
                    "fresh_marginal_ms_per_key": 1000 * (large["fresh"]["seconds"] - small["fresh"]["seconds"]) / extra,
                    "rerun_marginal_ms_per_key": 1000 * (large["rerun"]["seconds"] - small["rerun"]["seconds"]) / extra,
                    "fresh_peak_ratio": large["fresh"]["peak_gb"] / small["fresh"]["peak_gb"],
                    "rerun_peak_ratio": large["rerun"]["peak_gb"] / small["rerun"]["peak_gb"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000", help="folder sizes, comma-separated")
    parser.add_argument("--s3-sizes", default="2000", help="bucket sizes on the local S3 server ('' for none)")
    parser.add_argument("--steps-only", type=int, metavar="KEYS", default=0,
                        help="only time each step of the per-key path over this many images, one thread")
    parser.add_argument("--planner-keys", type=int, default=1_000_000, help="keys for the planner's bytes a key")
    record.add_option(parser)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    s3_sizes = [int(s) for s in args.s3_sizes.split(",") if s]

    import keras

    from mirnet_pipeline.model import build_model
    from mirnet_pipeline.tasks.services import prefect_server

    if args.steps_only:
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            keras.utils.set_random_seed(0)
            build_model("cnn", channels=4, depth=1).save(scratch / "model.keras")
            fill_folder(scratch / "in", args.steps_only)
            steps = per_key_steps(scratch, str(scratch / "model.keras"), args.steps_only)
        print("a key's steps, one thread: " + ", ".join(f"{k} {v:.3f} ms" for k, v in steps.items()))
        result = {"benchmark": "enhance_steps", "keys": args.steps_only, "per_key_steps_ms": steps}
        print(json.dumps(result))
        record.record(args.record, result)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as scratch, prefect_server(Path(scratch) / "prefect.log"):
        scratch = Path(scratch)
        keras.utils.set_random_seed(0)
        build_model("cnn", channels=4, depth=1).save(scratch / "model.keras")
        model = str(scratch / "model.keras")
        for count in sizes:
            folder = scratch / f"folder{count}"
            fill_folder(folder / "in", count)
            rows.append(measure("folder", count, str(folder / "in"), str(folder / "out"), model, None))
        if s3_sizes:
            import boto3
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
            server.start()
            try:
                host, port = server.get_host_and_port()
                endpoint = f"http://{host}:{port}"
                client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                      aws_access_key_id="bench", aws_secret_access_key="bench")
                os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                                  AWS_DEFAULT_REGION="us-east-1")
                for count in s3_sizes:
                    bucket = f"scale{count}"
                    client.create_bucket(Bucket=bucket)
                    fill_bucket(client, bucket, count)
                    rows.append(measure("s3", count, f"s3://{bucket}/in", f"s3://{bucket}/out", model, endpoint))
            finally:
                server.stop()
    result = {"runs": rows, "growth": growth(rows), "planner_keys": args.planner_keys,
              "planner_bytes_per_key": planner_bytes_per_key(args.planner_keys)}
    print(f"planner: {result['planner_bytes_per_key']:.0f} bytes a key over {args.planner_keys:,} keys")
    for g in result["growth"]:
        print(f"{g['store']} {g['from']:,} -> {g['to']:,}: each further key {g['fresh_marginal_ms_per_key']:.2f} ms "
              f"fresh, {g['rerun_marginal_ms_per_key']:.2f} ms re-run; peak memory x{g['fresh_peak_ratio']:.2f} "
              f"fresh, x{g['rerun_peak_ratio']:.2f} re-run")
    print(json.dumps(result))
    record.record(args.record, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
