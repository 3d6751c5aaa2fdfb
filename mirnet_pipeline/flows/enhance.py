"""Flow: enhance every image under a folder or S3 prefix (``enhance_folder``),
writing the enhanced images and a metrics Parquet (``DESTINATION/metrics.parquet``
unless the job names another), one row per key; the run ends Failed when any
image failed or the job stopped early, everything done written. Chunks run on
Prefect's thread pool, or on an existing Dask cluster (``prefect-dask``).

The command ``mirnet-enhance`` (``flows/commands/enhance.py``) checks what the
user gives and runs it; the pipeline's ``enhance`` stage runs it on the folder
params.yaml names::

    python -m mirnet_pipeline.flows.enhance --from-params
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from tqdm.auto import tqdm

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.batch.claim import DestinationBusy, DestinationUnusable, claim_destination
from mirnet_pipeline.tasks.batch.job import (
    CHUNK_WORKERS,
    EnhanceJob,
    OverlappingLocations,
    check_locations,
    chunks,
    key_text,
    ledger,
    listing,
    metrics_table,
    new_run_id,
    plan,
    process_chunk,
    progress_reports,
    summarize,
    write_metrics,
)
from mirnet_pipeline.tasks.batch.report import write_report
from mirnet_pipeline.tasks.batch.stopping import stoppable


class JobEnded(RuntimeError):
    """The flow run ends Failed, everything it did written; ``summary`` is what
    the flow would have returned (with the failures listed), ``exit_status``
    the command's."""

    def __init__(self, message: str, summary: dict, exit_status: int = 1):
        super().__init__(message, summary, exit_status)  # all in args: the exception survives pickling
        self.summary, self.exit_status = summary, exit_status

    def __str__(self) -> str:
        return self.args[0]


class ImagesFailed(JobEnded):
    """Some images failed."""


class JobStopped(JobEnded):
    """The job stopped early: a signal (exit status 128 + its number), a full
    or read-only destination, a lost claim."""


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


# Called directly (the DVC stage, a deployment) the flow runs CHUNK_WORKERS
# chunks at a time; mirnet-enhance sets the runner from --chunk-workers/--dask-address.
@flow(name="enhance", task_runner=task_runner(None, CHUNK_WORKERS))
def enhance_folder(job: EnhanceJob) -> dict:
    check_locations(job)  # before the claim writes its lock in the destination
    started = time.monotonic()
    run_id = new_run_id()
    logger = get_run_logger()
    with stoppable(run_id) as stop, claim_destination(job, on_lost=stop.request):
        infos, refused = plan(job, listing(job))  # refused before any work: colliding outputs
        rows, keys = list(refused), len(infos) + len(refused)
        done, set_aside = ledger(job)  # read once; each chunk gets the rows of its own keys
        for line in set_aside:
            logger.warning(f"damaged ledger part set aside: {line}")
        with tqdm(total=keys, initial=len(rows), unit="img", desc="enhance") as bar:
            counted = collections.Counter()  # images reported so far, per chunk
            lock = threading.Lock()

            def image_done(index: int) -> None:  # chunks on this process's threads: per image
                with lock:
                    counted[index] += 1
                    bar.update(1)

            def collect(i: int, future) -> None:
                chunk_rows = future.result()
                rows.extend(chunk_rows)
                with lock:  # chunks elsewhere (Dask) count when they return
                    bar.update(max(0, len(chunk_rows) - counted.pop(i, 0)))

            with progress_reports(run_id, image_done):
                # at most chunks_in_flight chunks submitted and not yet collected: the
                # task runs in flight (and their keys) do not grow with the bucket
                in_flight: collections.deque = collections.deque()
                for i, chunk in enumerate(chunks(infos, job.chunk_size)):
                    if len(in_flight) >= job.chunks_in_flight:
                        collect(*in_flight.popleft())
                    if stop.requested:  # no more chunks once the job is stopping
                        break
                    texts = [key_text(info.key) for info in chunk]
                    chunk_done = {text: done[text] for text in texts if text in done}
                    in_flight.append((i, enhance_chunk.submit(job, chunk, run_id, i, chunk_done)))
                while in_flight:
                    collect(*in_flight.popleft())
        table = metrics_table(job, rows)
        summary = {"keys": keys, **summarize(rows), "flagged": int((table["flags"].fillna("") != "").sum()),
                   "wall_seconds": time.monotonic() - started}
        summary.update(written_metrics(job, table))
        summary.update(written_report(job, table, summary))
    summary["ledger_set_aside"] = set_aside
    failures = [{"key": r["key"], "error": r["error"]} for r in rows if r["status"] == "error"]
    create_markdown_artifact(summary_markdown(job, summary), key="enhance-summary",
                             description=f"{job.source} -> {job.destination}")
    if failures:
        create_table_artifact(failures[:1000], key="enhance-failures", description="Images that failed")
    summary["failures"] = failures
    logger.info(summary_line(summary))
    # an expected ending (stopped, some images failed) is one line in the log and a Failed
    # state whose exception the caller gets, not a traceback
    ended = None
    if stop.requested:
        ended = JobStopped(f"stopped: {stop.reason}; {len(rows)} of {keys} images done and in the metrics "
                           "(run the same job again to go on)", summary, stop.exit_status)
    elif failures:  # the run ends Failed, as the command's exit status says; everything else is written
        ended = ImagesFailed(f"{len(failures)} of {summary['images']} images failed (see the enhance-failures "
                             "artifact, the report and the metrics Parquet)", summary)
    if ended is not None:
        logger.error(str(ended))
        return Failed(message=str(ended), data=ended)
    return summary


