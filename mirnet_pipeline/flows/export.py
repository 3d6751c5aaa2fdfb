"""Flow: export trained variants as a TensorFlow SavedModel, an ONNX model and
an OpenVINO IR, each verified against the Keras model.

    python -m mirnet_pipeline.flows.export          # params.yaml's export.variants
    python -m mirnet_pipeline.flows.export mirnet   # one variant

Writes ``exports/<variant>/`` (``saved_model/``, ``model.onnx``,
``openvino/model.xml``, ``export.json``) and stores it with the variant's
registered model version in MLflow. The work is in ``tasks.export.bundle``;
``mirnet-export`` does the same for any model file or registry URI.
"""

from __future__ import annotations

import sys

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from mirnet_pipeline.flows import prefect_api
from mirnet_pipeline.tasks.config import Params, load_params
from mirnet_pipeline.tasks.export import bundle

export_task = task(bundle.export_variant, name="export-variant")


@flow(name="export")
def export(variants: list[str] | None = None, params: Params | None = None) -> dict:
    params = params or load_params()
    reports = {variant: export_task(params, variant) for variant in variants or params.export.variants}
    lines = ["| variant | format | file | max abs difference | runtime |", "|---|---|---|---:|---|"]
    lines += [f"| {variant} | {name} | {entry['file']} | {entry['max_abs_difference']:.1e} | {entry['runtime']} |"
              for variant, report in reports.items() for name, entry in report["formats"].items()]
    create_markdown_artifact("\n".join(lines), key="exports", description="Exports verified against Keras")
    return reports


if __name__ == "__main__":
    with prefect_api():
        export(sys.argv[1:] or None)
