"""Evaluation: whole-image inference on the validation and test splits; per
image the PSNR, SSIM, MAE and per-channel mean signed error (the colour cast)
of the degraded input (the do-nothing baseline) and of the model's output;
aggregates per distortion type and overall.

The same scoring serves the classical methods and the comparison of all
(``tasks.training.comparison``).

When only some images of a split are evaluated (``evaluate.max_images``),
they are taken evenly across distortion types (``balanced_order``), so that a
small evaluation still covers every type.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mirnet_pipeline.model import infer, reference_scores
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import FigureRow, Params
from mirnet_pipeline.tasks.data.distortions import DISTORTION_NAMES
from mirnet_pipeline.tasks.data.shards import make_dataset, read_metadata
from mirnet_pipeline.tasks.storage import atomic_directory
from mirnet_pipeline.tasks.training.model_card import describe

KEYS = ("psnr", "ssim", "mae")
CHANNELS = ("r", "g", "b")
SCORES = (*KEYS, *(f"bias_{c}" for c in CHANNELS))
# The Keras MIRNet example reports PSNR with max_val=255 on [0, 1] images.
KERAS_EXAMPLE_PSNR_OFFSET = 20 * math.log10(255.0)  # 48.13 dB
LOW_LIGHT = 0  # the distortion type of LoL pairs


def distortion_name(distortion: int) -> str:
    return "Low light" if distortion == LOW_LIGHT else DISTORTION_NAMES[distortion]


def balanced_order(records: list[dict]) -> list[int]:
    """Indices of ``records`` (dicts with ``image_id`` and ``distortion``) in the
    order evaluation takes them: round ``r`` takes, for each distortion type in
    ascending order, the image at position ``(k + r) mod n`` of that type's
    ``n`` images sorted by image id, ``k`` being the type's rank. The first
    round thus holds one image of every type, consecutive types starting at
    consecutive references; a single-type split (LoL) keeps image-id order."""
    by_type: dict[int, list[int]] = {}
    for index in sorted(range(len(records)), key=lambda i: (records[i]["image_id"], i)):
        by_type.setdefault(records[index]["distortion"], []).append(index)
    order = []
    for r in range(max((len(v) for v in by_type.values()), default=0)):
        for k, distortion in enumerate(sorted(by_type)):
            indices = by_type[distortion]
            if r < len(indices):
                order.append(indices[(k + r) % len(indices)])
    return order


def image_scores(targets: np.ndarray, images: np.ndarray) -> list[dict[str, float]]:
    """PSNR, SSIM, MAE and mean signed error per channel of each image of a batch."""
    bias = (images - targets).mean(axis=(1, 2))
    return [{**scores, **{f"bias_{name}": float(bias[i, c]) for c, name in enumerate(CHANNELS)}}
            for i, scores in enumerate(reference_scores(targets, images))]


def selected_batches(split_dir: Path, max_images: int | None, batch_size: int = 4):
    """(records, inputs, targets) batches of the images chosen for evaluation,
    in the split's order; images of one batch share their size."""
    records = read_metadata(split_dir)
    order = balanced_order(records)
    chosen = set(order[:max_images] if max_images else order)
    batch: list = []
    for index, (source, target, _) in enumerate(make_dataset(split_dir, 1, training=False, with_metadata=True)):
        if index not in chosen:
            continue
        source, target = source.numpy()[0], target.numpy()[0]
        if batch and (len(batch) == batch_size or batch[0][1].shape != source.shape):
            yield _stack(batch)
            batch = []
        batch.append((records[index], source, target))
    if batch:
        yield _stack(batch)


def _stack(batch):
    return [r for r, _, _ in batch], np.stack([s for _, s, _ in batch]), np.stack([t for _, _, t in batch])


Enhancer = Callable[[np.ndarray], np.ndarray]  # a batch of images in [0, 1] -> the enhanced batch


def evaluate_split(enhancers: dict[str, Enhancer], split_dir: Path, max_images: int | None = None,
                   keep: dict[str, tuple[int, ...]] | None = None,
                   progress: bool = True) -> tuple[pd.DataFrame, dict[tuple[str, int], dict]]:
    """One row per enhancer and evaluated image: ``variant`` (the enhancer's
    name: a trained variant or a classical method), image id, type, level, and
    ``input_*`` and ``output_*`` scores against the target. The split is read,
    and its inputs scored, once for all ``enhancers`` ({name: enhancer}). Also
    returns, for each distortion type that ``keep`` lists for a name, its
    first evaluated image as a before/after panel:
    {(name, type): {record, input, output, target}}."""
    rows, panels = [], {}
    keep = keep or {}
    total = len(read_metadata(split_dir))
    total = min(total, max_images or total)
    with tqdm(total=total, unit="img", desc=f"evaluate {split_dir}", disable=not progress, leave=False) as bar:
        for records, inputs, targets in selected_batches(split_dir, max_images):
            before = image_scores(targets, inputs)
            for variant, enhance in enhancers.items():
                outputs = enhance(inputs)
                after = image_scores(targets, outputs)
                for i, (record, b, a) in enumerate(zip(records, before, after, strict=True)):
                    rows.append({"variant": variant, **record, **{f"input_{k}": v for k, v in b.items()},
                                 **{f"output_{k}": v for k, v in a.items()}})
                    wanted = (variant, record["distortion"])
                    if record["distortion"] in keep.get(variant, ()) and wanted not in panels:
                        panels[wanted] = {"record": record, "input": inputs[i], "output": outputs[i],
                                          "target": targets[i]}
            bar.update(len(records))
    return pd.DataFrame(rows), panels


