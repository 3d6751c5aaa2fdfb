"""Classical enhancement methods: the bar a trained model has to clear.

Nobody who enhances photos compares a model with doing nothing; they compare
it with what a one-line classical method gives. Each method here takes one
image (float32, H x W x 3, in [0, 1]) and returns the enhanced image in the
same form. None sees the reference image: every parameter is fixed or is
estimated from the degraded image itself, and ``settings`` states them.

- Low light (LoL): an automatic global gamma, histogram equalisation, CLAHE.
- TID2013 (every type): non-local means and wavelet denoising, a median
  filter (impulse noise), an unsharp mask (blur).

The evaluation (``tasks.training.evaluation``) scores them exactly like a
trained variant, on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEAN_TARGET = 0.4  # the automatic gamma brings the image's mean value here


def auto_gamma(image: np.ndarray, target: float = MEAN_TARGET) -> np.ndarray:
    """``image ** g``, with the one exponent ``g`` that makes the mean of all
    values ``target`` (found by Brent's method on ``log g``). A black image is
    returned as it is."""
    from scipy.optimize import brentq

    values = np.clip(image, 0.0, 1.0).astype(np.float64)
    positive = values[values > 0]
    if positive.size == 0 or np.all(positive == 1.0):
        return np.asarray(image, np.float32)

    def excess(log_g: float) -> float:
        return float(np.power(positive, math.exp(log_g)).sum() / values.size) - target

    low, high = math.log(1 / 64), math.log(64)
    if excess(low) < 0:  # too few non-black values to reach the target
        log_g = low
    elif excess(high) > 0:  # already brighter than the target at g = 64
        log_g = high
    else:
        log_g = brentq(excess, low, high, xtol=1e-6)
    return np.power(values, math.exp(log_g)).astype(np.float32)


def histogram_equalisation(image: np.ndarray) -> np.ndarray:
    """scikit-image's ``equalize_hist`` with 256 bins, one histogram over all
    three channels (so the channels keep their order of brightness)."""
    import warnings

    from skimage.exposure import equalize_hist

    with warnings.catch_warnings():  # "might be a color image": one histogram over all is the method
        warnings.filterwarnings("ignore", "This might be a color image", UserWarning)
        return equalize_hist(np.asarray(image, np.float32), nbins=256).astype(np.float32)


def clahe(image: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """scikit-image's ``equalize_adapthist`` (contrast-limited adaptive
    histogram equalisation) with its defaults: tiles of 1/8 of each side, 256
    bins, clip limit 0.01; on an RGB image it equalises the HSV value channel."""
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(np.asarray(image, np.float32), clip_limit=clip_limit).astype(np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """The noise's standard deviation, estimated from the image alone
    (scikit-image's wavelet-based ``estimate_sigma``, averaged over channels)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(image, channel_axis=2, average_sigmas=True))


def non_local_means(image: np.ndarray) -> np.ndarray:
    """scikit-image's ``denoise_nl_means``, fast mode, 5x5 patches searched
    within 6 pixels, ``h = 0.8 sigma`` with sigma from ``noise_sigma`` (the
    settings of scikit-image's own example)."""
    from skimage.restoration import denoise_nl_means

    image = np.asarray(image, np.float32)
    sigma = noise_sigma(image)
    if sigma == 0:
        return image
    return denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                            channel_axis=2).astype(np.float32)


def wavelet(image: np.ndarray) -> np.ndarray:
    """scikit-image's ``denoise_wavelet``: BayesShrink soft thresholds in
    YCbCr, the noise estimated per channel, sigma rescaled."""
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(np.asarray(image, np.float32), channel_axis=2, convert2ycbcr=True,
                           method="BayesShrink", mode="soft", rescale_sigma=True).astype(np.float32)


def median(image: np.ndarray, size: int = 3) -> np.ndarray:
    """A 3x3 median of each channel (SciPy, edges mirrored): the classical
    cure for impulse noise."""
    from scipy.ndimage import median_filter

    return median_filter(np.asarray(image, np.float32), size=(size, size, 1), mode="reflect")


def unsharp(image: np.ndarray, radius: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """scikit-image's ``unsharp_mask``: ``image + amount * (image - gaussian(image, radius))``
    per channel, clipped to [0, 1]. (``channel_axis=2``: scikit-image 0.26
    returns nearly black images for ``channel_axis=-1``.)"""
    from skimage.filters import unsharp_mask

    return unsharp_mask(np.asarray(image, np.float32), radius=radius, amount=amount,
                        channel_axis=2).astype(np.float32)


LOW_LIGHT = ("lol",)
RESTORATION = ("tid2013",)


@dataclass(frozen=True)
class Method:
    name: str
    datasets: tuple[str, ...]  # the datasets it is scored on
    settings: str  # its parameters, as the comparison states them
    enhance: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """A batch (N x H x W x 3) through the method, clipped to [0, 1]."""
        return np.stack([np.clip(self.enhance(image), 0.0, 1.0) for image in images]).astype(np.float32)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gamma", LOW_LIGHT, f"global gamma bringing the mean value to {MEAN_TARGET}", auto_gamma),
    Method("histeq", LOW_LIGHT, "histogram equalisation, one 256-bin histogram over R, G and B",
           histogram_equalisation),
    Method("clahe", LOW_LIGHT, "CLAHE on HSV value, tiles 1/8 of each side, clip limit 0.01", clahe),
    Method("nlm", RESTORATION, "non-local means, 5x5 patches within 6 px, h = 0.8 sigma (estimated)", non_local_means),
    Method("wavelet", RESTORATION, "wavelet denoising, BayesShrink, soft, in YCbCr", wavelet),
    Method("median", RESTORATION, "3x3 median per channel", median),
    Method("unsharp", RESTORATION, "unsharp mask, radius 2, amount 1", unsharp),
)}


def methods_for(dataset: str) -> list[Method]:
    """The classical methods scored on ``dataset`` (none for an unknown one)."""
    return [m for m in METHODS.values() if dataset in m.datasets]
