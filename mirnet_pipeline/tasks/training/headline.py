"""The evaluation's headline: per variant and dataset, the few figures people
compare first (PSNR in and out, the gain over doing nothing, the lead over the
best classical method, the gain on noise, the colour cast), and the same for
each classical method. Plain dictionaries: the demo's summary prints them and
``reports/headline/<name>.json`` (DVC's metrics) holds them."""

from __future__ import annotations

from mirnet_pipeline.tasks.training.classical import METHODS

# dataset names as DVC's metrics columns show them (`tid.gain`): a row of
# `dvc metrics show` stays under 120 characters
LABELS = {"tid2013": "tid"}


def best_classical(metrics: dict, dataset: str, split: str = "validation") -> tuple[str, float] | None:
    """The classical method with the highest mean output PSNR on ``dataset``'s
    ``split``, and that PSNR; None when no classical method was evaluated there."""
    scored = [(m["output_psnr"], name) for name in METHODS
              if (m := metrics.get(name, {}).get(dataset, {}).get(split)) is not None]
    if not scored:
        return None
    psnr, name = max(scored)
    return name, psnr


def headline(metrics: dict, split: str = "validation") -> list[dict]:
    """One row per name (variant or classical method) and dataset: PSNR in ->
    out, the gain, the gain on noise (TID2013 type 1), the largest colour
    cast of the outputs; a variant's row also has ``lead`` (its output PSNR
    minus the best classical method's on that dataset) and ``classical``
    (that method's name). Variants come first, then the classical methods."""
    rows = []
    names = [n for n in metrics if n not in METHODS] + [n for n in metrics if n in METHODS]
    for name in names:
        for dataset, splits in metrics[name].items():
            if split in splits:
                m = splits[split]
                noise = m.get("per_type", {}).get("1", {}).get("psnr_gain")
                cast = max((abs(m[f"output_bias_{c}"]) for c in "rgb" if f"output_bias_{c}" in m), default=None)
                row = {"variant": name, "dataset": dataset, "images": m["images"], "classical": None,
                       "input_psnr": m["input_psnr"], "output_psnr": m["output_psnr"],
                       "gain": m["psnr_gain"], "lead": None, "noise_gain": noise, "cast": cast,
                       "kind": "classical" if name in METHODS else "variant"}
                best = best_classical(metrics, dataset, split)
                if best is not None and name not in METHODS:
                    row.update(classical=best[0], lead=m["output_psnr"] - best[1])
                rows.append(row)
    return rows


def headline_files(metrics: dict, split: str = "validation") -> dict[str, dict]:
    """{name: {dataset: {gain, lead, noise, cast}}}: the few figures per
    variant and classical method that ``dvc metrics show`` lists (one row per
    name, under 120 characters wide), rounded; the PSNR itself is in the
    evaluation's metrics.json."""
    files: dict[str, dict] = {}
    for r in headline(metrics, split):
        figures = {"gain": r["gain"], "lead": r["lead"], "noise": r["noise_gain"], "cast": r["cast"]}
        files.setdefault(r["variant"], {})[LABELS.get(r["dataset"], r["dataset"])] = {
            k: round(v, 4) for k, v in figures.items() if v is not None}
    return files
