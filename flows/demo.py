"""The main job: the whole pipeline through DVC, with Prefect's own server on
127.0.0.1 for its length, then what came out of it.

    ./pipeline demo              # = python -m mirnet_pipeline.flows.demo
    ./pipeline demo --force      # arguments go to `dvc repro` (stages then run one at a time)

DVC runs one stage at a time, and most stages of this pipeline do not depend
on each other (the fetches, the seven trainings, the model-zoo report). So the
demo runs the stale stages itself, ``JOBS`` at a time in dependency order, each
with the command dvc.yaml gives it, and records each with ``dvc commit`` as
DVC does after running a stage; a final ``dvc repro`` finds nothing left to
do. ``dvc status`` is clean afterwards and a second ``dvc repro`` runs nothing.

Exits non-zero when a stage fails. Nothing it starts (the Prefect server,
``dvc``, the stages) outlives it, also when it is stopped with Ctrl-C or killed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import ConfigError, load_params
from mirnet_pipeline.tasks.services import prefect_server, start_child, stop_child
from mirnet_pipeline.tasks.storage import atomic_write_text
from mirnet_pipeline.tasks.training.headline import headline

PREFECT_LOG = Path(".prefect") / "server.log"
SUMMARY_FILE = artifacts.REPORTS / "demo_summary.txt"  # the last run's summary
TRAINING = "train@"  # the foreach group of training stages
JOBS = 2  # two at a time: one computes while the other starts up, reads or writes
DVC = [sys.executable, "-m", "dvc"]


_OUTPUT = threading.Lock()


def say(text: str) -> None:
    """One whole line on stdout, also when several threads print."""
    with _OUTPUT:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class StageFailed(RuntimeError):
    """A stage's command exited non-zero."""


def _stop(signum, frame):  # SIGTERM ends the demo the way Ctrl-C does
    raise KeyboardInterrupt


