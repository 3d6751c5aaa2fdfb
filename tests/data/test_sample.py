"""The offline sample: TID2013 and LoL layouts, research splits, calibrated
distortions, determinism."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from mirnet_pipeline.tasks.config import Tid2013Settings
from mirnet_pipeline.tasks.data import lol, sample, tid2013
from mirnet_pipeline.tasks.data.distortions import DISTORTIONS, distort


@pytest.fixture(scope="module")
def full_sample(tmp_path_factory):
    """The whole offline sample (2.1 GB), removed after this module's tests."""
    root = tmp_path_factory.mktemp("sample")
    sample.write_tid2013_sample(root / "tid2013", seed=0)
    sample.write_lol_sample(root / "lol", seed=0)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_full_sample_has_the_tid2013_layout_and_the_research_split(full_sample):
    root = tid2013.validate(full_sample / "tid2013")
    names = {p.name for p in (root / "reference_images").iterdir()}
    assert {"I01.BMP", "I24.BMP", "i25.bmp"} <= names and len(names) == 25
    assert len(list((root / "distorted_images").iterdir())) == 25 * 24 * 5
    settings = Tid2013Settings()
    frame = tid2013.manifest(root, settings.split_references(), settings.levels, settings.type_numbers())
    assert frame.split.value_counts().to_dict() == {"train": 360, "validation": 120, "test": 120}
    assert set(frame[frame.split == "test"].image_id) == {f"i{n}" for n in range(16, 21)}
    assert set(frame.level) == {5} and sorted(set(frame.distortion)) == list(range(1, 25))
    assert frame.mos.isna().all()  # the sample has no subjective scores
    row = frame[(frame.image_id == "i25") & (frame.distortion == 3)].iloc[0]
    assert row.input_path.endswith("distorted_images/i25_03_5.bmp")
    assert row.target_path.endswith("reference_images/i25.bmp")
    assert row.distortion_name == "Spatially correlated noise"
    levels = tid2013.manifest(root, {"train": [1]}, [1, 2], [1, 8])
    assert len(levels) == 4


def test_full_sample_has_the_lol_layout_and_the_research_split(full_sample):
    root = lol.validate(full_sample / "lol")
    frame = lol.manifest(root, train_count=300)
    assert frame.split.value_counts().to_dict() == {"train": 300, "validation": 185, "test": 15}
    train = frame[frame.split == "train"].image_id.tolist()
    assert train[:3] == ["our485/1", "our485/2", "our485/3"] and train[-1] == "our485/300"
    with Image.open(frame.input_path[0]) as low, Image.open(frame.target_path[0]) as high:
        assert low.size == high.size == (600, 400)
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    assert low.mean() < 0.5 * high.mean()  # dark
    assert frame.input_path[0].endswith("our485/low/1.png")


def test_mos_scores_are_read_when_known(tmp_path):
    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\n4.5 I01_01_2.BMP\nnan i01_01_3.bmp\n")
    scores = tid2013.read_mos(tmp_path / "mos_with_names.txt")
    assert scores["i01_01_1.bmp"] == pytest.approx(5.51429)
    assert scores["i01_01_2.bmp"] == 4.5
    assert np.isnan(scores["i01_01_3.bmp"])


def test_gaussian_noise_level_5_is_calibrated_against_the_real_tid2013_image(tid2013_pair):
    reference, real = tid2013_pair
    ours = distort(reference, 1, 5, seed=0)
    real_psnr = peak_signal_noise_ratio(reference, real, data_range=255)
    ours_psnr = peak_signal_noise_ratio(reference, ours, data_range=255)
    assert real_psnr == pytest.approx(21.02, abs=0.01)
    assert ours_psnr == pytest.approx(real_psnr, abs=0.2)
    real_sigma = (real.astype(float) - reference).std()
    ours_sigma = (ours.astype(float) - reference).std()
    assert real_sigma == pytest.approx(22.7, abs=0.3)
    assert ours_sigma == pytest.approx(real_sigma, abs=0.5)


@pytest.mark.parametrize("distortion", [d.number for d in DISTORTIONS])
def test_every_type_gets_stronger_level_by_level(tid2013_pair, distortion):
    reference = tid2013_pair[0]
    scores = [peak_signal_noise_ratio(reference, distort(reference, distortion, level, seed=0), data_range=255)
              for level in range(1, 6)]
    assert all(a >= b - 0.05 for a, b in itertools.pairwise(scores)), scores
    assert scores[0] > scores[-1] + 2.0, scores  # level 5 clearly worse than level 1
    assert scores[-1] < 32.0, scores  # and clearly visible


def test_distortions_are_deterministic_for_a_seed(tid2013_pair):
    reference = tid2013_pair[0]
    for d in (1, 12, 13, 24):
        np.testing.assert_array_equal(distort(reference, d, 4, seed=3), distort(reference, d, 4, seed=3))
        assert not np.array_equal(distort(reference, d, 4, seed=3), distort(reference, d, 4, seed=4))


def test_lol_pairs_are_deterministic_and_noisy():
    low_a, high_a = sample.lol_pair(7, seed=1)
    low_b, high_b = sample.lol_pair(7, seed=1)
    np.testing.assert_array_equal(low_a, low_b)
    np.testing.assert_array_equal(high_a, high_b)
    assert not np.array_equal(sample.lol_pair(7, seed=2)[0], low_a)
    # shot and read noise: the dark image is not a smooth function of the bright one
    smooth = np.asarray(Image.fromarray(low_a).filter(__import__("PIL.ImageFilter").ImageFilter.BoxBlur(1)))
    assert np.abs(low_a.astype(int) - smooth).mean() > 0.5


def test_unknown_distortion_and_level_are_refused(tid2013_pair):
    with pytest.raises(ValueError, match="distortion type must be 1-24, got 25"):
        distort(tid2013_pair[0], 25, 1, seed=0)
    with pytest.raises(ValueError, match="level must be 1-5, got 0"):
        distort(tid2013_pair[0], 1, 0, seed=0)


def test_missing_tid2013_files_are_listed(tmp_path, full_sample):
    import shutil

    root = tmp_path / "tid"
    shutil.copytree(full_sample / "tid2013", root)
    (root / "distorted_images" / "i07_13_2.bmp").unlink()
    (root / "reference_images" / "i25.bmp").unlink()
    (root / "distorted_images" / "i03_03_3.bmp").write_bytes(b"")
    with pytest.raises(tid2013.LayoutError) as info:
        tid2013.validate(root)
    assert "missing i25.bmp" in str(info.value) and "missing i07_13_2.bmp" in str(info.value)
    (root / "distorted_images" / "i07_13_2.bmp").write_bytes(b"")
    shutil.copy(full_sample / "tid2013" / "reference_images" / "i25.bmp", root / "reference_images" / "I25.BMP")
    with pytest.raises(tid2013.LayoutError, match=r"i03_03_3.bmp: empty file"):
        tid2013.validate(root)
