"""The run's report and the outlier flags: flags name what stands out and
nothing else; the report, opened in headless Chromium, loads every picture
with no console error and shows the Parquet's counts; a re-run reports the
whole destination; the page's size does not grow with the bucket."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mirnet_pipeline.tasks.batch.flags import FlagThresholds, flag
from mirnet_pipeline.tasks.batch.images import no_reference
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.rows import COLUMNS
from tests.batch.browser import open_report
from tests.batch.samples import photo, run


def measured_run(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    """Metrics of a run whose images all change alike (brighter, a little
    sharper, a small cast), with a little noise."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({name: [None] * rows for name in COLUMNS})
    table["key"] = [f"img{i:03d}.png" for i in range(rows)]
    table["status"] = "ok"
    table["width"], table["height"] = 640, 480
    table["seconds"] = 0.30 * np.exp(rng.normal(0, 0.1, rows))
    for name, before, change in (("mean_luminance", 0.2, 0.25), ("rms_contrast", 0.1, 0.05),
                                 ("colourfulness", 0.2, 0.05), ("colour_cast", 0.01, 0.01),
                                 ("sharpness", 0.01, 0.002)):
        table[f"before_{name}"] = before * np.exp(rng.normal(0, 0.05, rows))
        table[f"after_{name}"] = table[f"before_{name}"] + change * (1 + rng.normal(0, 0.05, rows))
    return table


def test_flags_name_what_stands_out_and_nothing_else():
    table = measured_run()
    table.loc[5, "after_colour_cast"] += 0.2  # a colour cast appeared
    table.loc[9, "after_mean_luminance"] += 0.4  # far brighter than the others became
    table.loc[12, "after_sharpness"] = table.loc[12, "before_sharpness"] / 4  # blurred
    table.loc[20, "seconds"] *= 10
    table.loc[25, ["after_rms_contrast", "after_colour_cast"]] = [0.5, 0.3]  # two reasons
    table.loc[30, "status"] = "error"
    flags = flag(table)
    expected = {5: "colour_cast", 9: "brightness", 12: "sharpness", 20: "slow", 25: "colour_cast,contrast"}
    assert {i: f for i, f in flags.items() if isinstance(f, str) and f} == expected
    assert pd.isna(flags[30])  # no output, no flags
    assert (flags.drop([*expected, 30]) == "").all()


def test_an_alike_run_flags_nothing_and_the_thresholds_are_the_users():
    table = measured_run()
    assert (flag(table) == "").all()  # the noise is under every floor
    table.loc[9, "after_mean_luminance"] += 0.4
    assert flag(table)[9] == "brightness"
    assert flag(table, FlagThresholds(brightness=0.5))[9] == ""  # a floor above the difference
    # floors of 0 and a low z flag the noise itself: the thresholds decide
    assert (flag(table, FlagThresholds.parse(["z=1", "brightness=0"])) != "").sum() > 5


@pytest.mark.parametrize("items, message", [
    (["loud=1"], "NAME one of z, colour_cast"),
    (["z"], "expected NAME=VALUE"),
    (["z=high"], "'high' is not a number"),
    (["slow=-1"], "slow: must be a number of at least 0"),
    (["z=nan"], "z: must be a number of at least 0"),
])
def test_bad_thresholds_are_named(items, message):
    with pytest.raises(ValueError, match=message):
        FlagThresholds.parse(items)


def test_colour_cast_is_how_far_the_mean_colour_is_from_grey():
    grey = np.full((4, 5, 3), 0.4, np.float32)
    assert no_reference(grey)["colour_cast"] == pytest.approx(0.0, abs=1e-7)
    pixels = [(0.9, 0.2, 0.1), (0.5, 0.5, 0.2), (0.3, 0.1, 0.6), (0.8, 0.7, 0.6)]
    image = np.array(pixels, np.float32).reshape(2, 2, 3)
    # Hasler and Suesstrunk's opponent channels, pixel by pixel
    rg = [r - g for r, g, _ in pixels]
    yb = [(r + g) / 2 - b for r, g, b in pixels]
    expected = ((sum(rg) / 4) ** 2 + (sum(yb) / 4) ** 2) ** 0.5
    assert no_reference(image)["colour_cast"] == pytest.approx(expected, rel=1e-5)


def test_sharpness_is_the_variance_of_the_luminances_laplacian():
    """Against a float64 Laplacian written out with NumPy (edges mirrored, as SciPy's default)."""
    image = np.random.default_rng(3).random((48, 64, 3), dtype=np.float32)
    y = image.astype(np.float64) @ [0.2126, 0.7152, 0.0722]
    padded = np.pad(y, 1, mode="symmetric")
    laplacian = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * y)
    measures = no_reference(image)
    assert measures["sharpness"] == pytest.approx(laplacian.var(), rel=1e-4)
    assert measures["mean_luminance"] == pytest.approx(y.mean(), rel=1e-5)
    assert measures["rms_contrast"] == pytest.approx(y.std(), rel=1e-4)