def aggregate(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means of every score per group, with the PSNR gain over the input."""
    columns = [f"{side}_{k}" for side in ("input", "output") for k in SCORES]
    table = frame.groupby(by)[columns].mean().reset_index()
    table["psnr_gain"] = table["output_psnr"] - table["input_psnr"]
    table["images"] = frame.groupby(by).size().values
    if "distortion" in by:
        table.insert(by.index("distortion") + 1, "distortion_name", table["distortion"].map(distortion_name))
    return table


def overall(frame: pd.DataFrame) -> dict:
    """Means over the images of one variant, dataset and split, and per
    distortion type where there are several."""
    means = {c: float(frame[c].mean()) for c in frame.columns if c.startswith(("input_", "output_"))}
    means["psnr_gain"] = means["output_psnr"] - means["input_psnr"]
    means["images"] = int(len(frame))
    if frame["distortion"].nunique() > 1:
        means["per_type"] = {
            str(int(d)): {"images": int(len(g)), "input_psnr": float(g.input_psnr.mean()),
                          "output_psnr": float(g.output_psnr.mean()),
                          "psnr_gain": float(g.output_psnr.mean() - g.input_psnr.mean())}
            for d, g in frame.groupby("distortion")
        }
    return means


def summarize(per_image: pd.DataFrame) -> dict:
    """{variant: {dataset: {split: overall means}}}."""
    results: dict = {}
    for (variant, dataset, split), group in per_image.groupby(["variant", "dataset", "split"], sort=False):
        results.setdefault(variant, {}).setdefault(dataset, {})[split] = overall(group)
    return results


# --- the evaluate stage: which variants on which splits, and what it writes -------


def datasets_of(params: Params, variants: list[str] | None) -> dict[str, list[str]]:
    """{dataset: the variants evaluated on it} (every variant when ``variants`` is None)."""
    unknown = sorted(set(variants or []) - set(params.variants))
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(params.variants)}")
    on: dict[str, list[str]] = {}
    for variant in variants or list(params.variants):
        spec = params.variants[variant]
        for dataset in spec.evaluate_on or [spec.dataset]:
            on.setdefault(dataset, []).append(variant)
    return on


def figure_rows(params: Params, variants: list[str]) -> list[FigureRow]:
    """The before/after rows of these variants: ``evaluate.figure``, or each
    variant on its own dataset's first distortion type."""
    rows = params.evaluate.figure
    if not rows:
        first = {}
        for v in variants:
            dataset = params.variants[v].dataset
            if dataset not in first:
                first[dataset] = min(r["distortion"] for r in read_metadata(artifacts.shard_set(dataset, "validation")))
        rows = [FigureRow(variant=v, dataset=params.variants[v].dataset, distortion=first[params.variants[v].dataset])
                for v in variants]
    return [row for row in rows if row.variant in variants]


def evaluate_variants(variants: list[str], dataset: str, split: str, max_images: int | None,
                      figure: list[FigureRow]) -> tuple[pd.DataFrame, dict]:
    """The trained ``variants`` scored on one split of ``dataset`` (``evaluate_split``),
    and the panels of the figure rows on it, keyed (dataset, variant, type)."""
    from mirnet_pipeline.tasks.training.trained_models import load_model

    models = {v: load_model(artifacts.model_file(v))[0] for v in variants}
    keep: dict[str, tuple[int, ...]] = {}
    if split == "validation":
        for row in figure:
            if row.dataset == dataset and row.variant in models:
                keep[row.variant] = keep.get(row.variant, ()) + (row.distortion,)
    enhancers = {v: functools.partial(_through, model) for v, model in models.items()}
    frame, panels = evaluate_split(enhancers, artifacts.shard_set(dataset, split), max_images, keep)
    return frame.assign(dataset=dataset, split=split), {(dataset, *key): panel for key, panel in panels.items()}


def _through(model, images: np.ndarray) -> np.ndarray:
    return infer(model, images, batch_size=len(images))


def evaluate_variant(params: Params, variant: str) -> tuple[pd.DataFrame, dict]:
    """``variant`` on every dataset and split it is evaluated on
    (``evaluate_variants``): its per-image scores and figure panels."""
    settings = params.evaluate
    rows = figure_rows(params, [variant])
    frames, panels = [], {}
    for dataset in datasets_of(params, [variant]):
        for split in settings.splits:
            frame, found = evaluate_variants([variant], dataset, split, settings.images(dataset), rows)
            frames.append(frame)
            panels.update(found)
    return pd.concat(frames, ignore_index=True), panels


PANEL_IMAGES = ("input", "output", "target")


def write_evaluation(target: Path, frame: pd.DataFrame, panels: dict) -> Path:
    """An evaluation's folder (``artifacts.variant_evaluation`` or
    ``artifacts.CLASSICAL``): ``scores.parquet`` (one row per name and image)
    and ``panels.npz`` (the figure's images, keyed
    ``<dataset>/<name>/<type>/<input|output|target>``,
    with ``records``: their records as JSON), written whole."""
    arrays, records = {}, {}
    for (dataset, name, distortion), panel in panels.items():
        key = f"{dataset}/{name}/{distortion}"
        records[key] = panel["record"]
        arrays.update({f"{key}/{image}": panel[image] for image in PANEL_IMAGES})
    with atomic_directory(target) as folder:
        frame.to_parquet(folder / "scores.parquet", index=False)
        np.savez_compressed(folder / "panels.npz", records=np.array(json.dumps(records, default=int)), **arrays)
    return target


def write_variant_evaluation(variant: str, frame: pd.DataFrame, panels: dict) -> Path:
    """``reports/evaluation/variants/<variant>/`` (``write_evaluation``)."""
    return write_evaluation(artifacts.variant_evaluation(variant), frame, panels)


def read_evaluation(folder: Path) -> tuple[pd.DataFrame, dict]:
    """What ``write_evaluation`` wrote: the scores, and the panels keyed (dataset, name, type)."""
    panels = {}
    with np.load(folder / "panels.npz") as stored:
        for key, record in json.loads(str(stored["records"])).items():
            dataset, name, distortion = key.split("/")
            panels[(dataset, name, int(distortion))] = {
                "record": record, **{image: stored[f"{key}/{image}"] for image in PANEL_IMAGES}}
    return pd.read_parquet(folder / "scores.parquet"), panels


def read_variant_evaluations(variants: list[str], classical: bool = False) -> tuple[pd.DataFrame, dict]:
    """What the evaluate stages wrote for ``variants`` (and, with
    ``classical``, the classical methods' stage): all their scores in one
    frame, and their panels keyed (dataset, name, type)."""
    folders = [artifacts.variant_evaluation(v) for v in variants] + ([artifacts.CLASSICAL] if classical else [])
    missing = [str(f) for f in folders if not (f / "scores.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"no evaluation in {', '.join(missing)}: run their stages first "
                                "(dvc repro evaluate classical)")
    frames, panels = [], {}
    for folder in folders:
        frame, found = read_evaluation(folder)
        frames.append(frame)
        panels.update(found)
    return pd.concat(frames, ignore_index=True), panels


def log_evaluation(params: Params, results: dict) -> dict[str, str]:
    """Each variant's means as ``eval.<dataset>.<split>.<metric>`` metrics of an
    MLflow run of its own (``evaluate <variant>``, tag ``kind=evaluation``),
    linked to the logged model of the variant's registered version, so the
    figures show on that model version; the version's tag ``evaluation_run_id``
    names the run, and its description (``model_card``) gains the figures.
    Finished training runs are not reopened. Returns the run id per variant."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mirnet_pipeline.tasks.training import tracking
    from mirnet_pipeline.tasks.training.trained_models import logged_model_id

    tracking.configure(params.mlflow)
    client = MlflowClient()
    runs = {}
    for variant, per_dataset in results.items():
        trained, version = tracking.training_record(variant)
        metrics = {f"eval.{dataset}.{split}.{k}": float(v) for dataset, splits in per_dataset.items()
                   for split, m in splits.items() for k, v in m.items() if isinstance(v, (int, float))}
        tags = {**tracking.provenance(variant), "kind": "evaluation", "training_run_id": trained.get("run_id") or ""}
        if version is not None:
            tags["registered_model"] = f"{version.name}/{version.version}"
        with mlflow.start_run(run_name=f"evaluate {variant}", tags=tags) as run:
            mlflow.log_metrics(metrics, model_id=None if version is None else logged_model_id(version))
        if version is not None:
            client.set_model_version_tag(version.name, version.version, "evaluation_run_id", run.info.run_id)
            training = artifacts.variant_reports(variant) / "metrics.json"
            training = json.loads(training.read_text()) if training.exists() else {}
            tracking.describe_version(version.name, version.version,
                                      describe(variant, params, training, per_dataset))
        runs[variant] = run.info.run_id
    return runs
