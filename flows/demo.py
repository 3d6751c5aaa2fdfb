"""The main job: the whole pipeline through DVC, with Prefect's own server on
127.0.0.1 for its length, then what came out of it.

    ./pipeline demo              # = python -m flows.demo
    ./pipeline demo --force      # arguments go to `dvc repro` (stages then run one at a time)

DVC runs one stage at a time. The training stages depend only on the shards
and not on each other, so the demo runs the stale ones ``TRAINING_JOBS`` at a
time itself, each with the command dvc.yaml gives it, and records each with
``dvc commit`` as DVC does after running a stage; ``dvc repro`` runs the rest.
``dvc status`` is clean afterwards and a second ``dvc repro`` runs nothing.

Exits non-zero when a stage fails. Nothing it starts (the Prefect server,
``dvc``, the stages) outlives it, also when it is stopped with Ctrl-C or killed.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tasks import artifacts
from tasks.config import ConfigError, load_params
from tasks.services import prefect_server, start_child, stop_child

PREFECT_LOG = Path(".prefect") / "server.log"
TRAINING = "train@"  # the foreach group of independent training stages
TRAINING_JOBS = 2  # two at a time: one trains while the other starts up or writes its reports
DVC = [sys.executable, "-m", "dvc"]


class StageFailed(RuntimeError):
    """A stage's command exited non-zero."""


def _stop(signum, frame):  # SIGTERM ends the demo the way Ctrl-C does
    raise KeyboardInterrupt


class Children:
    """The processes this demo has running, stopped together on the way out."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def run(self, command: list[str], prefix: str = "") -> int:
        """Run ``command``; with a ``prefix``, its output lines are prefixed."""
        with self.lock:
            child = start_child(command, stdout=subprocess.PIPE if prefix else None,
                                stderr=subprocess.STDOUT if prefix else None, text=True)
            self.running.add(child)
        try:
            if prefix:
                for line in child.stdout:
                    print(f"{prefix}{line}", end="", flush=True)
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def stop(self) -> None:
        with self.lock:
            for child in list(self.running):
                stop_child(child)


def stale_stages() -> list[str]:
    out = subprocess.run([*DVC, "status", "--json"], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out or "{}"))


def pipeline() -> tuple[dict[str, str], list[str]]:
    """Every stage's command, and the stages the training stages depend on."""
    import networkx
    from dvc.repo import Repo

    with Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        commands = {stage.addressing: stage.cmd for stage in graph.nodes}
        upstream = {s.addressing for stage in graph.nodes if stage.addressing.startswith(TRAINING)
                    for s in networkx.descendants(graph, stage)}
    return commands, sorted(upstream)


def training_steps(params, stage: str) -> int:
    """Steps times batch size of a training stage (one pass over the shards counts as most)."""
    settings = params.variant_train(stage.removeprefix(TRAINING))
    return settings.epochs * (settings.steps_per_epoch or 10**6) * settings.batch_size


def train_concurrently(children: Children, commands: dict[str, str]) -> list[str]:
    """Run the stale training stages ``TRAINING_JOBS`` at a time, most steps first
    (so that the longest runs overlap rather than one running alone at the
    end), and commit each."""
    params = load_params()
    stale = sorted((s for s in stale_stages() if s.startswith(TRAINING)),
                   key=lambda stage: training_steps(params, stage), reverse=True)
    if not stale:
        return []
    commit = threading.Lock()  # dvc commit takes DVC's repository lock: one at a time
    print(f">> training {', '.join(s.removeprefix(TRAINING) for s in stale)}, {TRAINING_JOBS} at a time",
          flush=True)

    def train(stage: str) -> str:
        started = time.monotonic()
        if children.run(shlex.split(commands[stage]), prefix=f"[{stage.removeprefix(TRAINING)}] ") != 0:
            raise StageFailed(f"stage {stage!r} failed: {commands[stage]}")
        with commit:
            if children.run([*DVC, "commit", "--force", "--quiet", stage]) != 0:
                raise StageFailed(f"dvc commit {stage} failed")
        print(f">> {stage} done in {time.monotonic() - started:.0f} s", flush=True)
        return stage

    with ThreadPoolExecutor(TRAINING_JOBS) as pool:
        futures = [pool.submit(train, stage) for stage in stale]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            children.stop()
            raise


def headline(metrics: dict, split: str = "validation") -> list[dict]:
    """One row per variant and dataset: PSNR in -> out and the gain."""
    rows = []
    for variant, per_dataset in metrics.items():
        for dataset, splits in per_dataset.items():
            if split in splits:
                m = splits[split]
                rows.append({"variant": variant, "dataset": dataset, "images": m["images"],
                             "input_psnr": m["input_psnr"], "output_psnr": m["output_psnr"],
                             "gain": m["psnr_gain"]})
    return rows


def summary_text(metrics: dict, seconds: float) -> str:
    lines = [f"Done in {seconds / 60:.1f} min. PSNR on the validation images (dB, data range 1):", "",
             f"  {'variant':<12} {'dataset':<8} {'images':>6}   {'input -> output':>17}   {'gain':>7}"]
    for r in headline(metrics):
        lines.append(f"  {r['variant']:<12} {r['dataset']:<8} {r['images']:>6}   "
                     f"{r['input_psnr']:>7.2f} -> {r['output_psnr']:>6.2f}   {r['gain']:>+7.2f}")
    lines += [
        "",
        "Where to look next:",
        f"  {artifacts.COMPARISON}   every variant against doing nothing, per distortion type",
        f"  {artifacts.EVALUATION / 'before_after.png'}   input, output and target side by side",
        f"  {artifacts.REPORTS}/<variant>/   per variant: training curves (curves.png), samples (grid.png)",
        "  ./pipeline run mlflow ui --backend-store-uri sqlite:///mlflow.db   runs, metrics, models",
        "  ./pipeline run dvc metrics show   the same figures through DVC",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        load_params()  # a mistake in params.yaml stops here, before anything starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    children = Children()
    try:
        with prefect_server(PREFECT_LOG) as url:
            print(f">> Prefect server on {url.removesuffix('/api')} (log: {PREFECT_LOG})", flush=True)
            if not argv:  # the default run: what precedes training, training two at a time, then the rest
                commands, upstream = pipeline()
                if children.run([*DVC, "repro", *upstream]) != 0:
                    raise StageFailed("dvc repro " + " ".join(upstream) + " failed")
                train_concurrently(children, commands)
            status = children.run([*DVC, "repro", *argv])
            if status != 0:
                raise StageFailed(f"dvc repro failed (status {status})")
    except StageFailed as exc:
        print(f">> {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n>> stopped", file=sys.stderr)
        return 130
    finally:
        children.stop()
    metrics_file = artifacts.EVALUATION / "metrics.json"
    if metrics_file.exists():
        print("\n" + summary_text(json.loads(metrics_file.read_text()), time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
