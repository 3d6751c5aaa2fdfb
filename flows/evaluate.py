"""Flow: evaluate the trained variants on whole images and compare them with
doing nothing.

    python -m flows.evaluate               # every variant, then the comparison
    python -m flows.evaluate mirnet cnn128 # some variants, then the comparison

Writes ``reports/evaluation/images/<variant>.parquet`` (one row per image:
input and output PSNR, SSIM, MAE and colour cast), ``per_type.csv`` (means
per variant, dataset, split and distortion type; DVC plots), ``metrics.json``
(means per variant, dataset and split, with per-type PSNR; DVC metrics),
``before_after.png`` and ``reports/comparison.md``. Each variant's figures also
go to its MLflow training run.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from tasks import artifacts
from tasks.config import EvaluateSettings, FigureRow, Params, load_params
from tasks.evaluate import (aggregate, before_after_figure, comparison_text, evaluate_split, first_of_type,
                            summarize)
from tasks.storage import atomic_write_bytes, atomic_write_json, atomic_write_text


@task(name="evaluate-split")
def evaluate_split_task(variants: list[str], dataset: str, split: str, max_images: int | None) -> pd.DataFrame:
    from tasks.trained_models import load_model

    models = {v: load_model(artifacts.model_file(v))[0] for v in variants}
    frame = evaluate_split(models, artifacts.shard_set(dataset, split), max_images)
    return frame.assign(dataset=dataset, split=split)


@task(name="before-after-figure")
def figure_task(rows: list[FigureRow], settings: EvaluateSettings) -> str:
    from model import enhance
    from tasks.trained_models import load_model

    panels = []
    for row in rows:
        model = load_model(artifacts.model_file(row.variant))[0]
        record, source, target = first_of_type(artifacts.shard_set(row.dataset, "validation"), row.distortion,
                                               settings.images(row.dataset))
        title = f"{row.variant} on {row.dataset} {record['image_id']}"
        panels.append({"title": title, "input": source, "output": enhance(model, source), "target": target})
    path = artifacts.EVALUATION / "before_after.png"
    before_after_figure(panels, path)
    return str(path)


@task(name="log-evaluation")
def log_to_training_runs(params: Params, results: dict) -> None:
    """Each variant's figures as ``eval.<dataset>.<split>.<metric>`` metrics of its training run."""
    import mlflow

    from tasks import tracking

    tracking.configure(params.mlflow)
    for variant, per_dataset in results.items():
        run_file = artifacts.variant_reports(variant) / "mlflow.json"
        run_id = json.loads(run_file.read_text()).get("run_id") if run_file.exists() else None
        if not run_id:
            continue
        with mlflow.start_run(run_id=run_id):
            for dataset, splits in per_dataset.items():
                for split, m in splits.items():
                    tracking.log_metrics({f"eval.{dataset}.{split}.{k}": v for k, v in m.items()
                                          if isinstance(v, (int, float))})


@flow(name="evaluate")
def evaluate(variants: list[str] | None = None, params: Params | None = None) -> dict:
    params = params or load_params()
    settings = params.evaluate
    unknown = sorted(set(variants or []) - set(params.variants))
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(params.variants)}")
    chosen = variants or list(params.variants)
    on: dict[str, list[str]] = {}  # dataset -> the variants evaluated on it
    for variant in chosen:
        spec = params.variants[variant]
        for dataset in spec.evaluate_on or [spec.dataset]:
            on.setdefault(dataset, []).append(variant)
    per_image = pd.concat([evaluate_split_task(names, dataset, split, settings.images(dataset))
                           for dataset, names in on.items() for split in settings.splits], ignore_index=True)

    out = artifacts.EVALUATION
    for variant, frame in per_image.groupby("variant", sort=False):
        atomic_write_bytes(out / "images" / f"{variant}.parquet", frame.to_parquet(index=False))
    per_type = aggregate(per_image, ["variant", "dataset", "split", "distortion"])
    atomic_write_text(out / "per_type.csv", per_type.to_csv(index=False, float_format="%.5g"))
    results = summarize(per_image)
    atomic_write_json(out / "metrics.json", results)
    rows = settings.figure or [FigureRow(variant=v, dataset=params.variants[v].dataset,
                                         distortion=int(per_image[(per_image.variant == v)].distortion.min()))
                               for v in chosen]
    figure_task(rows, settings)
    architectures = {v: params.models[params.variants[v].model].arch for v in chosen}
    text = comparison_text(results, per_type, params.profile, settings.research_psnr, architectures)
    atomic_write_text(artifacts.COMPARISON, text)
    log_to_training_runs(params, results)
    create_markdown_artifact(text, key="variant-comparison", description="All variants against doing nothing")
    return results


if __name__ == "__main__":
    evaluate(sys.argv[1:] or None)
