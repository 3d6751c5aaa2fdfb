"""Low light made the way a camera makes it: the offline sample's dark twin of
a photograph (``tasks.data.sample``), for LoL-style pairs.

A photograph is taken back to what the sensor saw (unprocessing, after
Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019),
exposed for a fraction of the light, given the sensor's noise, and processed
forward again like a camera would:

1. sRGB -> linear light: the inverse of the tone curve below;
2. linear sRGB -> the camera's colour space (``RGB_TO_CAMERA``), then the
   white-balance gains undone (red 1.9-2.4, blue 1.5-1.9; Brooks et al.);
3. the exposure: every photosite scaled by one factor, chosen so that the
   finished dark picture has the mean brightness drawn for it
   (``BRIGHTNESS``, log-uniform around 0.066, the mean of real LoL low
   pictures, and at most half the photograph's own);
4. a Bayer mosaic (RGGB): one colour per photosite;
5. noise on each photosite, Gaussian with variance ``read + shot * signal``:
   shot (Poisson) noise that grows with the signal and signal-independent
   read noise, at the levels Brooks et al. fitted to real cameras (log shot
   uniform over [1e-4, 1.2e-2], log read linear in log shot);
6. the camera's white balance, slightly off (each gain within a few per cent:
   the cast of a real auto white balance in the dark), bilinear demosaicing
   (which correlates the noise between neighbours and colours, as in real
   pictures), back to sRGB through the inverse colour matrix;
7. the tone curve (gamma 1/2.2, then Brooks et al.'s smoothstep S-curve) and
   8-bit quantisation.

``docs/distortions.md`` gives each choice and its source; the tests check the
brightness and noise-against-brightness statistics of what comes out.
"""

from __future__ import annotations

import math

import numpy as np

# sRGB (D65) -> CIE XYZ, IEC 61966-2-1
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
# XYZ -> camera RGB of a real sensor: the Adobe DNG colour matrix of the Canon
# EOS 5D Mark II (dcraw's adobe_coeff table, values / 10000)
XYZ_TO_CAMERA = np.array([[0.4716, 0.0603, -0.0830],
                          [-0.7798, 1.5474, 0.2480],
                          [-0.1496, 0.1937, 0.6651]])


def _rgb_to_camera() -> np.ndarray:
    matrix = XYZ_TO_CAMERA @ SRGB_TO_XYZ
    return matrix / matrix.sum(axis=1, keepdims=True)  # white stays white before white balance


RGB_TO_CAMERA = _rgb_to_camera()
CAMERA_TO_RGB = np.linalg.inv(RGB_TO_CAMERA)

RED_GAIN = (1.9, 2.4)  # white-balance gains, Brooks et al.
BLUE_GAIN = (1.5, 1.9)
GAIN_ERROR = 0.03  # standard deviation of the camera's own white-balance error, per channel
SHOT = (1e-4, 1.2e-2)  # shot-noise variance per unit of signal, log-uniform (Brooks et al.)
READ_SLOPE, READ_INTERCEPT, READ_SPREAD = 2.18, 1.20, 0.26  # ln read = 2.18 ln shot + 1.20 + N(0, 0.26)
BRIGHTNESS = (0.035, 0.125)  # mean of the finished dark picture, log-uniform: geometric mean 0.066
MAX_RATIO = 0.5  # and at most half the photo's own mean brightness
GAMMA = 2.2


def tone(linear: np.ndarray) -> np.ndarray:
    """Linear light -> display values: gamma 1/2.2, then the smoothstep S-curve."""
    x = np.clip(linear, 0.0, 1.0) ** (1 / GAMMA)
    return 3 * x**2 - 2 * x**3


def untone(display: np.ndarray) -> np.ndarray:
    """The inverse of ``tone``."""
    y = np.clip(display, 0.0, 1.0)
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)
    return x**GAMMA


