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
from tasks.config import FigureRow, Params, load_params
from tasks.training.evaluation import aggregate, before_after_figure, comparison_text, evaluate_split, summarize
from tasks.storage import atomic_write_bytes, atomic_write_json, atomic_write_text


@task(name="evaluate-split")
def evaluate_split_task(variants: list[str], dataset: str, split: str, max_images: int | None,
                        figure: list[FigureRow]) -> tuple[pd.DataFrame, dict]:
    """Scores of the variants on one split, and the panels of the figure rows on it."""
    from tasks.training.trained_models import load_model

    models = {v: load_model(artifacts.model_file(v))[0] for v in variants}
    keep = {}
    if split == "validation":
        for row in figure:
            if row.dataset == dataset and row.variant in models:
                keep[row.variant] = keep.get(row.variant, ()) + (row.distortion,)
    frame, panels = evaluate_split(models, artifacts.shard_set(dataset, split), max_images, keep)
    return frame.assign(dataset=dataset, split=split), {(dataset, *key): panel for key, panel in panels.items()}


@task(name="before-after-figure")
def figure_task(rows: list[FigureRow], panels: dict) -> str:
    """Input / output / target rows, in the order of ``rows``."""
    missing = [row for row in rows if (row.dataset, row.variant, row.distortion) not in panels]
    if missing:
        raise ValueError(f"evaluate.figure: no evaluated validation image for {missing}")
    chosen = []
    for row in rows:
        panel = panels[(row.dataset, row.variant, row.distortion)]
        chosen.append({**panel, "title": f"{row.variant} on {row.dataset} {panel['record']['image_id']}"})
    path = artifacts.EVALUATION / "before_after.png"
    before_after_figure(chosen, path)
    return str(path)


@task(name="log-evaluation")
def log_to_training_runs(params: Params, results: dict) -> None:
    """Each variant's figures as ``eval.<dataset>.<split>.<metric>`` metrics of its training run."""
    import mlflow

    from tasks.training import tracking

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


def default_figure(params: Params, variants: list[str]) -> list[FigureRow]:
    """Without ``evaluate.figure``: each variant on its own dataset's first type."""
    from tasks.data.shards import read_metadata

    first = {}
    for v in variants:
        dataset = params.variants[v].dataset
        if dataset not in first:
            first[dataset] = min(r["distortion"] for r in read_metadata(artifacts.shard_set(dataset, "validation")))
    return [FigureRow(variant=v, dataset=params.variants[v].dataset, distortion=first[params.variants[v].dataset])
            for v in variants]


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
    rows = [row for row in settings.figure or default_figure(params, chosen) if row.variant in chosen]
    scored = [evaluate_split_task(names, dataset, split, settings.images(dataset), rows)
              for dataset, names in on.items() for split in settings.splits]
    per_image = pd.concat([frame for frame, _ in scored], ignore_index=True)
    panels = {key: panel for _, found in scored for key, panel in found.items()}

    out = artifacts.EVALUATION
    for variant, frame in per_image.groupby("variant", sort=False):
        atomic_write_bytes(out / "images" / f"{variant}.parquet", frame.to_parquet(index=False))
    per_type = aggregate(per_image, ["variant", "dataset", "split", "distortion"])
    atomic_write_text(out / "per_type.csv", per_type.to_csv(index=False, float_format="%.5g"))
    results = summarize(per_image)
    atomic_write_json(out / "metrics.json", results)
    if rows and "validation" in settings.splits:
        figure_task(rows, panels)
    architectures = {v: params.models[params.variants[v].model].arch for v in chosen}
    text = comparison_text(results, per_type, params.profile, settings.research_psnr, architectures)
    atomic_write_text(artifacts.COMPARISON, text)
    log_to_training_runs(params, results)
    create_markdown_artifact(text, key="variant-comparison", description="All variants against doing nothing")
    return results


if __name__ == "__main__":
    evaluate(sys.argv[1:] or None)
