"""Flow: size and cost of every model variant in params.yaml.

Writes ``reports/model_zoo/summary.json`` (DVC metrics) and ``summary.md``,
and publishes the table as a Prefect artifact.

    python -m mirnet_pipeline.flows.model_zoo
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import Params, load_params, variant_options
from mirnet_pipeline.tasks.storage import atomic_write_json, atomic_write_text
from mirnet_pipeline.tasks.training.model_zoo import describe_variant, markdown_table

describe_variant_task = task(describe_variant, name="describe-variant")


@flow(name="model-zoo")
def model_zoo(params: Params | None = None) -> dict:
    params = params or load_params()
    settings = params.model_zoo
    rows = {
        name: describe_variant_task(
            spec.arch, variant_options(spec), settings.height, settings.width
        )
        for name, spec in params.models.items()
    }
    table = markdown_table(rows)
    out = artifacts.MODEL_ZOO
    atomic_write_text(out / "summary.md", f"# Model zoo\n\n{table}\n")
    metrics = {
        name: {k: info[k] for k in ("parameters", "layers", "gmacs_per_megapixel")}
        for name, info in rows.items()
    }
    atomic_write_json(out / "summary.json", metrics)
    create_markdown_artifact(table, key="model-zoo", description="Model variants: size and cost")
    get_run_logger().info(table)
    return metrics


if __name__ == "__main__":
    with prefect_api():
        model_zoo()
