"""Flow: train one variant from params.yaml (a DVC stage per variant).

    python -m mirnet_pipeline.flows.train mirnet

Outputs ``models/<variant>/model.keras`` and ``reports/<variant>/`` (metrics,
history, curves, grid); an MLflow run with everything; a new registered model
version with alias ``candidate``. A killed run resumes from its last completed
epoch when started again.
"""

from __future__ import annotations

import sys

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training.fit import fit_variant


@task(name="fit-variant")
def fit_task(name: str, params: Params) -> dict:
    return fit_variant(name, params)


@flow(name="train")
def train(variant: str, params: Params | None = None) -> dict:
    params = params or load_params()
    if variant not in params.variants:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(params.variants)}")
    metrics = fit_task(variant, params)
    lines = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    create_markdown_artifact("| metric | value |\n|---|---|\n" + "\n".join(lines),
                             key=f"train-{variant.replace('_', '-')}",
                             description=f"Training of {variant}")
    return metrics


if __name__ == "__main__":
    with prefect_api():
        train(sys.argv[1])
