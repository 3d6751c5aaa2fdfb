"""Deployments: scheduled retraining, and training on a GPU work pool.

    # serve the retrain schedule from this machine (a local process runs it)
    python -m flows.deploy serve

    # or register the deployments with a server and let workers run them
    prefect server start                              # terminal 1
    prefect work-pool create default --type process   # once
    prefect work-pool create gpu --type process       # once, on the GPU machine
    python -m flows.deploy register                   # terminal 2
    prefect worker start --pool default               # runs retrain
    prefect worker start --pool gpu                   # on the GPU machine: runs train

``prefect.yaml`` holds the same deployments for ``prefect deploy --all``.
"""

from __future__ import annotations

import sys

from flows.retrain import retrain
from flows.train import train
from tasks.config import load_params


def retrain_deployment(cron: str | None = None, parameters: dict | None = None):
    settings = load_params().retrain
    return retrain.to_deployment(
        name="scheduled-retrain",
        cron=cron or settings.cron,
        concurrency_limit=1,  # never two retrains at once
        parameters=parameters or {},
        description="Pull data, reproduce the pipeline, promote the candidate if it is better.",
        tags=["retrain"],
    )


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "serve"
    if command == "serve":
        from prefect import serve

        serve(retrain_deployment())
    elif command == "register":
        settings = load_params().retrain
        retrain.deploy(name="scheduled-retrain", work_pool_name=settings.work_pool, cron=settings.cron,
                       concurrency_limit=1, build=False, push=False,
                       job_variables={"working_dir": "."})
        train.deploy(name="gpu-train", work_pool_name=settings.gpu_work_pool, build=False, push=False)
    else:
        raise SystemExit(f"usage: python -m flows.deploy [serve|register], got {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