PHOTOS = 12


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, model_file, prefect_server):
    """Twelve photos and a broken file enhanced with a reference, thresholds
    that flag some of them: (job, destination, summary, metrics)."""
    root = tmp_path_factory.mktemp("report")
    source, destination = root / "in", root / "out"
    source.mkdir()
    for i in range(PHOTOS):
        photo(96 + 8 * (i % 3), 64, seed=i).save(source / f"photo {i:02d}.png")
    (source / "broken.png").write_bytes(b"not an image")
    job = EnhanceJob(source=str(source), destination=str(destination), model=model_file, reference=str(source),
                     flag_thresholds=FlagThresholds.parse(["z=1", "colour_cast=0", "brightness=0", "contrast=0"]))
    summary = run(job)
    return job, destination, summary, pd.read_parquet(destination / "metrics.parquet")


def page_counts(table: pd.DataFrame) -> dict:
    """The counts the page must show, from the Parquet."""
    flags = table["flags"].fillna("")
    counts = {"images": len(table), "ok": int((table.status == "ok").sum()),
              "skipped": int((table.status == "skipped").sum()), "error": int((table.status == "error").sum()),
              "failures": int((table.status == "error").sum()), "flagged": int((flags != "").sum()),
              "flagged-rows": int((flags != "").sum())}
    for name in {f for text in flags for f in text.split(",") if f}:
        counts[f"flag-{name}"] = int(flags.str.split(",").apply(lambda names, n=name: n in names).sum())
    return counts


def test_the_report_opens_in_a_browser_with_every_picture_and_the_parquets_counts(report_run, tmp_path):
    _, destination, summary, table = report_run
    assert summary["report"] == f"{destination}/report.html"
    flagged = int((table["flags"].fillna("") != "").sum())
    assert 0 < flagged < PHOTOS  # the thresholds flag some, not all
    seen = open_report(destination / "report.html", tmp_path / "report.png")
    assert seen["errors"] == [] and seen["broken"] == []
    assert [url for url in seen["requests"] if not url.startswith("data:")] == []  # nothing fetched: self-contained
    assert seen["counts"] == page_counts(table)
    assert seen["counts"]["ok"] == PHOTOS and seen["counts"]["error"] == 1
    # pairs: the flagged ones, the worst by PSNR (8), the unflagged sample; plus the one chart
    assert seen["images"] == 2 * (flagged + min(8, PHOTOS) + (PHOTOS - flagged)) + 1
    assert (tmp_path / "report.png").stat().st_size > 20_000
    page = (destination / "report.html").read_text()
    assert "not an image Pillow can read" in page and "Worst by PSNR" in page


def test_a_rerun_reports_the_whole_destination_with_the_same_flags(report_run, tmp_path):
    job, destination, first, table = report_run
    again = run(job)
    assert (again["ok"], again["skipped"], again["error"]) == (0, PHOTOS, 1)
    rerun = pd.read_parquet(destination / "metrics.parquet")
    pd.testing.assert_series_equal(rerun["flags"], table["flags"])  # skipped rows keep their measures and times
    counts = open_report(destination / "report.html")["counts"]
    assert counts == page_counts(rerun) and counts["skipped"] == PHOTOS and counts["images"] == PHOTOS + 1


def test_the_failed_run_links_its_report_in_a_readable_summary(report_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    _, destination, _, _ = report_run
    with get_client(sync_client=True) as client:
        newest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["enhance-summary"])),
                                       sort=ArtifactSort.UPDATED_DESC, limit=1)[0]
    text = newest.data
    assert f"(file://{destination}/report.html)" in text
    assert "| enhanced | 0 |" in text and f"| skipped (done before) | {PHOTOS} |" in text
    assert "| images per second |" in text and "0.000000" not in text  # rounded


def test_the_page_stays_small_however_many_rows(tmp_path):
    from mirnet_pipeline.tasks.batch.report import FLAGGED, LISTED, SAMPLE, Report

    table = measured_run(rows=20_000, seed=1)
    table["output_key"] = table["key"]
    table.loc[::50, "status"] = "error"
    table.loc[::50, "error"] = "not an image Pillow can read"
    table["flags"] = flag(table, FlagThresholds(z=0.5, colour_cast=0, brightness=0, contrast=0))
    assert (table["flags"].fillna("") != "").sum() > 1000
    job = EnhanceJob(source=str(tmp_path / "in"), destination=str(tmp_path / "out"), model="m.keras")
    page = Report(job, table, {"ok": len(table), "wall_seconds": 100.0, "metrics": "m"}).html()
    assert page.count('class="pair"') == SAMPLE + FLAGGED  # the pictures are gone, each pair says so
    assert page.count("<tr>") < 2 * LISTED + 50
    assert len(page) < 500_000
