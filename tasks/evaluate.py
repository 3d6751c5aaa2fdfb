"""Evaluation: whole-image inference on the validation and test splits; per
image the PSNR, SSIM and MAE of the degraded input (the do-nothing baseline)
and of the model's output; aggregates per distortion type and overall."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from model import enhance, mae, psnr, ssim
from tasks.shards import make_dataset, read_manifest

KEYS = ("psnr", "ssim", "mae")
# The Keras MIRNet example reports PSNR with max_val=255 on [0, 1] images.
KERAS_EXAMPLE_PSNR_OFFSET = 20 * math.log10(255.0)  # 48.13 dB


def image_scores(target: np.ndarray, image: np.ndarray) -> dict[str, float]:
    t, x = target[None], image[None]
    return {"psnr": float(psnr(t, x)[0]), "ssim": float(ssim(t, x)[0]), "mae": float(mae(t, x)[0])}


def evaluate_split(model: keras.Model, split_dir: Path, max_images: int | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """One row per image: id, type, level and input_/output_ PSNR, SSIM, MAE."""
    manifest = read_manifest(split_dir)
    total = min(manifest["records"], max_images or manifest["records"])
    dataset = make_dataset(split_dir, 1, training=False, with_metadata=True).take(total)
    rows = []
    for source, target, meta in tqdm(dataset, total=total, unit="img", desc=f"evaluate {split_dir}",
                                     disable=not progress, leave=False):
        source, target = source.numpy()[0], target.numpy()[0]
        output = enhance(model, source)
        before, after = image_scores(target, source), image_scores(target, output)
        rows.append({
            "image_id": meta["image_id"].numpy()[0].decode(),
            "distortion": int(meta["distortion"].numpy()[0]),
            "level": int(meta["level"].numpy()[0]),
            **{f"input_{k}": v for k, v in before.items()},
            **{f"output_{k}": v for k, v in after.items()},
        })
    return pd.DataFrame(rows)


def aggregate(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Means of every score per group, with the PSNR gain over the input."""
    columns = [f"{side}_{k}" for side in ("input", "output") for k in KEYS]
    table = frame.groupby(by)[columns].mean().reset_index()
    table["psnr_gain"] = table["output_psnr"] - table["input_psnr"]
    table["images"] = frame.groupby(by).size().values
    return table


def overall(frame: pd.DataFrame) -> dict[str, float]:
    means = {c: float(frame[c].mean()) for c in frame.columns if c.startswith(("input_", "output_"))}
    means["psnr_gain"] = means["output_psnr"] - means["input_psnr"]
    means["images"] = int(len(frame))
    return means


def comparison_table(results: dict[str, dict], research: dict[str, list[float]]) -> str:
    """Markdown: each variant's validation and test PSNR/SSIM against the
    do-nothing baseline and, where the research reported a figure, that figure
    on the usual scale (reported value - 48.13 dB)."""
    lines = [
        "| variant | evaluated on | split | images | input PSNR | output PSNR | gain | input SSIM | output SSIM | research PSNR (reported -> corrected) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for variant, per_dataset in results.items():
        reported = research.get(variant)
        corrected = ("-" if not reported else
                     f"{'-'.join(f'{r:g}' for r in reported)} -> "
                     f"{'-'.join(f'{r - KERAS_EXAMPLE_PSNR_OFFSET:.1f}' for r in reported)} dB")
        for dataset, splits in per_dataset.items():
            for split, m in splits.items():
                lines.append(
                    f"| {variant} | {dataset} | {split} | {m['images']} | {m['input_psnr']:.2f} | "
                    f"{m['output_psnr']:.2f} | {m['psnr_gain']:+.2f} | {m['input_ssim']:.4f} | "
                    f"{m['output_ssim']:.4f} | {corrected} |"
                )
    return "\n".join(lines)
