"""Deployments: scheduled retraining, and training on a GPU work pool.

    # serve the retrain schedule from this machine (this process runs the runs)
    python -m mirnet_pipeline.flows.deploy serve

    # or register the deployments with a server and let workers run them
    prefect server start                              # terminal 1
    prefect work-pool create default --type process   # once
    prefect work-pool create gpu --type process       # once, on the GPU machine
    python -m mirnet_pipeline.flows.deploy register                   # or: prefect deploy --all (prefect.yaml)
    prefect worker start --pool default               # runs retrain, from any directory
    prefect worker start --pool gpu                   # on the GPU machine: runs train

A registered deployment records this repository's path as its working
directory (a ``set_working_directory`` pull step), so a worker started in any
directory runs the flow here, with this project's params.yaml and stores; a
worker on another machine needs the repository at the same path. The served
deployment (``scheduled-retrain-served``) and the registered one
(``scheduled-retrain``) have different names, so one never replaces the other;
run one of them (both would each start the schedule's retrains, and the
retrain lock would refuse the second).
"""

from __future__ import annotations

import sys

from mirnet_pipeline.flows.retrain import retrain
from mirnet_pipeline.flows.train import train
from mirnet_pipeline.tasks.config import PROJECT_ROOT, load_params

SERVED = "scheduled-retrain-served"
REGISTERED = "scheduled-retrain"
GPU_TRAIN = "gpu-train"
DESCRIPTION = "Pull data, reproduce the pipeline, promote the candidate if it is better."
USAGE = "usage: python -m mirnet_pipeline.flows.deploy [serve|register]"


def retrain_deployment(cron: str | None = None, parameters: dict | None = None):
    """The retrain deployment that ``serve`` runs in this process."""
    settings = load_params().retrain
    return retrain.to_deployment(
        name=SERVED,
        cron=cron or settings.cron,
        concurrency_limit=1,  # never two retrains at once
        parameters=parameters or {},
        description=DESCRIPTION,
        tags=["retrain"],
    )


def register(root=PROJECT_ROOT) -> list:
    """Register the retrain deployment (pool ``retrain.work_pool``, the cron
    schedule) and the GPU training deployment (pool ``retrain.gpu_work_pool``)
    with the Prefect server, their code and working directory being ``root``
    (a local folder: no image, no remote storage). Returns the deployment ids."""
    settings = load_params().retrain
    source = str(root)
    pooled = retrain.from_source(source, "mirnet_pipeline/flows/retrain.py:retrain").deploy(
        name=REGISTERED, work_pool_name=settings.work_pool, cron=settings.cron, concurrency_limit=1,
        description=DESCRIPTION, tags=["retrain"], build=False, push=False, print_next_steps=False)
    gpu = train.from_source(source, "mirnet_pipeline/flows/train.py:train").deploy(
        name=GPU_TRAIN, work_pool_name=settings.gpu_work_pool, description="Train one variant on a GPU worker.",
        tags=["train", "gpu"], build=False, push=False, print_next_steps=False)
    return [pooled, gpu]


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    if command == "serve" and len(argv) <= 1:
        from prefect import serve

        serve(retrain_deployment())
        return 0
    if command == "register" and len(argv) == 1:
        for deployment_id in register():
            print(f"registered deployment {deployment_id}")
        return 0
    print(f"{USAGE}\nerror: unknown command {' '.join(argv)!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
