"""The 24 TID2013 distortion types at 5 levels, for the offline sample.

Each function maps an RGB uint8 image (H, W, 3) to a distorted one of the same
shape, deterministically for a NumPy ``Generator``. Levels follow TID2013's
ladder: level 1 is mildest, level 5 strongest; for the noise-like types the
strength is set so that the RGB PSNR steps through about 33, 30, 27, 24 and
21 dB, the ladder TID2013 was built on (its real level-5 additive Gaussian noise
image sits at 21.0 dB, noise sigma 22.7 grey levels). ``docs/distortions.md``
gives every type's parameters and how faithful it is to the published
description (Ponomarenko et al., "Image database TID2013", 2015).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile
from scipy import ndimage

# PSNR ladder of TID2013's levels and the matching noise standard deviation
# sigma = 255 / 10^(PSNR / 20): about 5.7, 8.1, 11.4, 16.1, 22.7 grey levels.
PSNR_LADDER = (33.0, 30.0, 27.0, 24.0, 21.0)
SIGMA_LADDER = tuple(255.0 / 10 ** (p / 20.0) for p in PSNR_LADDER)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _f(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


def _scaled_noise(noise: np.ndarray, sigma: float) -> np.ndarray:
    return noise * (sigma / max(float(noise.std()), 1e-8))


RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR).astype(np.float32)


def _encode_decode(image: np.ndarray, fmt: str, **options) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _corrupt_and_decode(encoded: bytes, start: int, count: int, rng, fmt_name: str, shape):
    """Replace ``count`` bytes after ``start`` with random values (never creating
    0xFF marker bytes) and decode what the codec can.

    Positions come from one sequence per image, of which level ``n`` uses the
    first ``count``: a stronger level has every error of a milder one, and more.
    If the codec refuses the stream, the next attempt draws another sequence.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        for _ in range(20):
            positions = rng.integers(start, len(encoded) - 2, size=MAX_ERRORS)
            values = rng.integers(0, 255, size=MAX_ERRORS)  # 0..254
            data = bytearray(encoded)
            for p, v in zip(positions[:count], values[:count], strict=True):
                if data[p] != 0xFF and data[p - 1] != 0xFF:
                    data[p] = int(v)
            try:
                decoded = Image.open(io.BytesIO(bytes(data)))
                decoded.load()
                out = np.asarray(decoded.convert("RGB"))
                if out.shape == shape:
                    return out
            except Exception:  # noqa: BLE001  (a refused stream: try other positions)
                continue
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    raise RuntimeError(f"could not produce a decodable corrupted {fmt_name} stream")


# 1
def additive_gaussian_noise(image, level, rng):
    sigma = SIGMA_LADDER[level - 1]
    return _to_uint8(_f(image) + rng.normal(0, sigma, image.shape))


# 2
def colour_noise(image, level, rng):
    """Noise in Cb and Cr twice as strong as in Y; RGB sigma on the ladder."""
    sigma = SIGMA_LADDER[level - 1]
    luma_sigma = sigma / np.sqrt(1 + 4 * 1.905)  # mean RGB variance = sy^2 (1 + 1.905 * 4)
    ycc = _f(image) @ RGB_TO_YCBCR.T
    noise = rng.normal(0, 1, image.shape).astype(np.float32) * np.array(
        [luma_sigma, 2 * luma_sigma, 2 * luma_sigma], np.float32
    )
    return _to_uint8((ycc + noise) @ YCBCR_TO_RGB.T)


# 3
def spatially_correlated_noise(image, level, rng):
    noise = rng.normal(0, 1, image.shape).astype(np.float32)
    noise = ndimage.uniform_filter(noise, size=(3, 3, 1))
    return _to_uint8(_f(image) + _scaled_noise(noise, SIGMA_LADDER[level - 1]))


def _local_activity(image):
    grey = _f(image).mean(axis=2)
    mean = ndimage.uniform_filter(grey, 7)
    var = np.maximum(ndimage.uniform_filter(grey * grey, 7) - mean * mean, 0)
    return np.sqrt(var)[..., None]


# 4
def masked_noise(image, level, rng):
    """Noise whose amplitude follows local activity: hidden in texture."""
    weight = _local_activity(image) + 2.0
    noise = rng.normal(0, 1, image.shape).astype(np.float32) * weight
    return _to_uint8(_f(image) + _scaled_noise(noise, SIGMA_LADDER[level - 1]))


