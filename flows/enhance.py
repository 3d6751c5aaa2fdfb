"""Flow and command line: enhance every image under a folder or S3 prefix.

    mirnet-enhance SOURCE DESTINATION --model models:/mirnet@champion
    python -m flows.enhance data/raw/lol/eval15/low data/enhanced --model models/mirnet_lol/model.keras

SOURCE and DESTINATION are folders or ``s3://bucket/prefix``; the model is
``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a ``.keras`` file.
Writes the enhanced images and a metrics Parquet (``DESTINATION/metrics.parquet``
unless ``--metrics``); exits non-zero when any image failed, listing them.
Chunks run on Prefect's thread pool, or on an existing Dask cluster with
``--dask-address tcp://scheduler:8786`` (``prefect-dask``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from tqdm.auto import tqdm

from flows import prefect_api
from model.precision import PRECISIONS
from tasks.batch.images import FORMATS
from tasks.batch.job import (DestinationBusy, EnhanceJob, OverlappingLocations, check_locations, chunks,
                             claim_destination, key_text, ledger, listing, new_run_id, plan, process_chunk,
                             summarize, write_metrics)


@task(name="enhance-chunk", retries=1)
def enhance_chunk(job: EnhanceJob, infos: list, run_id: str, index: int, done: dict) -> list[dict]:
    return process_chunk(job, infos, run_id, index, done)


def task_runner(dask_address: str | None, workers: int):
    """Chunks on an existing Dask cluster, or ``workers`` at a time on threads."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


CHUNK_WORKERS = 1  # chunks at a time unless the caller says otherwise (each has its own I/O threads)


# Called directly (the DVC stage, a deployment) the flow runs CHUNK_WORKERS
# chunks at a time; main() sets the runner from --chunk-workers/--dask-address.
@flow(name="enhance", task_runner=task_runner(None, CHUNK_WORKERS))
def enhance_folder(job: EnhanceJob) -> dict:
    check_locations(job)  # before the claim writes its lock in the destination
    with claim_destination(job):
        infos, rows = plan(job, listing(job))  # rows: keys refused before any work (colliding outputs)
        run_id = new_run_id()
        done = ledger(job)  # read once; each chunk gets the rows of its own keys
        futures = []
        for i, chunk in enumerate(chunks(infos, job.chunk_size)):
            texts = [key_text(info.key) for info in chunk]
            chunk_done = {text: done[text] for text in texts if text in done}
            futures.append(enhance_chunk.submit(job, chunk, run_id, i, chunk_done))
        with tqdm(total=len(infos) + len(rows), initial=len(rows), unit="img", desc="enhance") as bar:
            for future in futures:
                chunk_rows = future.result()
                rows.extend(chunk_rows)
                bar.update(len(chunk_rows))
        metrics = write_metrics(job, rows)
    summary = {**summarize(rows), "metrics": metrics}
    failures = [{"key": r["key"], "error": r["error"]} for r in rows if r["status"] == "error"]
    create_table_artifact([summary], key="enhance-summary", description=f"{job.source} -> {job.destination}")
    if failures:
        create_table_artifact(failures, key="enhance-failures", description="Images that failed")
    summary["failures"] = failures
    get_run_logger().info(summary)
    return summary


# the job's defaults, written once (in EnhanceJob)
JOB = {f.name: f.default for f in dataclasses.fields(EnhanceJob) if f.default is not dataclasses.MISSING}


def parse(argv: list[str]) -> tuple[EnhanceJob, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="mirnet-enhance", description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version> or a .keras file")
    p.add_argument("--include", action="append", default=None, help="glob of keys to take (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="glob of keys to leave out (repeatable)")
    p.add_argument("--format", dest="output_format", choices=list(FORMATS), type=str.upper)
    p.add_argument("--suffix", default=JOB["suffix"], help="added to each output name before the extension")
    p.add_argument("--reference", help="folder or s3:// prefix of ground truth with the same keys")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--region")
    p.add_argument("--max-pixels", type=int, default=JOB["max_pixels"])
    p.add_argument("--tile", type=int, default=JOB["tile"])
    p.add_argument("--overlap", type=int, default=JOB["overlap"])
    p.add_argument("--batch-size", type=int, default=JOB["batch_size"], help="whole images of one size per model call")
    p.add_argument("--tile-batch-size", type=int, default=JOB["tile_batch_size"], help="tiles per model call")
    p.add_argument("--chunk-size", type=int, default=JOB["chunk_size"])
    p.add_argument("--precision", choices=list(PRECISIONS), default=JOB["precision"],
                   help="compute precision: bfloat16 (recent x86 CPUs) or float16 (GPUs) is faster and "
                        "changes the output slightly")
    p.add_argument("--workers", type=int, default=JOB["workers"], help="I/O threads per chunk")
    p.add_argument("--chunk-workers", type=int, default=CHUNK_WORKERS, help="chunks in parallel (threads)")
    p.add_argument("--metrics", help="where the metrics Parquet goes")
    p.add_argument("--state-dir", help="where resume state goes")
    p.add_argument("--dask-address", help="run chunks on this Dask scheduler")
    args = p.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("chunk_workers", "dask_address", "include")}
    fields["exclude"] = tuple(args.exclude)
    if args.include:
        fields["include"] = tuple(args.include)
    job = EnhanceJob(**fields)
    return job, args


def demo_stage() -> int:
    """The pipeline's enhance stage: the folder configured in params.yaml."""
    from tasks.config import load_params

    settings = load_params().enhance
    with prefect_api():
        summary = enhance_folder(EnhanceJob(source=settings.source, destination=settings.destination,
                                            model=settings.model, reference=settings.reference))
    return 1 if summary["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    job, args = parse(sys.argv[1:] if argv is None else argv)
    try:
        with prefect_api():
            summary = enhance_folder.with_options(task_runner=task_runner(args.dask_address,
                                                                          args.chunk_workers))(job)
    except (DestinationBusy, OverlappingLocations) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for failure in summary["failures"]:
        print(f"FAILED {failure['key']}: {failure['error']}", file=sys.stderr)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(demo_stage() if sys.argv[1:] == ["--from-params"] else main())
