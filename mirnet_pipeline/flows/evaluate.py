"""Flow: evaluate trained variants on whole images against doing nothing,
one variant per pipeline stage (``evaluate@<variant>``), so a change to one
variant re-evaluates that variant only.

    python -m mirnet_pipeline.flows.evaluate mirnet          # one variant
    python -m mirnet_pipeline.flows.evaluate mirnet cnn128   # several, one after the other

Writes ``reports/evaluation/variants/<variant>/`` (``scores.parquet``: one row
per image, input and output PSNR, SSIM, MAE and colour cast; ``panels.npz``:
the before/after images of its rows of the figure) and logs the variant's
means to MLflow: an evaluation run of its own, linked to its registered model
version, whose description gains the figures. ``flows/compare.py`` turns every
variant's evaluation into the comparison. The work is in
``tasks.training.evaluation``.
"""

from __future__ import annotations

import sys

from prefect import flow, task

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training import evaluation

evaluate_task = task(evaluation.evaluate_variant, name="evaluate-variant")
write_task = task(evaluation.write_variant_evaluation, name="write-evaluation")
log_task = task(evaluation.log_evaluation, name="log-evaluation")


@flow(name="evaluate")
def evaluate(variants: list[str], params: Params | None = None) -> dict:
    params = params or load_params()
    evaluation.datasets_of(params, variants)  # unknown names fail here, before any work
    results = {}
    for variant in variants:
        frame, panels = evaluate_task(params, variant)
        write_task(variant, frame, panels)
        results[variant] = evaluation.summarize(frame)[variant]
        log_task(params, {variant: results[variant]})
    return results


if __name__ == "__main__":
    if not sys.argv[1:]:
        sys.exit("usage: python -m mirnet_pipeline.flows.evaluate VARIANT [VARIANT ...]")
    with prefect_api():
        evaluate(sys.argv[1:])
