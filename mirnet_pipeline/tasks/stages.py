"""Running DVC's stale stages several at a time, in dependency order.

DVC runs one stage at a time, and most stages of this pipeline do not depend
on each other (the fetches, the seven trainings, the model-zoo report). So
``plan`` takes the stale stages and everything downstream of them from DVC's
own stage graph, and ``run_stages`` runs them ``JOBS`` at a time, each with
the command dvc.yaml gives it, and records each with ``dvc commit`` as DVC
does after running a stage; a ``dvc repro`` afterwards finds nothing left to
do. Every process it starts is a ``Children`` member, stopped together on the
way out.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from mirnet_pipeline.tasks.config import load_params
from mirnet_pipeline.tasks.services import start_child, stop_child

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
    beat two of two threads fighting over the same cores. Settings made by the
    user win."""
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