def summary_line(summary: dict) -> str:
    """The run in one log line."""
    rate = summary["ok"] / summary["wall_seconds"] if summary["wall_seconds"] else 0.0
    return (f"{summary['images']} images: {summary['ok']} enhanced, {summary['skipped']} skipped, "
            f"{summary['error']} failed, {summary['flagged']} flagged; {summary['wall_seconds']:.1f} s "
            f"({rate:.2f} images/s); report: {summary.get('report') or summary.get('report_error')}")


def summary_markdown(job: EnhanceJob, summary: dict) -> str:
    """The enhance-summary artifact: the figures, rounded, and links to the report and the metrics."""
    rate = summary["ok"] / summary["wall_seconds"] if summary["wall_seconds"] else 0.0

    def link(uri: str | None) -> str:
        if not uri:
            return "not written"
        return f"[{uri}]({uri})" if uri.startswith("s3://") else f"[{uri}](file://{Path(uri).resolve()})"

    lines = [f"## {job.source} → {job.destination}", "",
             "| | |", "|---|---|",
             f"| images | {summary['images']:,} |", f"| enhanced | {summary['ok']:,} |",
             f"| skipped (done before) | {summary['skipped']:,} |", f"| failed | {summary['error']:,} |",
             f"| flagged | {summary['flagged']:,} |", f"| wall time | {summary['wall_seconds']:.1f} s |",
             f"| images per second | {rate:.2f} |", f"| megapixels enhanced | {summary['megapixels']:.1f} |",
             f"| model | `{job.model}` ({job.runtime or 'its own runtime'}, {job.precision}) |", "",
             f"**Report:** {link(summary.get('report'))}  ", f"**Metrics:** {link(summary.get('metrics'))}"]
    for key in ("report_error", "metrics_error"):
        if summary.get(key):
            lines.append(f"\n{summary[key]}")
    if summary.get("ledger_set_aside"):
        lines.append("\nDamaged ledger parts set aside: " + "; ".join(summary["ledger_set_aside"]))
    return "\n".join(lines)


def written_metrics(job: EnhanceJob, table) -> dict:
    """``{"metrics": where}`` once the metrics Parquet is written, or
    ``{"metrics": None, "metrics_error": why}`` where it could not be (a full
    or read-only destination)."""
    try:
        return {"metrics": write_metrics(job, table)}
    except OSError as exc:
        where = job.metrics or f"{job.destination.rstrip('/')}/metrics.parquet"
        return {"metrics": None, "metrics_error": f"the metrics could not be written to {where} "
                                                  f"({exc.strerror or exc})"}


def written_report(job: EnhanceJob, table, summary: dict) -> dict:
    """``{"report": where}``, or ``{"report": None, "report_error": why}``:
    a report that cannot be written (a full disk) does not undo the run."""
    try:
        return {"report": write_report(job, table, summary)}
    except Exception as exc:  # noqa: BLE001  (a full disk, an S3 error: the outputs and metrics stand)
        why = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        return {"report": None, "report_error": f"the report could not be written to "
                                                f"{job.destination.rstrip('/')}/report.html ({why})"}


def run(job: EnhanceJob, dask_address: str | None = None, chunk_workers: int = CHUNK_WORKERS) -> int:
    """Run ``job`` as the command does (Prefect server started if none is set);
    returns the exit status: 1 when any image failed (listed) or the
    destination is busy, 0 otherwise."""
    try:
        with prefect_api():
            enhance_folder.with_options(task_runner=task_runner(dask_address, chunk_workers))(job)
    except (DestinationBusy, DestinationUnusable, OverlappingLocations) as exc:
        print(f"mirnet-enhance: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the job started its work: nothing written
        print("mirnet-enhance: interrupted before any image was enhanced", file=sys.stderr)
        return 130
    except JobStopped as exc:
        print(f"mirnet-enhance: {exc}", file=sys.stderr)
        if exc.summary.get("metrics_error"):
            print(f"mirnet-enhance: {exc.summary['metrics_error']}", file=sys.stderr)
        return exc.exit_status
    except ImagesFailed as exc:
        for failure in exc.summary["failures"]:
            print(f"FAILED {failure['key']}: {failure['error']}", file=sys.stderr)
        print(f"mirnet-enhance: {exc}", file=sys.stderr)
        return 1
    return 0


def demo_stage() -> int:
    """The pipeline's enhance stage: the folder configured in params.yaml."""
    from mirnet_pipeline.tasks.config import load_params

    settings = load_params().enhance
    try:
        with prefect_api():
            enhance_folder(EnhanceJob(source=settings.source, destination=settings.destination,
                                      model=settings.model, reference=settings.reference))
    except JobEnded as exc:
        print(f"enhance: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--from-params"]:
        sys.exit("usage: python -m mirnet_pipeline.flows.enhance --from-params (the pipeline's enhance stage); "
                 "to enhance a folder or bucket, use mirnet-enhance")
    sys.exit(demo_stage())
