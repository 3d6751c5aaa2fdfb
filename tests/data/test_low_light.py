"""The sample's low light (``tasks.data.low_light``): the camera model's parts,
and the statistics of what it makes, within the bounds docs/distortions.md states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirnet_pipeline.tasks.data import low_light, sample


def test_the_tone_curve_and_its_inverse_undo_each_other():
    display = np.linspace(0, 1, 1001)
    assert np.abs(low_light.tone(low_light.untone(display)) - display).max() < 1e-9
    assert low_light.tone(np.array([0.0, 1.0])).tolist() == [0.0, 1.0]
    # the S-curve darkens the shadows against a plain gamma: why a dark picture stays dark
    assert low_light.tone(np.array([0.01]))[0] < 0.01 ** (1 / 2.2)


def test_white_stays_white_through_the_camera_colour_space():
    assert np.allclose(low_light.RGB_TO_CAMERA.sum(axis=1), 1.0)
    grey = np.full((8, 8, 3), 0.5)
    assert np.allclose(grey @ low_light.RGB_TO_CAMERA.T @ low_light.CAMERA_TO_RGB.T, grey)


def test_a_flat_colour_survives_mosaic_white_balance_and_demosaic():
    colour = np.array([0.2, 0.5, 0.3])
    gains = np.array([2.1, 1.0, 1.7])
    raw = low_light.mosaic(np.broadcast_to(colour / gains, (6, 8, 3)))
    assert raw[0, 0] == pytest.approx(0.2 / 2.1) and raw[0, 1] == 0.5 and raw[1, 1] == pytest.approx(0.3 / 1.7)
    balanced = raw * low_light.mosaic(np.broadcast_to(gains, (6, 8, 3)))
    assert np.allclose(low_light.demosaic(balanced), colour)


def test_the_noise_variance_is_read_plus_shot_times_signal():
    """The heteroscedastic model of Brooks et al.: measured variances on flat
    patches lie on the line ``read + shot * signal``."""
    rng = np.random.default_rng(0)
    shot, read = 0.004, 2e-5
    levels = np.array([0.01, 0.05, 0.1, 0.2, 0.4])
    variances = [low_light.noisy(np.full((300, 300), x), shot, read, rng).var() for x in levels]
    slope, intercept = np.polyfit(levels, variances, 1)
    assert slope == pytest.approx(shot, rel=0.05) and intercept == pytest.approx(read, abs=1e-5)


def test_read_noise_follows_shot_noise_on_brooks_fit():
    rng = np.random.default_rng(1)
    logs = [math.log(low_light.read_noise(1e-3, rng)) for _ in range(2000)]
    assert np.mean(logs) == pytest.approx(2.18 * math.log(1e-3) + 1.20, abs=0.03)
    assert np.std(logs) == pytest.approx(0.26, rel=0.1)


@pytest.fixture(scope="module")
def pairs():
    return [sample.lol_pair(i, seed=0) for i in range(1, 25)]


def test_dark_pictures_have_the_brightness_of_real_low_light(pairs):
    """Brightness drawn log-uniform over [0.035, 0.125] (geometric mean 0.066,
    the mean of real LoL low pictures), at most half the photo's; noise and
    clipping move it a little."""
    means = np.array([low.mean() / 255 for low, _ in pairs])
    assert 0.03 <= means.min() and means.max() <= 0.14, means
    assert math.exp(np.log(means).mean()) == pytest.approx(0.066, abs=0.015)
    assert all(low.mean() < 0.55 * high.mean() for low, high in pairs)  # at most half, plus noise


def test_noise_grows_with_brightness_but_slower_than_the_signal():
    """Flat grey bands through the whole camera model with fixed draws: the
    noise of a band grows with its brightness (shot noise), its
    signal-to-noise ratio grows too (not a constant-sigma additive noise)."""
    levels = [30, 60, 90, 120, 160, 200, 240]
    high = np.repeat(np.repeat(np.array(levels, np.uint8), 64)[None, :, None], 64, axis=0)
    high = np.ascontiguousarray(np.broadcast_to(high, (64, 64 * len(levels), 3)))
    low = low_light.darken(high, np.random.default_rng(3)).astype(np.float64) / 255
    bands = [low[8:-8, 64 * i + 8: 64 * (i + 1) - 8] for i in range(len(levels))]
    means = np.array([b.mean() for b in bands])
    noise = np.array([b.std(axis=(0, 1)).mean() for b in bands])
    assert np.all(np.diff(means) > 0) and np.all(np.diff(noise) > 0), (means, noise)
    snr = means / noise
    assert snr[-1] > 1.5 * snr[0], snr


def test_the_dark_twin_is_deterministic_per_seed_and_keeps_the_colours_close(pairs):
    low, high = pairs[0]
    assert np.array_equal(sample.lol_pair(1, seed=0)[0], low)
    brightened = low.astype(np.float64).mean(axis=(0, 1)) / high.astype(np.float64).mean(axis=(0, 1))
    # the channels darken by similar factors: a cast of a few per cent, not a colour change
    assert brightened.max() / brightened.min() < 1.6, brightened
