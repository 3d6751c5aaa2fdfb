"""Flow: scheduled retraining. Pull the data (``dvc pull`` when a remote is
configured), reproduce the pipeline (``dvc repro``: what changed is retrained
and re-evaluated), then promote the ``candidate`` of ``retrain.variant`` to
``champion`` only if it beats the champion's validation PSNR by
``retrain.margin_db``. The decision is a Prefect artifact and MLflow tags.
Two retrains never run at once (a lock here, and a deployment concurrency
limit of 1 in ``flows/deploy.py``).

    python -m mirnet_pipeline.flows.retrain
"""

from __future__ import annotations

import subprocess
import sys

from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training.promotion import decide_and_promote
from mirnet_pipeline.tasks.training.tracking import configure

LOCK_FILE = ".retrain.lock"


class RetrainRunning(RuntimeError):
    """Another retrain holds the lock."""


@task(name="dvc")
def dvc(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def has_remote() -> bool:
    result = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], capture_output=True, text=True)
    return bool(result.stdout.strip())


@task(name="promote")
def promote_task(params: Params) -> dict:
    configure(params.mlflow)
    variant = params.retrain.variant
    decision = decide_and_promote(variant, params.variants[variant].dataset, params.retrain.margin_db)
    create_markdown_artifact(decision.markdown(), key="promotion-decision",
                             description=f"Promotion decision for {variant}")
    return decision.as_dict()


@flow(name="retrain")
def retrain(params: Params | None = None, pull: bool = True, reproduce: bool = True,
            lock_file: str = LOCK_FILE) -> dict:
    logger = get_run_logger()
    try:
        lock = FileLock(lock_file, timeout=0)
        lock.acquire()
    except Timeout:
        raise RetrainRunning(f"another retrain is running (lock {lock_file} is held)") from None
    try:
        if pull and has_remote():
            dvc("pull")
        if reproduce:
            logger.info(dvc("repro"))
        params = params or load_params()
        decision = promote_task(params)
        logger.info(decision)
        return decision
    finally:
        lock.release()


if __name__ == "__main__":
    with prefect_api():
        retrain()
