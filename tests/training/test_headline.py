"""The evaluation's headline (DVC's metrics: a row per variant) and its per-type plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from mirnet_pipeline.tasks.training.comparison import per_type_figure
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


CLASSICAL = {
    "gamma": {"lol": {"validation": {"images": 64, "input_psnr": 9.64, "output_psnr": 14.7, "psnr_gain": 5.06,
                                     "output_bias_r": 0.03, "output_bias_g": -0.02, "output_bias_b": 0.01}}},
    "clahe": {"lol": {"validation": {"images": 64, "input_psnr": 9.64, "output_psnr": 16.2, "psnr_gain": 6.56,
                                     "output_bias_r": 0.08, "output_bias_g": 0.07, "output_bias_b": 0.06}}},
    "nlm": {"tid2013": {"validation": {"images": 24, "input_psnr": 23.03, "output_psnr": 24.8, "psnr_gain": 1.77,
                                       "output_bias_r": 0.0, "output_bias_g": 0.008, "output_bias_b": 0.0,
                                       "per_type": {"1": {"psnr_gain": 8.74}}}}},
}


def test_one_small_file_per_variant_with_the_figures_people_compare():
    files = headline_files(METRICS)
    assert files == {
        "mirnet": {"tid": {"gain": 0.4612, "noise": 2.02, "cast": 0.006}},
        "mirnet_lol": {"lol": {"gain": 11.6, "cast": 0.017}},  # one type: no noise figure
    }
    assert headline_files(METRICS, "test") == {"mirnet_lol": {"lol": {"gain": 11.0}}}


def test_each_variant_is_measured_against_the_best_classical_method_of_its_dataset():
    files = headline_files({**METRICS, **CLASSICAL})
    # the lead: output PSNR minus the best classical method's (CLAHE's 16.2 on LoL, not gamma's 14.7)
    assert files["mirnet_lol"]["lol"] == {"gain": 11.6, "lead": 5.04, "cast": 0.017}
    assert files["mirnet"]["tid"] == {"gain": 0.4612, "lead": -1.3088, "noise": 2.02, "cast": 0.006}
    assert files["nlm"]["tid"] == {"gain": 1.77, "noise": 8.74, "cast": 0.008}  # a classical row has no lead
    assert list(files) == ["mirnet", "mirnet_lol", "gamma", "clahe", "nlm"]  # variants first


def test_the_demo_summary_has_a_lead_column_and_the_classical_rows():
    from mirnet_pipeline.flows.demo import summary_text

    text = summary_text({**METRICS, **CLASSICAL}, 600)
    rows = {line.split()[0] + " " + line.split()[1]: line for line in text.splitlines()
            if line.startswith("  ") and len(line.split()) > 5}
    assert "+5.04 clahe" in rows["mirnet_lol lol"] and "-1.31 nlm" in rows["mirnet tid2013"]
    assert text.index("classical methods") < text.index("  gamma ") < text.index("  clahe ")
    assert "+8.74" in rows["nlm tid2013"] and "clahe" not in rows["gamma lol"]  # no lead of its own


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