class Children:
    """The processes this demo has running, stopped together on the way out."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def run(self, command: list[str], prefix: str = "", env: dict | None = None) -> int:
        """Run ``command`` (with ``env`` added to the environment); with a
        ``prefix``, its output lines (and progress-bar updates) are prefixed."""
        with self.lock:
            env = {**os.environ, **(env or {}), **({"TQDM_MININTERVAL": "5"} if prefix else {})}  # whole bar lines
            child = start_child(command, stdout=subprocess.PIPE if prefix else None,
                                stderr=subprocess.STDOUT if prefix else None, env=env)
            self.running.add(child)
        try:
            if prefix:
                pending = b""
                while chunk := child.stdout.read1(1 << 16):
                    *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
                    text = "".join(f"{prefix}{line.decode(errors='replace')}\n" for line in lines if line.strip())
                    if text:
                        say(text.removesuffix("\n"))
                if pending.strip():
                    say(f"{prefix}{pending.decode(errors='replace')}")
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def stop(self) -> None:
        with self.lock:
            for child in list(self.running):
                stop_child(child)


@dataclass
class Plan:
    """The stages to run: each one's command, the stages it waits for, and the
    order among those ready at the same time (lower first)."""

    commands: dict[str, str]
    needs: dict[str, set[str]]
    rank: dict[str, tuple]


def stale_stages() -> list[str]:
    out = subprocess.run([*DVC, "status", "--json"], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out or "{}"))


def training_steps(params, stage: str) -> int:
    """Steps times batch size of a training stage (one pass over the shards counts as most)."""
    settings = params.variant_train(stage.removeprefix(TRAINING))
    return settings.epochs * (settings.steps_per_epoch or 10**6) * settings.batch_size


def plan(stale: list[str]) -> Plan:
    """The stale stages and every stage downstream of one (DVC would re-run
    those after them). Among ready stages, those that more stages wait for go
    first (they unblock the rest), then the longest trainings (so the long ones
    overlap rather than one running alone at the end)."""
    import networkx
    from dvc.repo import Repo

    with Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {stage.addressing: stage for stage in graph.nodes}
        todo = {name for name in stale if name in by_name}
        for name in list(todo):
            todo |= {s.addressing for s in networkx.ancestors(graph, by_name[name])}
        todo = {name for name in todo if by_name[name].cmd}  # what has no command is left to dvc repro
        commands = {name: by_name[name].cmd for name in todo}
        needs = {name: {s.addressing for s in networkx.descendants(graph, by_name[name])} & todo for name in todo}
        waiting = {name: len(networkx.ancestors(graph, by_name[name])) for name in todo}
    params = load_params()
    rank = {name: (-waiting[name], -(training_steps(params, name) if name.startswith(TRAINING) else 0), name)
            for name in todo}
    return Plan(commands, needs, rank)


def ready(plan: Plan, done: set[str], started: set[str]) -> list[str]:
    """Stages whose prerequisites are done and that have not started, in rank order."""
    return sorted((name for name in plan.commands if name not in started and plan.needs[name] <= done),
                  key=plan.rank.__getitem__)


def threads_for(stage: str) -> dict[str, str]:
    """TensorFlow threads for a stage. Trainings run side by side almost all the
    time, so each gets its share of the cores: two trainings of one thread each
    beat two of two threads fighting over 2 cores (tiny MIRNet-v2 beside tiny
    MIRNet: 33 s instead of 47 s). Settings made by the user win."""
    if not stage.startswith(TRAINING):
        return {}
    share = str(max(1, (os.cpu_count() or 1) // JOBS))
    return {name: os.environ.get(name, share) for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}


def run_stages(children: Children, plan: Plan) -> list[str]:
    """Run the plan ``JOBS`` stages at a time, committing each to DVC as it ends."""
    if not plan.commands:
        return []
    commit = threading.Lock()  # dvc commit takes DVC's repository lock: one at a time

    def run(stage: str) -> str:
        began = time.monotonic()
        say(f">> {stage}: {plan.commands[stage]}")
        if children.run(shlex.split(plan.commands[stage]), prefix=f"[{stage}] ", env=threads_for(stage)) != 0:
            raise StageFailed(f"stage {stage!r} failed: {plan.commands[stage]}")
        with commit:
            if children.run([*DVC, "commit", "--force", "--quiet", stage]) != 0:
                raise StageFailed(f"dvc commit {stage} failed")
        say(f">> {stage} done in {time.monotonic() - began:.0f} s")
        return stage

    done: set[str] = set()
    running: dict = {}
    with ThreadPoolExecutor(JOBS) as pool:
        try:
            while len(done) < len(plan.commands):
                for stage in ready(plan, done, done | set(running.values()))[: JOBS - len(running)]:
                    running[pool.submit(run, stage)] = stage
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.add(future.result())
                    del running[future]
        except BaseException:
            for future in running:
                future.cancel()
            children.stop()
            raise
    return sorted(done, key=plan.rank.__getitem__)


def summary_text(metrics: dict, seconds: float) -> str:
    def optional(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    lines = [f"Done in {seconds / 60:.1f} min. PSNR on the validation images (dB, data range 1); noise: the gain",
             "on TID2013's additive Gaussian noise; cast: the largest mean signed error of a colour channel:", "",
             f"  {'variant':<12} {'dataset':<8} {'images':>6}   {'input -> output':>17}   {'gain':>7}"
             f"   {'noise':>6}   {'cast':>6}"]
    for r in headline(metrics):
        lines.append(f"  {r['variant']:<12} {r['dataset']:<8} {r['images']:>6}   "
                     f"{r['input_psnr']:>7.2f} -> {r['output_psnr']:>6.2f}   {r['gain']:>+7.2f}"
                     f"   {optional(r['noise_gain'], '+6.2f'):>6}   {optional(r['cast'], '6.3f'):>6}")
    lines += [
        "",
        "Where to look next:",
        f"  {artifacts.COMPARISON}   every variant against doing nothing, per distortion type",
        f"  {artifacts.EVALUATION / 'before_after.png'}   input, output and target side by side",
        f"  {artifacts.REPORTS}/<variant>/   per variant: training curves (curves.png), samples (grid.png)",
        "  ./pipeline run mlflow ui --backend-store-uri sqlite:///mlflow.db   runs, metrics, models",
        "  ./pipeline run dvc metrics show   the same figures through DVC",
        "  ./pipeline run mirnet-enhance PHOTOS OUT --model models:/mirnet@champion   your own photos",
    ]
    return "\n".join(lines)


def promote_candidates(params) -> list[str]:
    """What scheduled retraining does for its variant (``flows/retrain.py``),
    for every variant: the ``candidate`` becomes ``champion`` when there is
    none yet or when it beats it by ``retrain.margin_db``. So the registry's
    ``models:/<variant>@champion`` exists after the demo. One line per variant."""
    from mirnet_pipeline.tasks.training.promotion import decide_and_promote
    from mirnet_pipeline.tasks.training.tracking import configure

    configure(params.mlflow)
    lines = []
    for variant, spec in params.variants.items():
        try:
            decision = decide_and_promote(variant, spec.dataset, params.retrain.margin_db)
        except ValueError as exc:
            lines.append(f"  {variant:<12} {exc}")
            continue
        if decision.promoted or decision.champion_version == decision.candidate_version:
            verdict = "champion"
        else:
            verdict = f"candidate (champion: version {decision.champion_version})"
        lines.append(f"  {variant:<12} version {decision.candidate_version} {verdict}: {decision.reason}")
    return lines


def main(argv: list[str]) -> int:
    try:
        params = load_params()  # a mistake in params.yaml stops here, before anything starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    children = Children()
    try:
        with prefect_server(PREFECT_LOG) as url:
            print(f">> Prefect server on {url.removesuffix('/api')} (log: {PREFECT_LOG})", flush=True)
            if not argv:  # the default run: the stale stages, JOBS at a time
                run_stages(children, plan(stale_stages()))
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
    print("\n>> MLflow registry (models:/<variant>@champion):\n" + "\n".join(promote_candidates(params)), flush=True)
    metrics_file = artifacts.EVALUATION / "metrics.json"
    if metrics_file.exists():
        summary = summary_text(json.loads(metrics_file.read_text()), time.monotonic() - started)
        atomic_write_text(SUMMARY_FILE, summary + "\n")  # docs/readme_figures.py puts it in the README
        print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
