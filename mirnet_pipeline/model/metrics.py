"""Image-quality metrics for images in [0, 1] (data range 1.0), per image.

PSNR = 10 log10(1 / MSE) with the MSE over all pixels and channels of one image.
(The Keras MIRNet example calls ``tf.image.psnr(..., max_val=255)`` on [0, 1]
images, which adds 20 log10(255) = 48.13 dB to every value; this module never
does: a peak of 1.0 is the peak of the data.)

SSIM follows Wang et al. (2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population (not sample) covariances, valid region only, computed per
channel and averaged. This equals ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``
and ``tf.image.ssim``; the tests check the first.

Every function takes batches (N, H, W, C) and returns one value per image; the
``*_metric`` wrappers average over the batch for ``model.compile(metrics=...)``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from mirnet_pipeline.model.registry import PACKAGE

DATA_RANGE = 1.0
MIN_MSE = 1e-10  # identical images score 100 dB instead of infinity
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def mse_per_image(y_true, y_pred):
    return ops.mean(ops.square(ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")), axis=(1, 2, 3))


def psnr(y_true, y_pred, data_range=DATA_RANGE):
    """PSNR in dB per image; ``data_range`` is the peak value (1.0 for [0, 1])."""
    mse = ops.maximum(mse_per_image(y_true, y_pred), MIN_MSE)
    return 10.0 * ops.log(data_range**2 / mse) / math.log(10.0)


def mae(y_true, y_pred):
    """Mean absolute error per image."""
    return ops.mean(ops.abs(ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")), axis=(1, 2, 3))


def _gaussian_taps(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    radius = (size - 1) / 2.0
    taps = np.exp(-0.5 * ((np.arange(size) - radius) / sigma) ** 2)
    return (taps / taps.sum()).astype("float32")


def _gaussian_filter(x, channels):
    """Separable 11x11 Gaussian, valid padding, each channel separately."""
    taps = _gaussian_taps()
    vertical = ops.convert_to_tensor(np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, channels, 1)))
    horizontal = ops.convert_to_tensor(np.tile(taps.reshape(1, -1, 1, 1), (1, 1, channels, 1)))
    x = ops.depthwise_conv(x, vertical, padding="valid")
    return ops.depthwise_conv(x, horizontal, padding="valid")


def ssim(y_true, y_pred, data_range=DATA_RANGE):
    """Mean SSIM per image (sides must be at least 11 pixels)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    channels = y_true.shape[-1]
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x = _gaussian_filter(y_true, channels)
    mu_y = _gaussian_filter(y_pred, channels)
    var_x = _gaussian_filter(y_true * y_true, channels) - mu_x * mu_x
    var_y = _gaussian_filter(y_pred * y_pred, channels) - mu_y * mu_y
    cov = _gaussian_filter(y_true * y_pred, channels) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return ops.mean(numerator / denominator, axis=(1, 2, 3))


def reference_scores(y_true, y_pred) -> list[dict[str, float | None]]:
    """PSNR, SSIM and MAE of each image of a batch against its reference, as
    plain floats; SSIM is None for images with a side under its 11-pixel window."""
    count = len(y_true)
    small = min(np.shape(y_true)[1:3]) < SSIM_WINDOW
    values = {"psnr": np.asarray(psnr(y_true, y_pred)),
              "ssim": [None] * count if small else np.asarray(ssim(y_true, y_pred)),
              "mae": np.asarray(mae(y_true, y_pred))}
    return [{k: None if v[i] is None else float(v[i]) for k, v in values.items()} for i in range(count)]


@keras.saving.register_keras_serializable(package=PACKAGE)
def psnr_metric(y_true, y_pred):
    return ops.mean(psnr(y_true, y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
def ssim_metric(y_true, y_pred):
    return ops.mean(ssim(y_true, y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
def mae_metric(y_true, y_pred):
    return ops.mean(mae(y_true, y_pred))


psnr_metric.__name__ = "psnr"
ssim_metric.__name__ = "ssim"
mae_metric.__name__ = "mae"
