"""The evaluation's headline: per variant and dataset, the few figures people
compare first (PSNR in and out, the gain over doing nothing, the gain on
noise, the colour cast). Plain dictionaries, no heavy imports: the demo's summary prints
them and ``reports/headline/<variant>.json`` (DVC's metrics) holds them."""

from __future__ import annotations


def headline(metrics: dict, split: str = "validation") -> list[dict]:
    """One row per variant and dataset: PSNR in -> out, the gain, the gain on
    noise (TID2013 type 1) and the largest colour cast of the outputs."""
    rows = []
    for variant, per_dataset in metrics.items():
        for dataset, splits in per_dataset.items():
            if split in splits:
                m = splits[split]
                noise = m.get("per_type", {}).get("1", {}).get("psnr_gain")
                cast = max((abs(m[f"output_bias_{c}"]) for c in "rgb" if f"output_bias_{c}" in m), default=None)
                rows.append({"variant": variant, "dataset": dataset, "images": m["images"],
                             "input_psnr": m["input_psnr"], "output_psnr": m["output_psnr"],
                             "gain": m["psnr_gain"], "noise_gain": noise, "cast": cast})
    return rows


def headline_files(metrics: dict, split: str = "validation") -> dict[str, dict]:
    """{variant: {dataset: {gain, noise, cast}}}: the few figures per variant
    that ``dvc metrics show`` lists (one row per variant, under 120 characters
    wide), rounded; the PSNR itself is in the evaluation's metrics.json."""
    files: dict[str, dict] = {}
    for r in headline(metrics, split):
        figures = {"gain": r["gain"], "noise": r["noise_gain"], "cast": r["cast"]}
        files.setdefault(r["variant"], {})[r["dataset"]] = {
            k: round(v, 4) for k, v in figures.items() if v is not None}
    return files
