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
from mirnet_pipeline.tasks.batch.engine import chunk_summary, progress_reports
from mirnet_pipeline.tasks.batch.job import CHUNK_WORKERS, EnhanceJob, key_text
from mirnet_pipeline.tasks.batch.ledger import ledger, new_run_id
from mirnet_pipeline.tasks.batch.planning import OverlappingLocations, Planner, batched, check_locations, listing
from mirnet_pipeline.tasks.batch.report import write_report
from mirnet_pipeline.tasks.batch.rows import (
    ChunkSummary,
    clear_rows,
    metrics_uri,
    read_metrics,
    write_metrics,
)
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


class ChunkKeys:
    """A chunk's keys and the ledger's rows of them, as one object Prefect
    passes to the task (and Dask ships) without visiting every row."""

    def __init__(self, infos: list, done: dict):
        self.infos, self.done = infos, done

    def __repr__(self) -> str:
        return f"ChunkKeys({len(self.infos)} keys)"


@task(name="enhance-chunk", retries=1)
def enhance_chunk(job: EnhanceJob, keys: ChunkKeys, run_id: str, index: int) -> ChunkSummary:
    """One chunk; its rows go to the run's row parts, its counts and failures come back."""
    return chunk_summary(job, keys.infos, run_id, index, keys.done)


def task_runner(dask_address: str | None, workers: int):
    """Chunks on an existing Dask cluster, or ``workers`` at a time on threads."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


class _Chunks:
    """The chunks in flight and what came back: at most ``chunks_in_flight``
    submitted and not yet collected, so the task runs (and their keys) in
    flight do not grow with the bucket, and only counts come back."""

    def __init__(self, job: EnhanceJob, bar):
        self.job, self.bar = job, bar
        self.in_flight: collections.deque = collections.deque()
        self.totals = ChunkSummary()
        self.counted = collections.Counter()  # images reported so far, per chunk (chunks on this process)
        self.lock = threading.Lock()

    def image_done(self, index: int) -> None:  # chunks on this process's threads: per image
        with self.lock:
            self.counted[index] += 1
            self.bar.update(1)

    def make_room(self) -> None:
        """Collect the oldest chunk while the most that may be in flight are."""
        while len(self.in_flight) >= self.job.chunks_in_flight:
            self.collect_one()

    def submit(self, index: int, future) -> None:
        self.in_flight.append((index, future))

    def collect_one(self) -> None:
        index, future = self.in_flight.popleft()
        summary = future.result()
        self.totals.add(summary)
        with self.lock:  # chunks elsewhere (Dask) count when they return
            self.bar.update(max(0, summary.images - self.counted.pop(index, 0)))

    def drain(self) -> None:
        while self.in_flight:
            self.collect_one()


# Called directly (the DVC stage, a deployment) the flow runs CHUNK_WORKERS
# chunks at a time; mirnet-enhance sets the runner from --chunk-workers/--dask-address.
@flow(name="enhance", task_runner=task_runner(None, CHUNK_WORKERS))
def enhance_folder(job: EnhanceJob) -> dict:
    check_locations(job)  # before the claim writes its lock in the destination
    started = time.monotonic()
    run_id = new_run_id()
    logger = get_run_logger()
    with stoppable(run_id) as stop, claim_destination(job, on_lost=stop.request):
        done, set_aside = ledger(job)  # read once; each chunk gets the rows of its own keys
        for line in set_aside:
            logger.warning(f"damaged ledger part set aside: {line}")
        clear_rows(job)  # row parts left by a killed run
        planner = Planner(job)  # the listing is read as it comes, chunks cut and submitted as it goes
        with tqdm(total=0, unit="img", desc="enhance") as bar:
            chunks = _Chunks(job, bar)
            with progress_reports(run_id, chunks.image_done):
                for i, chunk in enumerate(batched(planner.keep(listing(job)), job.chunk_size)):
                    bar.total = planner.listed
                    bar.refresh()
                    chunks.make_room()
                    if stop.requested:  # no more chunks once the job is stopping
                        break
                    texts = [key_text(info.key) for info in chunk]
                    chunks.submit(i, enhance_chunk.submit(job, ChunkKeys(chunk, done.rows_for(texts)), run_id, i))
                chunks.drain()
                refused = planner.refused_rows(listing(job)) if not stop.requested else []
                if refused:  # keys whose output another key has: refused, with a row each
                    chunks.totals.add(ChunkSummary.of(refused))
                    bar.update(len(refused))
        totals = chunks.totals
        held = [*refused, *totals.unsaved]  # rows in no part: refused keys, parts a full disk refused
        summary = {"keys": planner.listed, **totals.counts(), **written_metrics(job, run_id, held),
                   "wall_seconds": time.monotonic() - started}
        summary.update(written_report(job, summary))
        if summary.get("metrics"):
            clear_rows(job)  # now in the metrics
    summary["ledger_set_aside"] = set_aside
    failures = totals.failures
    create_markdown_artifact(summary_markdown(job, summary), key="enhance-summary",
                             description=f"{job.source} -> {job.destination}")
    if failures:
        create_table_artifact(failures, key="enhance-failures", description="Images that failed")
    summary["failures"] = failures
    logger.info(summary_line(summary))
    # an expected ending (stopped, some images failed) is one line in the log and a Failed
    # state whose exception the caller gets, not a traceback
    ended = None
    if stop.requested:
        ended = JobStopped(f"stopped: {stop.reason}; {summary['images']} of the {planner.listed} keys listed "
                           "done and in the metrics (run the same job again to go on)", summary, stop.exit_status)
    elif totals.error:  # the run ends Failed, as the command's exit status says; everything else is written
        ended = ImagesFailed(f"{totals.error} of {summary['images']} images failed (see the enhance-failures "
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


def written_metrics(job: EnhanceJob, run_id: str, held: list[dict]) -> dict:
    """``{"metrics": where, "flagged": n}`` once the run's rows are joined
    into the metrics Parquet, or ``{"metrics": None, "metrics_error": why}``
    where it could not be written (a full or read-only destination)."""
    try:
        where, flagged = write_metrics(job, run_id, held)
        return {"metrics": where, "flagged": flagged}
    except OSError as exc:
        return {"metrics": None, "flagged": 0, "metrics_error": f"the metrics could not be written to "
                                                                f"{metrics_uri(job)} ({exc.strerror or exc})"}


def written_report(job: EnhanceJob, summary: dict) -> dict:
    """``{"report": where}``, or ``{"report": None, "report_error": why}``:
    a report that cannot be written (a full disk, no metrics to draw it from)
    does not undo the run."""
    where = f"{job.destination.rstrip('/')}/report.html"
    if not summary.get("metrics"):
        return {"report": None, "report_error": f"the report was not written to {where}: it is drawn from "
                                                "the metrics, which could not be written"}
    try:
        return {"report": write_report(job, read_metrics(job), summary)}
    except Exception as exc:  # noqa: BLE001  (a full disk, an S3 error: the outputs and metrics stand)
        why = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        return {"report": None, "report_error": f"the report could not be written to {where} ({why})"}


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
        if exc.summary["error"] > len(exc.summary["failures"]):
            print(f"mirnet-enhance: and {exc.summary['error'] - len(exc.summary['failures'])} more failures: "
                  "see the metrics Parquet (status = 'error')", file=sys.stderr)
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
