"""Flow: index fetched datasets into pairs manifests ``data/prepared/<name>.parquet``
(input, target, image id, distortion type and name, level, MOS, split).

    python -m mirnet_pipeline.flows.index
"""

from __future__ import annotations

import sys

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import DataSettings, load_params
from mirnet_pipeline.tasks.data.datasets import DATASETS
from mirnet_pipeline.tasks.data.datasets import index as index_dataset


@task(name="index-dataset")
def index_task(name: str, settings: DataSettings) -> str:
    """``data/prepared/<name>.parquet``: one row per (input, target) pair."""
    return index_dataset(name, settings)


@flow(name="index")
def index(names: list[str], settings: DataSettings | None = None) -> dict[str, str]:
    settings = settings or load_params().data
    paths = {name: index_task(name, settings) for name in names}
    counts = [
        {"dataset": name, **pd.read_parquet(path).split.value_counts().to_dict()}
        for name, path in paths.items()
    ]
    create_table_artifact(counts, key="pairs-per-split", description="Pairs per split")
    get_run_logger().info(counts)
    return paths


if __name__ == "__main__":
    with prefect_api():
        index(sys.argv[1:] or list(DATASETS))
