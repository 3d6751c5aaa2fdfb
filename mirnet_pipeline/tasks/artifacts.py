"""Where the pipeline's artefacts live: the one place that names them.

Paths are relative to the project root, the working directory of every DVC
stage and flow. ``dvc.yaml`` declares the same paths as stage outputs, and a
test checks that the two agree.

    data/params.checked                 params.yaml passed the checks (the first stage)
    data/raw/<dataset>/                 fetched, validated dataset
    data/downloads/                     archives being downloaded (resumable)
    data/prepared/<dataset>.parquet     pairs manifest
    data/shards/<dataset>/<set>/        TFRecord shard set + manifest.json
    models/<variant>/model.keras        trained model
    checkpoints/<variant>/              resumable training state (not DVC-tracked)
    reports/<variant>/                  training report: metrics, history, curves, grid
    reports/evaluation/                 evaluation of every variant
    reports/comparison.md               the variants against doing nothing
    reports/model_zoo/                  size and cost of every variant
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
PARAMS_CHECKED = DATA / "params.checked"
RAW = DATA / "raw"
DOWNLOADS = DATA / "downloads"
PREPARED = DATA / "prepared"
SHARDS = DATA / "shards"
MODELS = Path("models")
EXPORTS = Path("exports")
CHECKPOINTS = Path("checkpoints")
REPORTS = Path("reports")
EVALUATION = REPORTS / "evaluation"
COMPARISON = REPORTS / "comparison.md"
CLASSICAL = EVALUATION / "classical"  # the classical methods' evaluation (the stage `classical`)
HEADLINE = REPORTS / "headline"  # one small metrics file per variant: what `dvc metrics show` shows
MODEL_ZOO = REPORTS / "model_zoo"


def raw_dataset(dataset: str) -> Path:
    return RAW / dataset


def pairs_manifest(dataset: str) -> Path:
    return PREPARED / f"{dataset}.parquet"


def shard_set(dataset: str, name: str) -> Path:
    return SHARDS / dataset / name


def model_file(variant: str) -> Path:
    return MODELS / variant / "model.keras"


def export_folder(variant: str) -> Path:
    """The variant's SavedModel, ONNX and OpenVINO exports and their report."""
    return EXPORTS / variant


def variant_reports(variant: str) -> Path:
    return REPORTS / variant


def variant_evaluation(variant: str) -> Path:
    """The variant's evaluation (its stage ``evaluate@<variant>``): per-image
    scores and the before/after panels of its figure rows."""
    return EVALUATION / "variants" / variant


def checkpoints(variant: str) -> Path:
    return CHECKPOINTS / variant
