"""Flow: compare every variant's evaluation (``flows/evaluate.py``) with
doing nothing, with the classical methods (``flows/classical.py``) and with
each other.

    python -m mirnet_pipeline.flows.compare

Writes ``reports/evaluation/per_type.csv`` (means per variant, dataset, split
and distortion type; DVC plots), ``metrics.json`` (means per variant, dataset
and split, with per-type PSNR), ``reports/headline/`` (DVC metrics, a file per
variant and classical method), ``per_type.png``, ``before_after.png`` and
``reports/comparison.md``.
It reads what the evaluate and classical stages wrote; nothing is run through
a model here. The work is in ``tasks.training.comparison``.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training import comparison, evaluation

read_task = task(evaluation.read_variant_evaluations, name="read-evaluations")
reports_task = task(comparison.write_reports, name="write-comparison")
figure_task = task(comparison.write_figure, name="before-after-figure")


@flow(name="compare")
def compare(params: Params | None = None) -> dict:
    params = params or load_params()
    per_image, panels = read_task(list(params.variants), classical=True)
    results, text = reports_task(params, per_image)
    rows = evaluation.figure_rows(params, list(params.variants))
    if rows and "validation" in params.evaluate.splits:
        figure_task(rows, panels, comparison.best_per_type(per_image))
    create_markdown_artifact(text, key="variant-comparison",
                             description="All variants against doing nothing and the classical methods")
    return results


if __name__ == "__main__":
    with prefect_api():
        compare()