# 5
def high_frequency_noise(image, level, rng):
    noise = rng.normal(0, 1, image.shape).astype(np.float32)
    noise = noise - ndimage.gaussian_filter(noise, sigma=(1.0, 1.0, 0))
    return _to_uint8(_f(image) + _scaled_noise(noise, SIGMA_LADDER[level - 1]))


# 6
IMPULSE_PROBABILITY = (0.002, 0.004, 0.008, 0.016, 0.032)


def impulse_noise(image, level, rng):
    """Salt and pepper: a fraction of pixels set to black or white."""
    out = image.copy()
    hit = rng.random(image.shape[:2]) < IMPULSE_PROBABILITY[level - 1]
    values = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)
    out[hit] = values[:, None]
    return out


# 7
def quantization_noise(image, level, rng):
    """Uniform re-quantisation; step = sqrt(12) sigma gives the ladder's error."""
    step = np.sqrt(12.0) * SIGMA_LADDER[level - 1]
    offset = rng.uniform(0, step)
    return _to_uint8(np.floor((_f(image) + offset) / step) * step + step / 2 - offset)


# 8
BLUR_SIGMA = (0.6, 1.0, 1.5, 2.2, 3.2)


def gaussian_blur(image, level, rng):
    return _to_uint8(ndimage.gaussian_filter(_f(image), sigma=(BLUR_SIGMA[level - 1],) * 2 + (0,)))


# 9
DENOISE_NOISE = (8.0, 12.0, 17.0, 24.0, 34.0)


def image_denoising(image, level, rng):
    """Residue of denoising: noisy image smoothed by an edge-blind Gaussian filter."""
    sigma = DENOISE_NOISE[level - 1]
    noisy = _f(image) + rng.normal(0, sigma, image.shape)
    return _to_uint8(ndimage.gaussian_filter(noisy, sigma=(0.45 + sigma / 40.0,) * 2 + (0,)))


# 10
JPEG_QUALITY = (40, 22, 12, 6, 3)


def jpeg(image, level, rng):
    return _encode_decode(image, "JPEG", quality=JPEG_QUALITY[level - 1])


# 11
J2K_RATIO = (30, 60, 120, 240, 480)


def jpeg2000(image, level, rng):
    return _encode_decode(
        image, "JPEG2000", quality_mode="rates", quality_layers=[J2K_RATIO[level - 1]], irreversible=True
    )


def _scan_start(encoded: bytes) -> int:
    """Offset just after JPEG's start-of-scan header."""
    sos = encoded.find(b"\xff\xda")
    return sos + 2 + int.from_bytes(encoded[sos + 2 : sos + 4], "big")


# 12
JPEG_ERRORS = (1, 2, 3, 5, 8)
J2K_ERRORS = (2, 4, 8, 16, 32)
MAX_ERRORS = 32


def jpeg_transmission_errors(image, level, rng):
    """JPEG (quality 75, a restart marker every MCU row, as error-resilient
    streams use) with corrupted bytes in its entropy-coded data: each error
    garbles the rest of its row of blocks."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=75, restart_marker_rows=1)
    encoded = buffer.getvalue()
    return _corrupt_and_decode(
        encoded, _scan_start(encoded), JPEG_ERRORS[level - 1], rng, "JPEG", image.shape
    )


# 13
def jpeg2000_transmission_errors(image, level, rng):
    """JPEG2000 (ratio 8) with corrupted bytes in its code-blocks."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format="JPEG2000", quality_mode="rates", quality_layers=[8], irreversible=True
    )
    encoded = buffer.getvalue()
    start = encoded.find(b"\xff\x93") + 2  # start of data
    return _corrupt_and_decode(
        encoded, start, J2K_ERRORS[level - 1], rng, "JPEG2000", image.shape
    )


# 14
PATTERN_PATCHES = (20, 40, 80, 160, 320)


