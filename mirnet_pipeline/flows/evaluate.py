"""Flow: evaluate the trained variants on whole images and compare them with
doing nothing.

    python -m mirnet_pipeline.flows.evaluate               # every variant, then the comparison
    python -m mirnet_pipeline.flows.evaluate mirnet cnn128 # some variants, then the comparison

Writes ``reports/evaluation/images/<variant>.parquet`` (one row per image:
input and output PSNR, SSIM, MAE and colour cast), ``per_type.csv`` (means
per variant, dataset, split and distortion type; DVC plots), ``metrics.json``
(means per variant, dataset and split, with per-type PSNR; DVC metrics),
``before_after.png`` and ``reports/comparison.md``. Each variant's figures also
go to MLflow: an evaluation run per variant, linked to its registered model
version. The work is in ``tasks.training.evaluation``.
"""

from __future__ import annotations

import sys

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training import evaluation

evaluate_split_task = task(evaluation.evaluate_variants, name="evaluate-split")
figure_task = task(evaluation.write_figure, name="before-after-figure")
log_task = task(evaluation.log_evaluation, name="log-evaluation")


@flow(name="evaluate")
def evaluate(variants: list[str] | None = None, params: Params | None = None) -> dict:
    params = params or load_params()
    settings = params.evaluate
    on = evaluation.datasets_of(params, variants)
    rows = evaluation.figure_rows(params, variants or list(params.variants))
    scored = [evaluate_split_task(names, dataset, split, settings.images(dataset), rows)
              for dataset, names in on.items() for split in settings.splits]
    per_image = pd.concat([frame for frame, _ in scored], ignore_index=True)
    results, text = evaluation.write_reports(params, per_image)
    if rows and "validation" in settings.splits:
        figure_task(rows, {key: panel for _, found in scored for key, panel in found.items()})
    log_task(params.mlflow, results)
    create_markdown_artifact(text, key="variant-comparison", description="All variants against doing nothing")
    return results


if __name__ == "__main__":
    with prefect_api():
        evaluate(sys.argv[1:] or None)
