"""The evaluation's headline (DVC's metrics: a row per variant) and its per-type plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from mirnet_pipeline.tasks.training.evaluation import per_type_figure
from mirnet_pipeline.tasks.training.headline import headline_files

METRICS = {
    "mirnet": {"tid2013": {"validation": {
        "images": 24, "input_psnr": 23.03, "output_psnr": 23.491234, "psnr_gain": 0.461234,
        "output_bias_r": -0.001, "output_bias_g": 0.006, "output_bias_b": 0.002,
        "per_type": {"1": {"psnr_gain": 2.02}, "2": {"psnr_gain": 0.1}}}}},
    "mirnet_lol": {
        "lol": {"validation": {"images": 64, "input_psnr": 9.64, "output_psnr": 21.24, "psnr_gain": 11.6,
                               "output_bias_r": 0.017, "output_bias_g": -0.01, "output_bias_b": 0.0},
                "test": {"images": 15, "input_psnr": 9.0, "output_psnr": 20.0, "psnr_gain": 11.0}}},
}


def test_one_small_file_per_variant_with_the_figures_people_compare():
    files = headline_files(METRICS)
    assert files == {
        "mirnet": {"tid2013": {"gain": 0.4612, "noise": 2.02, "cast": 0.006}},
        "mirnet_lol": {"lol": {"gain": 11.6, "cast": 0.017}},  # one type: no noise figure
    }
    assert headline_files(METRICS, "test") == {"mirnet_lol": {"lol": {"gain": 11.0}}}


def test_the_per_type_plot_has_a_line_per_variant(tmp_path):
    rows = [{"variant": v, "dataset": "tid2013", "split": "validation", "distortion": d, "psnr_gain": g}
            for v, gains in (("mirnet", [2.0, -0.5, 0.3]), ("cnn128", [-6.0, -7.0, -8.0])) for d, g in
            zip((1, 2, 3), gains, strict=True)]
    rows.append({"variant": "mirnet_lol", "dataset": "lol", "split": "validation", "distortion": 0, "psnr_gain": 11})
    path = tmp_path / "per_type.png"
    per_type_figure(pd.DataFrame(rows), path)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (320, 800, 3)  # one panel (LoL has a single type), 10x4 inches at 80 dpi
    # matplotlib's first two line colours (C0 blue, C1 orange): one series per variant
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    assert (np.abs(image - blue).sum(axis=2) < 30).sum() > 100
    assert (np.abs(image - orange).sum(axis=2) < 30).sum() > 100
