"""The classical methods, each against an independent computation or, where
the method is an estimator (non-local means, wavelets), against noise of a
known level on a known image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio

from mirnet_pipeline.tasks.training import classical


def photo(height=24, width=32, seed=0, grain=0.05) -> np.ndarray:
    """A smooth colour image with an edge and uniform grain of +-``grain``, in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.4 * (x > 0.5)], axis=2)
    return (image + np.random.default_rng(seed).uniform(-grain, grain, image.shape)).clip(0, 1).astype(np.float32)


def test_the_gamma_brings_the_mean_to_its_target_with_one_exponent():
    dark = photo() * 0.2
    out = classical.auto_gamma(dark)
    assert out.mean() == pytest.approx(classical.MEAN_TARGET, abs=1e-5)
    exponents = np.log(out) / np.log(dark)  # the same power for every value
    assert exponents.max() - exponents.min() < 1e-4
    # a flat image: the exponent is log(target) / log(value), in closed form
    flat = np.full((4, 4, 3), 0.1, np.float32)
    assert classical.auto_gamma(flat) == pytest.approx(np.full_like(flat, 0.1 ** (math.log(0.4) / math.log(0.1))),
                                                       abs=1e-5)
    black = np.zeros((4, 4, 3), np.float32)
    assert np.array_equal(classical.auto_gamma(black), black)


def test_histogram_equalisation_is_the_cdf_of_one_histogram_over_all_channels():
    image = photo() * 0.3
    counts, edges = np.histogram(image, bins=256, range=(image.min(), image.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    cdf = np.cumsum(counts) / counts.sum()
    expected = np.interp(image, centres, cdf)
    assert np.abs(classical.histogram_equalisation(image) - expected).max() < 1e-5


def test_clahe_equalises_the_value_channel_only():
    from skimage.exposure import equalize_adapthist

    image = photo(64, 96) * 0.4
    hsv = rgb_to_hsv(image)  # matplotlib's conversion, not scikit-image's
    hsv[..., 2] = equalize_adapthist(hsv[..., 2], clip_limit=0.01)
    out = classical.clahe(image)
    assert np.abs(out - hsv_to_rgb(hsv)).max() < 1e-4
    assert out.mean() > image.mean() + 0.1


def test_the_median_is_the_median_of_each_mirrored_3x3_window():
    image = photo(12, 16)
    image[5, 7] = [1.0, 0.0, 1.0]  # an impulse
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    expected = np.median(windows.reshape(*image.shape, 9), axis=-1)
    out = classical.median(image)
    assert np.array_equal(out, expected.astype(np.float32))
    assert np.abs(out[5, 7] - image[5, 7]).max() > 0.3  # the impulse is gone


def test_the_unsharp_mask_adds_the_difference_from_a_gaussian_blur():
    image = photo()
    blurred = np.stack([gaussian_filter(image[..., c].astype(np.float64), sigma=2.0, mode="reflect", truncate=4.0)
                        for c in range(3)], axis=2)
    expected = np.clip(image + (image - blurred), 0, 1)
    assert np.abs(classical.unsharp(image) - expected).max() < 1e-5


@pytest.mark.parametrize("method", ["nlm", "wavelet"])
def test_the_denoisers_estimate_the_noise_and_remove_most_of_it(method):
    clean = photo(96, 128, grain=0)
    sigma = 0.08
    noisy = (clean + np.random.default_rng(1).normal(0, sigma, clean.shape)).astype(np.float32)
    assert classical.noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)  # the estimate it works from
    before = peak_signal_noise_ratio(clean, noisy, data_range=1)
    after = peak_signal_noise_ratio(clean, classical.METHODS[method]([noisy])[0], data_range=1)
    assert after > before + 5, (before, after)
    # a clean image passes nearly unchanged
    assert peak_signal_noise_ratio(clean, classical.METHODS[method]([clean])[0], data_range=1) > 30


def test_every_method_keeps_shape_and_range_and_never_sees_a_reference():
    import inspect

    images = np.stack([photo(), photo(seed=2) * 0.1])
    for name, method in classical.METHODS.items():
        out = method(images)
        assert out.shape == images.shape and out.dtype == np.float32, name
        assert 0.0 <= out.min() and out.max() <= 1.0, name
        assert list(inspect.signature(method.enhance).parameters)[0] == "image", name
        assert method.settings and method.datasets, name
    assert {m.name for m in classical.methods_for("lol")} == {"gamma", "histeq", "clahe"}
    assert {m.name for m in classical.methods_for("tid2013")} == {"nlm", "wavelet", "median", "unsharp"}