def non_eccentricity_pattern_noise(image, level, rng):
    """Small 8x8 patches replaced by patches from a few pixels away: local
    structure shifts without new colours appearing."""
    out = image.copy()
    height, width = image.shape[:2]
    count, most = PATTERN_PATCHES[level - 1], PATTERN_PATCHES[-1]
    ys, xs = rng.integers(8, height - 16, most), rng.integers(8, width - 16, most)
    shifts = rng.integers(-6, 7, size=(most, 2))
    for y, x, (dy, dx) in zip(ys[:count], xs[:count], shifts[:count], strict=True):
        out[y : y + 8, x : x + 8] = image[y + dy : y + dy + 8, x + dx : x + dx + 8]
    return out


# 15
BLOCK_COUNT = (2, 4, 8, 16, 32)


def local_block_distortions(image, level, rng):
    """32x32 blocks replaced by a flat colour near the block's mean."""
    out = image.copy()
    height, width = image.shape[:2]
    count, most = BLOCK_COUNT[level - 1], BLOCK_COUNT[-1]
    ys, xs = rng.integers(0, height - 32, most), rng.integers(0, width - 32, most)
    offsets = rng.normal(0, 25, (most, 3))
    for y, x, offset in zip(ys[:count], xs[:count], offsets[:count], strict=True):
        mean = image[y : y + 32, x : x + 32].reshape(-1, 3).mean(axis=0)
        out[y : y + 32, x : x + 32] = _to_uint8(mean + offset)
    return out


# 16
def mean_shift(image, level, rng):
    """Intensity shift, brighter on odd levels and darker on even ones."""
    shift = SIGMA_LADDER[level - 1] * (1 if level % 2 else -1)
    return _to_uint8(_f(image) + shift)


# 17
CONTRAST_FACTOR = (1.12, 0.84, 1.30, 0.66, 1.55)


def contrast_change(image, level, rng):
    """Contrast stretched (odd levels) or reduced (even levels) about the mean."""
    x = _f(image)
    mean = x.mean()
    return _to_uint8(mean + (x - mean) * CONTRAST_FACTOR[level - 1])


# 18
SATURATION_FACTOR = (0.8, 1.35, 0.5, 1.75, 0.05)


def saturation_change(image, level, rng):
    """Chroma scaled in YCbCr: less (odd levels) or more (even levels) colourful."""
    ycc = _f(image) @ RGB_TO_YCBCR.T
    ycc[..., 1:] *= SATURATION_FACTOR[level - 1]
    return _to_uint8(ycc @ YCBCR_TO_RGB.T)


# 19
def multiplicative_gaussian_noise(image, level, rng):
    """x (1 + n): noise proportional to intensity; RGB sigma on the ladder."""
    x = _f(image)
    relative = SIGMA_LADDER[level - 1] / max(float(np.sqrt((x * x).mean())), 1.0)
    return _to_uint8(x * (1.0 + rng.normal(0, relative, image.shape)))


# 20
COMFORT_QUALITY = (30, 18, 10, 6, 4)


def comfort_noise(image, level, rng):
    """Strong JPEG compression with low-amplitude noise added to hide its blocks,
    as codecs' comfort noise does."""
    compressed = _f(_encode_decode(image, "JPEG", quality=COMFORT_QUALITY[level - 1]))
    noise = ndimage.uniform_filter(rng.normal(0, 1, image.shape[:2]).astype(np.float32), 2)
    return _to_uint8(compressed + _scaled_noise(noise, 1.5 + level)[..., None])


# 21
def lossy_compression_of_noisy_images(image, level, rng):
    """Gaussian noise, then JPEG compression of the noisy image."""
    noisy = _to_uint8(_f(image) + rng.normal(0, SIGMA_LADDER[level - 1], image.shape))
    return _encode_decode(noisy, "JPEG", quality=(60, 45, 35, 25, 15)[level - 1])


# 22
QUANT_COLOURS = (128, 64, 32, 16, 8)


def colour_quantization_with_dither(image, level, rng):
    pil = Image.fromarray(image).quantize(
        colors=QUANT_COLOURS[level - 1], method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    )
    return np.asarray(pil.convert("RGB"))


# 23
ABERRATION_SHIFT = (1, 2, 3, 4, 6)


def chromatic_aberrations(image, level, rng):
    """Red and blue planes shifted in opposite directions and slightly blurred."""
    shift = ABERRATION_SHIFT[level - 1]
    x = _f(image)
    out = x.copy()
    out[..., 0] = ndimage.shift(ndimage.gaussian_filter(x[..., 0], 0.3 * shift), (0, shift), mode="nearest")
    out[..., 2] = ndimage.shift(ndimage.gaussian_filter(x[..., 2], 0.3 * shift), (0, -shift), mode="nearest")
    return _to_uint8(out)


