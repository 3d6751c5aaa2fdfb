"""The comparison (the ``classical`` and ``compare`` stages): the classical
methods scored like the variants, then every variant against doing nothing,
against the classical methods and against each other; the tables of
``reports/comparison.md``, ``metrics.json``, ``per_type.csv``, the headline
files (DVC's metrics) and the figures. Nothing here runs a trained model: the
variants' scores come from their evaluate stages (``tasks.training.evaluation``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mirnet_pipeline.model import psnr
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import FigureRow, Params
from mirnet_pipeline.tasks.data.shards import read_metadata
from mirnet_pipeline.tasks.storage import atomic_directory, atomic_write_json, atomic_write_text
from mirnet_pipeline.tasks.training import classical, headline
from mirnet_pipeline.tasks.training.classical import METHODS
from mirnet_pipeline.tasks.training.evaluation import (
    CHANNELS,
    KERAS_EXAMPLE_PSNR_OFFSET,
    aggregate,
    evaluate_split,
    summarize,
)
from mirnet_pipeline.tasks.training.headline import headline_files


def comparison_table(results: dict[str, dict], research: dict[str, tuple[float, float]]) -> str:
    """Markdown: each variant's and classical method's validation and test
    PSNR/SSIM against the do-nothing baseline, a variant's lead over the best
    classical method on the same images, and, where the research reported a
    figure, that figure on the usual scale (reported value - 48.13 dB)."""
    lines = [
        "| name | evaluated on | split | images | input PSNR | output PSNR | gain | lead over classical "
        "| input SSIM | output SSIM | colour cast (R, G, B) | research PSNR (reported -> corrected) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    names = [n for n in results if n not in METHODS] + [n for n in results if n in METHODS]
    for name in names:
        reported = research.get(name)
        corrected = ("-" if not reported else
                     f"{'-'.join(f'{r:g}' for r in reported)} -> "
                     f"{'-'.join(f'{r - KERAS_EXAMPLE_PSNR_OFFSET:.1f}' for r in reported)} dB")
        label = f"{name} (classical)" if name in METHODS else name
        for dataset, splits in results[name].items():
            for split, m in splits.items():
                best = None if name in METHODS else headline.best_classical(results, dataset, split)
                lead = "-" if best is None else f"{m['output_psnr'] - best[1]:+.2f} ({best[0]})"
                cast = ", ".join(f"{m[f'output_bias_{c}']:+.3f}" for c in CHANNELS)
                lines.append(
                    f"| {label} | {dataset} | {split} | {m['images']} | {m['input_psnr']:.2f} | "
                    f"{m['output_psnr']:.2f} | {m['psnr_gain']:+.2f} | {lead} | {m['input_ssim']:.4f} | "
                    f"{m['output_ssim']:.4f} | {cast} | {corrected} |"
                )
    return "\n".join(lines)


def classical_table(names) -> str:
    """Markdown: the classical methods evaluated, their datasets and settings."""
    lines = ["| method | scored on | settings |", "|---|---|---|"]
    lines += [f"| {n} | {', '.join(METHODS[n].datasets)} | {METHODS[n].settings} |" for n in METHODS if n in names]
    return "\n".join(lines)


def per_type_table(per_type: pd.DataFrame, dataset: str, split: str) -> str:
    """Markdown: PSNR gain per distortion type (rows) and variant or classical method (columns)."""
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
    ``title``, ``input``, ``output`` and ``target`` images in [0, 1], and
    optionally ``classical`` (the best classical method's output) with its
    ``classical_name``, shown after the input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ("input", "classical", "output", "target") if any("classical" in p for p in panels) else (
        "input", "output", "target")
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(3 * len(columns), 2.25 * len(panels)),
                             squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        target = panel["target"][None]
        scores = {key: float(psnr(target, panel[key][None])[0]) for key in ("input", "output", "classical")
                  if key in panel}
        labels = {"input": f"input {scores['input']:.1f} dB",
                  "output": f"output {scores['output']:.1f} dB ({scores['output'] - scores['input']:+.1f})",
                  "target": "target"}
        if "classical" in scores:
            labels["classical"] = f"{panel['classical_name']} (classical) {scores['classical']:.1f} dB"
        for ax, key in zip(row, columns, strict=True):
            ax.axis("off")
            if key in panel:
                ax.imshow(np.clip(panel[key], 0, 1))
                ax.set_title(labels[key], fontsize=8)
        row[0].text(-0.04, 0.5, panel["title"], transform=row[0].transAxes, rotation=90, ha="right",
                    va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


NOTES = {
    "cnn": ("the research's plain CNN has no global residual and ends in a ReLU: it has to learn to "
            "reproduce the whole image before it can improve on it, so a short training leaves it far "
            "below doing nothing. Its rows are reported as measured."),
}


def comparison_text(results: dict, per_type: pd.DataFrame, profile: str, research: dict,
                    architectures: dict[str, str]) -> str:
    """``reports/comparison.md``: every variant against doing nothing and the
    classical methods, overall and per type."""
    parts = [
        "# Variants compared\n",
        f"Profile `{profile}`. PSNR in dB with data range 1; \"input\" is the do-nothing baseline (the "
        "degraded image itself); gain = output - input. Colour cast: mean signed error (output - target) "
        "of each channel, on [0, 1]. Lead over classical: output PSNR - that of the best classical method "
        "(named) on the same images. Research figures were computed with `max_val=255` on [0, 1] images "
        "and are shown corrected by -48.13 dB.\n",
        comparison_table(results, research) + "\n",
    ]
    methods = [n for n in results if n in METHODS]
    if methods:
        parts += ["## Classical methods\n",
                  "Scored exactly like the variants, on the same images; none sees the reference image.\n",
                  classical_table(methods) + "\n"]
    for dataset in sorted(per_type.dataset.unique()):
        if per_type[per_type.dataset == dataset].distortion.nunique() > 1:
            parts += [f"## PSNR gain per distortion type: {dataset}, validation\n",
                      per_type_table(per_type, dataset, "validation") + "\n"]
    notes = [f"- `{variant}`: {NOTES[arch]}" for variant, arch in architectures.items() if arch in NOTES]
    if notes:
        parts += ["## Notes\n", "\n".join(notes) + "\n"]
    return "\n".join(parts)


def evaluate_classical(params: Params) -> tuple[pd.DataFrame, dict]:
    """Every classical method (``tasks.training.classical``) on every dataset
    with shards, on the images the variants are evaluated on (the same splits
    and ``evaluate.max_images``): its per-image scores and its panels of the
    figure's distortion types (``evaluate.figure``; without one, each
    dataset's first type), keyed (dataset, method, type). It depends on no
    variant, so training a variant never runs it again."""
    settings = params.evaluate
    frames, panels = [], {}
    for dataset in sorted(p.name for p in artifacts.SHARDS.iterdir() if (p / "validation").is_dir()):
        methods = {m.name: m for m in classical.methods_for(dataset)}
        if not methods:
            continue
        types = tuple(sorted({row.distortion for row in settings.figure if row.dataset == dataset})) or (
            min(r["distortion"] for r in read_metadata(artifacts.shard_set(dataset, "validation"))),)
        for split in settings.splits:
            keep = dict.fromkeys(methods, types) if split == "validation" else {}
            frame, found = evaluate_split(methods, artifacts.shard_set(dataset, split), settings.images(dataset), keep)
            frames.append(frame.assign(dataset=dataset, split=split))
            panels.update({(dataset, *key): panel for key, panel in found.items()})
    if not frames:
        raise FileNotFoundError(f"no shards of a dataset with classical methods in {artifacts.SHARDS}: "
                                "run the shards stage first (dvc repro shards)")
    return pd.concat(frames, ignore_index=True), panels


def best_per_type(per_image: pd.DataFrame, split: str = "validation") -> dict[tuple[str, int], str]:
    """The classical method with the highest mean output PSNR on ``split``,
    per dataset and distortion type: {(dataset, type): method}."""
    rows = per_image[per_image.variant.isin(list(METHODS)) & (per_image.split == split)]
    means = rows.groupby(["dataset", "distortion", "variant"]).output_psnr.mean().reset_index()
    top = means.loc[means.groupby(["dataset", "distortion"]).output_psnr.idxmax()]
    return {(d, int(t)): method for d, t, method in zip(top.dataset, top.distortion, top.variant, strict=True)}


def write_figure(rows: list[FigureRow], panels: dict, best: dict | None = None) -> Path:
    """``before_after.png``: input / output / target rows, in the order of
    ``rows``, with the best classical method on the row's type (``best``, from
    ``best_per_type``) beside them where its panel was kept."""
    missing = [row for row in rows if (row.dataset, row.variant, row.distortion) not in panels]
    if missing:
        raise ValueError(f"evaluate.figure: no evaluated validation image for {missing}")
    chosen = []
    for row in rows:
        panel = dict(panels[(row.dataset, row.variant, row.distortion)])
        method = (best or {}).get((row.dataset, row.distortion))
        theirs = panels.get((row.dataset, method, row.distortion))
        if theirs is not None and theirs["record"]["image_id"] == panel["record"]["image_id"]:
            panel.update(classical=theirs["output"], classical_name=method)
        chosen.append({**panel, "title": f"{row.variant} on {row.dataset} {panel['record']['image_id']}"})
    path = artifacts.EVALUATION / "before_after.png"
    before_after_figure(chosen, path)
    return path


def per_type_figure(per_type: pd.DataFrame, path: Path, split: str = "validation") -> None:
    """PSNR gain per distortion type, one line per variant (dashed per
    classical method), for each dataset with several types (TID2013): the DVC
    plot of the evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = per_type[per_type.split == split]
    datasets = [d for d in sorted(rows.dataset.unique()) if rows[rows.dataset == d].distortion.nunique() > 1]
    fig, axes = plt.subplots(len(datasets) or 1, 1, figsize=(10, 4 * max(1, len(datasets))), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=False):  # one empty panel when no dataset has types
        for variant, group in rows[rows.dataset == dataset].groupby("variant", sort=True):
            group = group.sort_values("distortion")
            untrained = variant in METHODS  # a classical method: dashed
            ax.plot(group.distortion, group.psnr_gain, "o--" if untrained else "o-", markersize=3,
                    label=f"{variant} (classical)" if untrained else variant)
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
    ``comparison.md`` from every variant's and classical method's per-image
    scores; returns the means ({name: {dataset: {split: ...}}}) and the
    comparison text."""
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
    architectures = {v: params.models[params.variants[v].model].arch for v in results if v in params.variants}
    text = comparison_text(results, per_type, params.profile, params.evaluate.research_psnr, architectures)
    atomic_write_text(artifacts.COMPARISON, text)
    return results, text
