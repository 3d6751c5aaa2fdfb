"""Evaluation: whole-image inference on the validation and test splits; per
image the PSNR, SSIM, MAE and per-channel mean signed error (the colour cast)
of the degraded input (the do-nothing baseline) and of the model's output;
aggregates per distortion type and overall.

When only some images of a split are evaluated (``evaluate.max_images``),
they are taken evenly across distortion types (``balanced_order``), so that a
small evaluation still covers every type.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mirnet_pipeline.model import infer, psnr, reference_scores
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import FigureRow, Params
from mirnet_pipeline.tasks.data.distortions import DISTORTION_NAMES
from mirnet_pipeline.tasks.data.shards import make_dataset, read_metadata
from mirnet_pipeline.tasks.storage import atomic_directory, atomic_write_json, atomic_write_text
from mirnet_pipeline.tasks.training.headline import headline_files
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


def evaluate_split(models: dict, split_dir: Path, max_images: int | None = None,
                   keep: dict[str, tuple[int, ...]] | None = None,
                   progress: bool = True) -> tuple[pd.DataFrame, dict[tuple[str, int], dict]]:
    """One row per model and evaluated image: ``variant``, image id, type,
    level, and ``input_*`` and ``output_*`` scores against the target. The
    split is read, and its inputs scored, once for all ``models``
    ({variant: model}). Also returns, for each distortion type that ``keep``
    lists for a variant, its first evaluated image as a before/after panel:
    {(variant, type): {record, input, output, target}}."""
    rows, panels = [], {}
    keep = keep or {}
    total = len(read_metadata(split_dir))
    total = min(total, max_images or total)
    with tqdm(total=total, unit="img", desc=f"evaluate {split_dir}", disable=not progress, leave=False) as bar:
        for records, inputs, targets in selected_batches(split_dir, max_images):
            before = image_scores(targets, inputs)
            for variant, model in models.items():
                outputs = infer(model, inputs, batch_size=len(inputs))
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


def comparison_table(results: dict[str, dict], research: dict[str, tuple[float, float]]) -> str:
    """Markdown: each variant's validation and test PSNR/SSIM against the
    do-nothing baseline and, where the research reported a figure, that figure
    on the usual scale (reported value - 48.13 dB)."""
    lines = [
        "| variant | evaluated on | split | images | input PSNR | output PSNR | gain | input SSIM | output SSIM "
        "| colour cast (R, G, B) | research PSNR (reported -> corrected) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for variant, per_dataset in results.items():
        reported = research.get(variant)
        corrected = ("-" if not reported else
                     f"{'-'.join(f'{r:g}' for r in reported)} -> "
                     f"{'-'.join(f'{r - KERAS_EXAMPLE_PSNR_OFFSET:.1f}' for r in reported)} dB")
        for dataset, splits in per_dataset.items():
            for split, m in splits.items():
                cast = ", ".join(f"{m[f'output_bias_{c}']:+.3f}" for c in CHANNELS)
                lines.append(
                    f"| {variant} | {dataset} | {split} | {m['images']} | {m['input_psnr']:.2f} | "
                    f"{m['output_psnr']:.2f} | {m['psnr_gain']:+.2f} | {m['input_ssim']:.4f} | "
                    f"{m['output_ssim']:.4f} | {cast} | {corrected} |"
                )
    return "\n".join(lines)


def per_type_table(per_type: pd.DataFrame, dataset: str, split: str) -> str:
    """Markdown: PSNR gain per distortion type (rows) and variant (columns)."""
    rows = per_type[(per_type.dataset == dataset) & (per_type.split == split)]
    if rows.empty:
        return ""
    table = rows.pivot_table(index=["distortion", "distortion_name"], columns="variant", values="psnr_gain",
                             sort=False)
    inputs = rows.groupby("distortion").input_psnr.first()
    variants = list(table.columns)
    lines = ["| type | distortion | input PSNR | " + " | ".join(variants) + " |",
             "|---:|---|---:|" + "---:|" * len(variants)]
    for (distortion, name), gains in table.iterrows():
        cells = " | ".join("-" if pd.isna(g) else f"{g:+.2f}" for g in gains)
        lines.append(f"| {distortion} | {name} | {inputs[distortion]:.2f} | {cells} |")
    return "\n".join(lines)


def before_after_figure(panels: list[dict], path: Path) -> None:
    """Rows of input / output / target with their PSNR; each panel is a dict of
    ``title``, ``input``, ``output`` and ``target`` images in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(9, 2.25 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        target = panel["target"][None]
        before = float(psnr(target, panel["input"][None])[0])
        after = float(psnr(target, panel["output"][None])[0])
        for ax, key, label in zip(row, ("input", "output", "target"),
                                  (f"input {before:.1f} dB", f"output {after:.1f} dB ({after - before:+.1f})",
                                   "target"), strict=True):
            ax.imshow(np.clip(panel[key], 0, 1))
            ax.set_title(label, fontsize=8)
            ax.axis("off")
        row[0].text(-0.04, 0.5, panel["title"], transform=row[0].transAxes, rotation=90, ha="right",
                    va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def summarize(per_image: pd.DataFrame) -> dict:
    """{variant: {dataset: {split: overall means}}}."""
    results: dict = {}
    for (variant, dataset, split), group in per_image.groupby(["variant", "dataset", "split"], sort=False):
        results.setdefault(variant, {}).setdefault(dataset, {})[split] = overall(group)
    return results


NOTES = {
    "cnn": ("the research's plain CNN has no global residual and ends in a ReLU: it has to learn to "
            "reproduce the whole image before it can improve on it, so a short training leaves it far "
            "below doing nothing. Its rows are reported as measured."),
}


def comparison_text(results: dict, per_type: pd.DataFrame, profile: str, research: dict,
                    architectures: dict[str, str]) -> str:
    """``reports/comparison.md``: every variant against doing nothing, overall and per type."""
    parts = [
        "# Variants compared\n",
        f"Profile `{profile}`. PSNR in dB with data range 1; \"input\" is the do-nothing baseline (the "
        "degraded image itself); gain = output - input. Colour cast: mean signed error (output - target) "
        "of each channel, on [0, 1]. Research figures were computed with `max_val=255` on [0, 1] images "
        "and are shown corrected by -48.13 dB.\n",
        comparison_table(results, research) + "\n",
    ]
    for dataset in sorted(per_type.dataset.unique()):
        if per_type[per_type.dataset == dataset].distortion.nunique() > 1:
            parts += [f"## PSNR gain per distortion type: {dataset}, validation\n",
                      per_type_table(per_type, dataset, "validation") + "\n"]
    notes = [f"- `{variant}`: {NOTES[arch]}" for variant, arch in architectures.items() if arch in NOTES]
    if notes:
        parts += ["## Notes\n", "\n".join(notes) + "\n"]
    return "\n".join(parts)


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
    frame, panels = evaluate_split(models, artifacts.shard_set(dataset, split), max_images, keep)
    return frame.assign(dataset=dataset, split=split), {(dataset, *key): panel for key, panel in panels.items()}


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


def write_variant_evaluation(variant: str, frame: pd.DataFrame, panels: dict) -> Path:
    """``reports/evaluation/variants/<variant>/``: ``scores.parquet`` (one row
    per image) and ``panels.npz`` (the figure's images, keyed
    ``<dataset>/<type>/<image>``, with ``records``: their records as JSON),
    written whole."""
    target = artifacts.variant_evaluation(variant)
    arrays, records = {}, {}
    for (dataset, _, distortion), panel in panels.items():
        key = f"{dataset}/{distortion}"
        records[key] = panel["record"]
        arrays.update({f"{key}/{name}": panel[name] for name in PANEL_IMAGES})
    with atomic_directory(target) as folder:
        frame.to_parquet(folder / "scores.parquet", index=False)
        np.savez_compressed(folder / "panels.npz", records=np.array(json.dumps(records, default=int)), **arrays)
    return target


def read_variant_evaluations(variants: list[str]) -> tuple[pd.DataFrame, dict]:
    """What ``write_variant_evaluation`` wrote for ``variants``: all their
    scores in one frame, and their panels keyed (dataset, variant, type)."""
    missing = [v for v in variants if not (artifacts.variant_evaluation(v) / "scores.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"no evaluation of {', '.join(missing)} in {artifacts.EVALUATION / 'variants'}: "
                                "run their stages first (dvc repro evaluate)")
    frames, panels = [], {}
    for variant in variants:
        folder = artifacts.variant_evaluation(variant)
        frames.append(pd.read_parquet(folder / "scores.parquet"))
        with np.load(folder / "panels.npz") as stored:
            for key, record in json.loads(str(stored["records"])).items():
                dataset, distortion = key.split("/")
                panels[(dataset, variant, int(distortion))] = {
                    "record": record, **{name: stored[f"{key}/{name}"] for name in PANEL_IMAGES}}
    return pd.concat(frames, ignore_index=True), panels


def write_figure(rows: list[FigureRow], panels: dict) -> Path:
    """``before_after.png``: input / output / target rows, in the order of ``rows``."""
    missing = [row for row in rows if (row.dataset, row.variant, row.distortion) not in panels]
    if missing:
        raise ValueError(f"evaluate.figure: no evaluated validation image for {missing}")
    chosen = []
    for row in rows:
        panel = panels[(row.dataset, row.variant, row.distortion)]
        chosen.append({**panel, "title": f"{row.variant} on {row.dataset} {panel['record']['image_id']}"})
    path = artifacts.EVALUATION / "before_after.png"
    before_after_figure(chosen, path)
    return path


def per_type_figure(per_type: pd.DataFrame, path: Path, split: str = "validation") -> None:
    """PSNR gain per distortion type, one line per variant, for each dataset
    with several types (TID2013): the DVC plot of the evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = per_type[per_type.split == split]
    datasets = [d for d in sorted(rows.dataset.unique()) if rows[rows.dataset == d].distortion.nunique() > 1]
    fig, axes = plt.subplots(len(datasets) or 1, 1, figsize=(10, 4 * max(1, len(datasets))), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=False):  # one empty panel when no dataset has types
        for variant, group in rows[rows.dataset == dataset].groupby("variant", sort=True):
            group = group.sort_values("distortion")
            ax.plot(group.distortion, group.psnr_gain, "o-", markersize=3, label=variant)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(sorted(rows[rows.dataset == dataset].distortion.unique()))
        ax.set_xlabel("distortion type")
        ax.set_ylabel("PSNR gain over the input (dB)")
        ax.set_title(f"{dataset}, {split}: PSNR gain per distortion type")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_reports(params: Params, per_image: pd.DataFrame) -> tuple[dict, str]:
    """``per_type.csv``, ``metrics.json``, the headline files and
    ``comparison.md`` from every variant's per-image scores; returns the
    means ({variant: {dataset: {split: ...}}}) and the comparison text."""
    out = artifacts.EVALUATION
    per_type = aggregate(per_image, ["variant", "dataset", "split", "distortion"])
    atomic_write_text(out / "per_type.csv", per_type.to_csv(index=False, float_format="%.5g"))
    results = summarize(per_image)
    atomic_write_json(out / "metrics.json", results)
    split = "validation" if "validation" in set(per_image.split) else str(per_image.split.iloc[0])
    with atomic_directory(artifacts.HEADLINE) as folder:
        for variant, figures in headline_files(results, split).items():
            atomic_write_json(folder / f"{variant}.json", figures)
    per_type_figure(per_type, out / "per_type.png", split)
    architectures = {v: params.models[params.variants[v].model].arch for v in results}
    text = comparison_text(results, per_type, params.profile, params.evaluate.research_psnr, architectures)
    atomic_write_text(artifacts.COMPARISON, text)
    return results, text


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
