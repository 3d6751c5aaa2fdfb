"""Metrics and losses against independent implementations (scikit-image, NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mirnet_pipeline.model import charbonnier, get_loss, mae, psnr, reference_scores, ssim


def to_unit(image_uint8):
    return image_uint8.astype(np.float32) / 255.0


def skimage_ssim(a, b):
    return structural_similarity(
        a.astype(np.float64), b.astype(np.float64),
        data_range=1.0, channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )


def test_psnr_on_the_real_tid2013_pair_matches_skimage(tid2013_pair):
    reference, distorted = tid2013_pair
    ours = float(psnr(to_unit(reference)[None], to_unit(distorted)[None])[0])
    expected = peak_signal_noise_ratio(reference, distorted, data_range=255)
    assert ours == pytest.approx(expected, abs=1e-4)
    assert ours == pytest.approx(21.02, abs=0.01)  # the value TID2013's noise level 5 sits at


def test_ssim_on_the_real_tid2013_pair_matches_skimage(tid2013_pair):
    reference, distorted = tid2013_pair
    ours = float(ssim(to_unit(reference)[None], to_unit(distorted)[None])[0])
    expected = skimage_ssim(to_unit(reference), to_unit(distorted))
    assert ours == pytest.approx(expected, abs=1e-4)
    assert 0.2 < ours < 0.6  # strong noise: far from identical, far from unrelated


def test_metrics_match_skimage_on_random_batches():
    rng = np.random.default_rng(0)
    clean = rng.random((3, 48, 40, 3), dtype=np.float32)
    noisy = np.clip(clean + rng.normal(0, [[[[0.02]]], [[[0.1]]], [[[0.3]]]], clean.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    ours_psnr = np.asarray(psnr(clean, noisy))
    ours_ssim = np.asarray(ssim(clean, noisy))
    ours_mae = np.asarray(mae(clean, noisy))
    for i in range(3):
        assert ours_psnr[i] == pytest.approx(peak_signal_noise_ratio(clean[i], noisy[i], data_range=1.0), abs=1e-4)
        assert ours_ssim[i] == pytest.approx(skimage_ssim(clean[i], noisy[i]), abs=1e-4)
        assert ours_mae[i] == pytest.approx(np.abs(clean[i] - noisy[i]).mean(), abs=1e-6)
    assert ours_psnr[0] > ours_psnr[1] > ours_psnr[2]


def test_psnr_uses_the_unit_data_range_not_255():
    """The Keras example's max_val=255 on [0, 1] images adds 20 log10(255) dB."""
    rng = np.random.default_rng(1)
    a = rng.random((1, 16, 16, 3), dtype=np.float32)
    b = np.clip(a + 0.05, 0, 1)
    inflated = float(psnr(a, b, data_range=255.0)[0]) - float(psnr(a, b)[0])
    assert inflated == pytest.approx(20 * math.log10(255), abs=1e-3)
    assert inflated == pytest.approx(48.13, abs=0.01)


def test_psnr_of_identical_images_is_capped_not_infinite():
    a = np.full((1, 16, 16, 3), 0.5, np.float32)
    assert float(psnr(a, a)[0]) == pytest.approx(100.0)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0)


def test_losses_against_numpy():
    rng = np.random.default_rng(2)
    a = rng.random((2, 8, 8, 3), dtype=np.float32)
    b = rng.random((2, 8, 8, 3), dtype=np.float32)
    assert float(get_loss("mse")(a, b)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)
    assert float(get_loss("mae")(a, b)) == pytest.approx(np.mean(np.abs(a - b)), rel=1e-5)
    expected = np.mean(np.sqrt((a - b) ** 2 + 1e-6))
    assert float(charbonnier(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(charbonnier(a, a)) == pytest.approx(1e-3, rel=1e-4)
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        get_loss("l3")


def test_reference_scores_match_skimage_and_leave_ssim_out_below_its_window():
    rng = np.random.default_rng(5)
    target = rng.random((2, 32, 40, 3)).astype(np.float32)
    image = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    scores = reference_scores(target, image)
    for i, s in enumerate(scores):
        assert s["psnr"] == pytest.approx(peak_signal_noise_ratio(target[i], image[i], data_range=1), abs=1e-4)
        assert s["ssim"] == pytest.approx(structural_similarity(
            target[i], image[i], channel_axis=-1, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1), abs=1e-4)
        assert s["mae"] == pytest.approx(float(np.abs(target[i] - image[i]).mean()), abs=1e-6)
    tiny = reference_scores(target[:, :10, :10], image[:, :10, :10])
    assert [s["ssim"] for s in tiny] == [None, None] and all(s["psnr"] > 20 for s in tiny)
