"""Flow: fetch datasets into ``data/raw/<name>``, validated, whole or not at all.

    python -m mirnet_pipeline.flows.fetch tid2013
    python -m mirnet_pipeline.flows.fetch lol
"""

from __future__ import annotations

import sys

from prefect import flow, task

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import DataSettings, load_params
from mirnet_pipeline.tasks.data.datasets import DATASETS
from mirnet_pipeline.tasks.data.datasets import fetch as fetch_dataset


@task(name="fetch-dataset")
def fetch_task(name: str, settings: DataSettings) -> str:
    """``data/raw/<name>`` from the configured source, validated, whole."""
    return fetch_dataset(name, settings)


@flow(name="fetch")
def fetch(names: list[str], settings: DataSettings | None = None) -> list[str]:
    settings = settings or load_params().data
    return [fetch_task(name, settings) for name in names]


if __name__ == "__main__":
    with prefect_api():
        fetch(sys.argv[1:] or list(DATASETS))