def mosaic(image: np.ndarray) -> np.ndarray:
    """H x W x 3 -> H x W: the RGGB Bayer pattern's colour at each photosite."""
    raw = image[..., 1].copy()
    raw[0::2, 0::2] = image[0::2, 0::2, 0]
    raw[1::2, 1::2] = image[1::2, 1::2, 2]
    return raw


def demosaic(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of an RGGB mosaic (edges mirrored)."""
    from scipy.ndimage import convolve

    height, width = raw.shape
    masks = np.zeros((3, height, width))
    masks[0, 0::2, 0::2] = 1
    masks[2, 1::2, 1::2] = 1
    masks[1] = 1 - masks[0] - masks[2]
    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    planes = []
    for mask in masks:  # the mean of the channel's own photosites nearby, weighted
        planes.append(convolve(raw * mask, kernel, mode="mirror") / convolve(mask, kernel, mode="mirror"))
    return np.stack(planes, axis=2)


def read_noise(shot: float, rng: np.random.Generator) -> float:
    """The read-noise variance that goes with a shot-noise level (Brooks et al.'s fit)."""
    return math.exp(READ_SLOPE * math.log(shot) + READ_INTERCEPT + rng.normal(0.0, READ_SPREAD))


def noisy(raw: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Each photosite plus Gaussian noise of variance ``read + shot * signal``, clipped to [0, 1]."""
    sigma = np.sqrt(read + shot * np.clip(raw, 0.0, None))
    return np.clip(raw + rng.normal(0.0, 1.0, raw.shape) * sigma, 0.0, 1.0)


def develop(raw: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """What the camera does with a mosaic: white balance, demosaic, colour
    matrix, tone curve; display values in [0, 1]."""
    balanced = raw * mosaic(np.broadcast_to(gains, (*raw.shape, 3)))
    return tone(demosaic(np.clip(balanced, 0.0, 1.0)) @ CAMERA_TO_RGB.T)


def exposure_for(raw: np.ndarray, gains: np.ndarray, brightness: float) -> float:
    """The factor on the sensor's signal that makes the developed picture's
    mean ``brightness`` (bisection in log space, noise left out, on every
    fourth 2x2 Bayer quad in each direction, so the pattern stays whole)."""
    sub = raw
    if min(raw.shape) >= 64:
        height, width = raw.shape[0] // 2 * 2, raw.shape[1] // 2 * 2
        quads = raw[:height, :width].reshape(height // 2, 2, width // 2, 2)[::4, :, ::4, :]
        sub = quads.reshape(quads.shape[0] * 2, quads.shape[2] * 2)
    low, high = math.log(1e-4), 0.0
    for _ in range(30):
        middle = (low + high) / 2
        if develop(sub * math.exp(middle), gains).mean() < brightness:
            low = middle
        else:
            high = middle
    return math.exp((low + high) / 2)


def darken(high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark, noisy exposure of the uint8 sRGB photograph ``high`` (H x W x 3,
    even sides), as uint8: the module's steps 1-7, with the random draws
    (gains, brightness, noise levels, noise) taken from ``rng``."""
    gains = np.array([rng.uniform(*RED_GAIN), 1.0, rng.uniform(*BLUE_GAIN)])
    camera = np.clip(untone(high.astype(np.float64) / 255.0) @ RGB_TO_CAMERA.T, 0.0, 1.0)
    raw = mosaic(camera / gains)
    brightness = math.exp(rng.uniform(math.log(BRIGHTNESS[0]), math.log(BRIGHTNESS[1])))
    brightness = min(brightness, MAX_RATIO * float(high.mean()) / 255.0)  # a dark photo still darkens
    exposed = raw * exposure_for(raw, gains, brightness)
    shot = math.exp(rng.uniform(math.log(SHOT[0]), math.log(SHOT[1])))
    sensed = noisy(exposed, shot, read_noise(shot, rng), rng)
    balance = gains * (1.0 + rng.normal(0.0, GAIN_ERROR, 3))
    return np.clip(np.rint(develop(sensed, balance) * 255.0), 0, 255).astype(np.uint8)
