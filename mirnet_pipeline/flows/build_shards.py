"""Flow: TFRecord shards ``data/shards/<name>/<set>/`` from the pairs manifests:
random crops of the train split (``train``), one crop per validation pair
(``validation_crops``, for per-epoch validation), whole images of every split
(``train_full``, ``validation``, ``test``).

    python -m mirnet_pipeline.flows.build_shards
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, ShardSettings, load_params
from mirnet_pipeline.tasks.data.datasets import DATASETS, build_shard_sets


@task(name="build-shard-sets")
def shard_task(name: str, settings: ShardSettings) -> dict:
    """Every shard set of one dataset."""
    return build_shard_sets(name, settings)


@flow(name="build-shards")
def build_shards(names: list[str], params: Params | None = None) -> dict:
    params = params or load_params()
    summary = {f"{name}/{set_name}": manifest for name in names
               for set_name, manifest in shard_task(name, params.shards).items()}
    rows = [
        {"set": key, "kind": m["kind"], "records": m["records"], "shards": len(m["shards"]),
         "MB": round(sum(s["bytes"] for s in m["shards"]) / 2**20, 1)}
        for key, m in summary.items()
    ]
    create_table_artifact(rows, key="shard-sets", description="TFRecord shard sets")
    get_run_logger().info(rows)
    return summary


if __name__ == "__main__":
    with prefect_api():
        build_shards(sys.argv[1:] or list(DATASETS))
