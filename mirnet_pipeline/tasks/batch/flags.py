"""Outlier flags: which enhanced images stand out from the rest of the
destination, and why. They are data (the metrics' ``flags`` column), and the
run's report shows exactly the flagged rows.

An image is flagged for a measure when its change (output against input)
lies far from the typical change of the whole destination: its modified
z-score (Iglewicz and Hoaglin 1993: the distance from the median in units of
1.4826 times the median absolute deviation) is above ``z``, *and* the distance
itself is above the measure's floor, so a run whose images all change alike
flags nothing for differences nobody would see. The changes compared:

- ``colour_cast``: the output's colour cast minus the input's (only a cast
  that grew is flagged);
- ``brightness``: the output's mean luminance minus the input's;
- ``contrast``: the output's RMS contrast minus the input's;
- ``sharpness``: the base-2 logarithm of output over input sharpness (only a
  loss is flagged: a floor of 1 is half the sharpness the run typically keeps);
- ``slow``: the base-2 logarithm of seconds per megapixel (only slowness is
  flagged: a floor of 1.58 is three times the typical time).

Rows of images not enhanced (errors) are never flagged; rows that a re-run
skipped keep their measures and time, so the whole destination is judged on
one scale.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

MAD_SCALE = 1.4826  # the median absolute deviation of a normal distribution is 0.6745 sigma


@dataclass(frozen=True)
class FlagThresholds:
    z: float = 3.5  # modified z-score above which a change stands out (Iglewicz and Hoaglin's value)
    colour_cast: float = 0.05  # and the cast grew by this much more than typical (opponent-channel units)
    brightness: float = 0.15  # mean luminance changed by this much more or less than typical ([0, 1])
    contrast: float = 0.08  # RMS contrast changed by this much more or less than typical ([0, 1])
    sharpness: float = 1.0  # log2 sharpness ratio this far below typical (1: half)
    slow: float = 1.58  # log2 seconds per megapixel this far above typical (1.58: three times)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ValueError(f"flag threshold {f.name}: must be a number of at least 0, got {value!r}")

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> FlagThresholds:
        """From ``NAME=VALUE`` strings (``--flag contrast=0.1``); ``ValueError`` names a bad one."""
        names = [f.name for f in fields(cls)]
        values = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or name not in names:
                raise ValueError(f"--flag {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"--flag {item!r}: {value!r} is not a number") from None
        return cls(**values)


# flag -> (how the change is computed from the table, which side is flagged: +1 above, -1 below, 0 both)
def _changes(table: pd.DataFrame) -> dict[str, tuple[pd.Series, int]]:
    eps = 1e-12
    megapixels = (table.width.astype("float64") * table.height.astype("float64")) / 1e6
    return {
        "colour_cast": (table.after_colour_cast - table.before_colour_cast, +1),
        "brightness": (table.after_mean_luminance - table.before_mean_luminance, 0),
        "contrast": (table.after_rms_contrast - table.before_rms_contrast, 0),
        "sharpness": (np.log2((table.after_sharpness + eps) / (table.before_sharpness + eps)), -1),
        "slow": (np.log2(table.seconds / megapixels), +1),
    }


FLAG_INPUTS = ["status", "width", "height", "seconds", *(f"{when}_{m}" for when in ("before", "after")
                                                          for m in ("colour_cast", "mean_luminance", "rms_contrast",
                                                                    "sharpness"))]


def flag(table: pd.DataFrame, thresholds: FlagThresholds = FlagThresholds()) -> pd.Series:
    """The ``flags`` column for ``table`` (the metrics): the names of the
    flags a row carries, comma-separated, ``""`` for none; null for rows
    without an output (errors)."""
    enhanced, hits = flag_hits(table, thresholds)
    return pd.Series(flag_texts(enhanced, hits), index=table.index, dtype="string")


def flag_texts(enhanced: np.ndarray, hits: dict[str, np.ndarray]) -> list:
    """The flags column from ``flag_hits`` (or a slice of each of its arrays)."""
    texts: list = ["" if ok else None for ok in enhanced]
    for name, hit in hits.items():
        for i in np.flatnonzero(hit):
            texts[i] = f"{texts[i]},{name}" if texts[i] else name
    return texts


def flag_hits(table: pd.DataFrame, thresholds: FlagThresholds = FlagThresholds()) -> tuple[np.ndarray,
                                                                                              dict[str, np.ndarray]]:
    """(which rows have an output, {flag: which rows carry it}) for the
    metrics ``table`` (its ``FLAG_INPUTS`` columns are enough): one byte a row
    and flag, so the whole bucket's flags cost little memory."""
    enhanced = table.status.isin(["ok", "skipped"]).to_numpy(dtype=bool)
    out = {}
    for name, (change, side) in _changes(table).items():
        values = pd.to_numeric(change, errors="coerce").astype("float64").to_numpy()
        usable = enhanced & np.isfinite(values)
        if usable.sum() < 2:
            continue
        median = float(np.median(values[usable]))
        spread = MAD_SCALE * float(np.median(np.abs(values[usable] - median)))
        distance = values - median
        if side == 0:
            distance = np.abs(distance)
        elif side < 0:
            distance = -distance
        with np.errstate(divide="ignore", invalid="ignore"):
            far = distance > thresholds.z * spread
        out[name] = usable & far & (distance > getattr(thresholds, name))
    return enhanced, out
