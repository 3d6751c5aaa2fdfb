"""Flow: the classical methods (``tasks/training/classical.py``: gamma,
histogram equalisation and CLAHE for low light; non-local means, wavelet
denoising, a median filter and an unsharp mask for TID2013) scored exactly like
the variants, on the same images.

    python -m mirnet_pipeline.flows.classical

Writes ``reports/evaluation/classical/`` (``scores.parquet``, ``panels.npz``),
which ``flows/compare.py`` reads beside the variants' evaluations.
"""

from __future__ import annotations

from prefect import flow, task

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.training import comparison, evaluation

evaluate_task = task(comparison.evaluate_classical, name="evaluate-classical")
write_task = task(evaluation.write_evaluation, name="write-evaluation")


@flow(name="classical")
def classical(params: Params | None = None) -> dict:
    params = params or load_params()
    frame, panels = evaluate_task(params)
    write_task(artifacts.CLASSICAL, frame, panels)
    return evaluation.summarize(frame)


if __name__ == "__main__":
    with prefect_api():
        classical()