# 24
SAMPLING_FRACTION = (0.5, 0.3, 0.18, 0.1, 0.05)


def sparse_sampling_and_reconstruction(image, level, rng):
    """Keep a random fraction of pixels, reconstruct the rest by normalised
    Gaussian interpolation of the kept samples."""
    fraction = SAMPLING_FRACTION[level - 1]
    mask = (rng.random(image.shape[:2]) < fraction).astype(np.float32)
    sigma = 0.6 / np.sqrt(fraction)
    weight = ndimage.gaussian_filter(mask, sigma) + 1e-6
    out = np.empty(image.shape, np.float32)
    for c in range(3):
        out[..., c] = ndimage.gaussian_filter(_f(image[..., c]) * mask, sigma) / weight
    kept = mask.astype(bool)
    out[kept] = image[kept]
    return _to_uint8(out)


@dataclass(frozen=True)
class DistortionType:
    number: int
    name: str
    apply: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


DISTORTIONS: tuple[DistortionType, ...] = tuple(
    DistortionType(i + 1, name, fn)
    for i, (name, fn) in enumerate(
        [
            ("Additive Gaussian noise", additive_gaussian_noise),
            ("Additive noise in colour components", colour_noise),
            ("Spatially correlated noise", spatially_correlated_noise),
            ("Masked noise", masked_noise),
            ("High frequency noise", high_frequency_noise),
            ("Impulse noise", impulse_noise),
            ("Quantization noise", quantization_noise),
            ("Gaussian blur", gaussian_blur),
            ("Image denoising", image_denoising),
            ("JPEG compression", jpeg),
            ("JPEG2000 compression", jpeg2000),
            ("JPEG transmission errors", jpeg_transmission_errors),
            ("JPEG2000 transmission errors", jpeg2000_transmission_errors),
            ("Non eccentricity pattern noise", non_eccentricity_pattern_noise),
            ("Local block-wise distortions", local_block_distortions),
            ("Mean shift", mean_shift),
            ("Contrast change", contrast_change),
            ("Change of colour saturation", saturation_change),
            ("Multiplicative Gaussian noise", multiplicative_gaussian_noise),
            ("Comfort noise", comfort_noise),
            ("Lossy compression of noisy images", lossy_compression_of_noisy_images),
            ("Colour quantization with dither", colour_quantization_with_dither),
            ("Chromatic aberrations", chromatic_aberrations),
            ("Sparse sampling and reconstruction", sparse_sampling_and_reconstruction),
        ]
    )
)
DISTORTION_NAMES = {d.number: d.name for d in DISTORTIONS}
LEVELS = (1, 2, 3, 4, 5)


def distort(image: np.ndarray, distortion: int, level: int, seed: int) -> np.ndarray:
    """Apply TID2013 type ``distortion`` (1-24) at ``level`` (1-5), reproducibly.

    The random stream depends on the seed and the type but not on the level, so
    the five levels of one image share their noise pattern or error positions
    and differ only in strength, as TID2013's do.
    """
    if distortion not in DISTORTION_NAMES:
        raise ValueError(f"distortion type must be 1-24, got {distortion}")
    if level not in LEVELS:
        raise ValueError(f"level must be 1-5, got {level}")
    rng = np.random.default_rng([seed, distortion])
    return DISTORTIONS[distortion - 1].apply(image, level, rng)


def psnr_table(reference: np.ndarray, seed: int = 0) -> str:
    """Markdown table: RGB PSNR (dB) of every type and level against ``reference``."""
    from skimage.metrics import peak_signal_noise_ratio

    lines = ["| # | type | level 1 | level 2 | level 3 | level 4 | level 5 |", "|---:|---|---:|---:|---:|---:|---:|"]
    for d in DISTORTIONS:
        scores = [peak_signal_noise_ratio(reference, distort(reference, d.number, level, seed), data_range=255)
                  for level in LEVELS]
        lines.append(f"| {d.number} | {d.name} | " + " | ".join(f"{s:.1f}" for s in scores) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else "tests/testdata/tid2013/I01.BMP"
    with Image.open(path) as im:
        print(psnr_table(np.asarray(im.convert("RGB"))))
