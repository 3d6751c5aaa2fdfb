"""Flow: evaluate the trained variants on whole images and compare them.

    python -m flows.evaluate               # every variant, then the comparison
    python -m flows.evaluate mirnet cnn128 # some variants, then the comparison

Writes ``reports/evaluation/images/<variant>.parquet`` (one row per image:
input and output PSNR/SSIM/MAE), ``reports/evaluation/per_type.csv`` (means per
variant, dataset, split and distortion type; DVC plots),
``reports/evaluation/metrics.json`` (overall means; DVC metrics) and
``reports/comparison.md`` (each variant against the do-nothing baseline and the
research's reported figures). Each variant's figures also go to its MLflow
training run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from tasks.config import Params, load_params
from tasks.evaluate import aggregate, comparison_table, evaluate_split, overall
from tasks.storage import atomic_write_bytes, atomic_write_json, atomic_write_text


@task(name="evaluate-split")
def evaluate_split_task(model_path: str, split_dir: str, max_images: int | None) -> pd.DataFrame:
    import keras

    import model  # noqa: F401  (registers the custom layers)

    return evaluate_split(keras.saving.load_model(model_path), Path(split_dir), max_images)


def _log_to_training_run(params: Params, variant: str, results: dict) -> None:
    from tasks import tracking

    run_file = Path(params.evaluate.output_dir) / variant / "mlflow.json"
    run_id = json.loads(run_file.read_text()).get("run_id") if run_file.exists() else None
    if not run_id:
        return
    import mlflow

    tracking.configure(params.mlflow)
    with mlflow.start_run(run_id=run_id):
        for dataset, splits in results.items():
            for split, m in splits.items():
                tracking.log_metrics({f"eval.{dataset}.{split}.{k}": v for k, v in m.items()})


def evaluate_variant(variant: str, params: Params) -> pd.DataFrame:
    """Per-image scores of one variant on its datasets' evaluation splits."""
    spec = params.variants[variant]
    model_path = str(Path("models") / variant / "model.keras")
    frames = []
    for dataset in spec.evaluate_on or [spec.dataset]:
        for split in params.evaluate.splits:
            split_dir = Path(params.data.shards_dir) / dataset / split
            frame = evaluate_split_task(model_path, str(split_dir), params.evaluate.max_images)
            frames.append(frame.assign(dataset=dataset, split=split))
    return pd.concat(frames, ignore_index=True).assign(variant=variant)


def summarize(per_image: pd.DataFrame) -> dict:
    """{dataset: {split: overall means}} of one variant."""
    results: dict = {}
    for (dataset, split), group in per_image.groupby(["dataset", "split"], sort=False):
        results.setdefault(dataset, {})[split] = overall(group)
    return results


@flow(name="evaluate", log_prints=True)
def evaluate(variants: list[str] | None = None, params: Params | None = None) -> str:
    params = params or load_params()
    unknown = sorted(set(variants or []) - set(params.variants))
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(params.variants)}")
    out = Path(params.evaluate.output_dir) / "evaluation"
    frames, results = [], {}
    for variant in variants or list(params.variants):
        per_image = evaluate_variant(variant, params)
        atomic_write_bytes(out / "images" / f"{variant}.parquet", per_image.to_parquet(index=False))
        results[variant] = summarize(per_image)
        _log_to_training_run(params, variant, results[variant])
        frames.append(per_image)
    per_type = aggregate(pd.concat(frames, ignore_index=True), ["variant", "dataset", "split", "distortion"])
    atomic_write_text(out / "per_type.csv", per_type.to_csv(index=False, float_format="%.5g"))
    atomic_write_json(out / "metrics.json", results)
    table = comparison_table(results, params.evaluate.research_psnr)
    text = (
        "# Variants compared\n\n"
        f"Profile `{params.profile}`. PSNR in dB with data range 1; \"input\" is the do-nothing "
        "baseline (the degraded image itself). Research figures were computed with "
        "`max_val=255` on [0, 1] images and are shown corrected by -48.13 dB.\n\n" + table + "\n"
    )
    atomic_write_text(Path(params.evaluate.output_dir) / "comparison.md", text)
    create_markdown_artifact(table, key="variant-comparison", description="All variants")
    print(table)
    return text


if __name__ == "__main__":
    evaluate(sys.argv[1:] or None)
