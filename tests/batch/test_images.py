"""Image I/O of batch enhancement: what goes in comes out with the same depth,
channels and metadata. 16-bit colour is checked with decoders other than the
one that wrote it (Pillow never sees those pixels: it would truncate them)."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from mirnet_pipeline.tasks.batch.images import ORIENT, ImageError, decode, encode, upright

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LIMIT = 10**8


def deep(channels: int, width=37, height=23, seed=0) -> np.ndarray:
    """16-bit samples that use the low byte (so truncation to 8 bits shows)."""
    return np.random.default_rng(seed).integers(0, 65536, (height, width, channels), dtype=np.uint16)


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera maker"  # Make
    return exif


def png16(pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """A 16-bit PNG written by libpng; ICC and EXIF chunks through our encoder's path."""
    from mirnet_pipeline.tasks.batch.images import Decoded, _encode_deep

    grayscale = pixels.shape[2] == 2
    colour = pixels[..., :1] if grayscale else pixels[..., :3]
    rgb = np.repeat(colour, 3, axis=2) if grayscale else colour
    alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
    decoded = Decoded(pixels=rgb, format="PNG", mode="", bits=16, grayscale=grayscale,
                      alpha=alpha, icc_profile=icc, exif=exif)
    return _encode_deep(decoded, decoded.rgb, "PNG")


@pytest.mark.parametrize("channels, mode", [(3, "RGB;16"), (4, "RGBA;16"), (2, "LA;16")])
def test_16_bit_png_round_trip_is_exact(channels, mode):
    pixels = deep(channels)
    data = png16(pixels, icc=SRGB, exif=exif_with(1).tobytes())
    np.testing.assert_array_equal(imagecodecs.png_decode(data), pixels)  # the writer itself is exact
    decoded = decode(data, "deep.png", LIMIT)
    assert (decoded.mode, decoded.bits, decoded.grayscale) == (mode, 16, channels == 2)
    assert decoded.icc_profile == SRGB
    assert decoded.exif and b"Camera maker" in decoded.exif  # EXIF survived reading
    out = encode(decoded, decoded.rgb)  # identity "enhancement"
    width, height, rows, info = png.Reader(bytes=out).asDirect()  # pure-Python decoder, not libpng
    assert info["bitdepth"] == 16 and info["planes"] == channels
    np.testing.assert_array_equal(np.array([list(r) for r in rows]).reshape(height, width, channels), pixels)
    reread = Image.open(io.BytesIO(out))
    assert reread.info["icc_profile"] == SRGB
    assert reread.getexif()[0x010F] == "Camera maker"


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_tiff_round_trip_keeps_depth_alpha_and_icc(channels):
    pixels = deep(channels, seed=1)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb", iccprofile=SRGB,
                     extrasamples=("unassalpha",) if channels == 4 else None)
    decoded = decode(buffer.getvalue(), "deep.tif", LIMIT)
    assert decoded.bits == 16 and decoded.icc_profile == SRGB
    out = encode(decoded, decoded.rgb)
    with tifffile.TiffFile(io.BytesIO(out)) as tiff:
        np.testing.assert_array_equal(tiff.pages[0].asarray(), pixels)
        assert tiff.pages[0].iccprofile == SRGB


def test_16_bit_colour_values_are_not_truncated_to_8_bits():
    pixels = np.full((4, 5, 3), 257 * 100 + 77, np.uint16)  # 8-bit truncation would lose the 77
    decoded = decode(png16(pixels), "x.png", LIMIT)
    np.testing.assert_allclose(decoded.rgb, (257 * 100 + 77) / 65535, atol=1e-7)


def test_16_bit_to_a_format_without_16_bits_gives_8_bit():
    pixels = deep(4)
    decoded = decode(png16(pixels), "x.png", LIMIT)
    webp = Image.open(io.BytesIO(encode(decoded, decoded.rgb, "WEBP", quality=100)))
    assert webp.mode == "RGBA"
    alpha8 = np.rint(pixels[..., 3] / 257).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(webp.getchannel("A")), alpha8)


@pytest.mark.parametrize("orientation", sorted(ORIENT))
def test_orientation_of_16_bit_images_matches_pillow(orientation):
    """Our numpy orientation against Pillow's exif_transpose on the same 8-bit picture,
    then through a 16-bit PNG carrying that orientation."""
    pixels8 = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels8)
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(upright(pixels8, orientation), expected)

    pixels16 = pixels8.astype(np.uint16) * 257
    decoded = decode(png16(pixels16, exif=exif_with(orientation).tobytes()), "r.png", LIMIT)
    np.testing.assert_array_equal(np.rint(decoded.rgb * 255).astype(np.uint8), expected)
    out = Image.open(io.BytesIO(encode(decoded, decoded.rgb)))
    assert out.getexif().get(0x0112) is None  # upright now: no orientation left


def test_broken_16_bit_png_is_a_clear_error():
    data = png16(deep(3, 200, 200))
    with pytest.raises(ImageError, match="cannot decode"):
        decode(data[: len(data) // 2], "cut.png", LIMIT)


def test_8_bit_and_16_bit_grey_keep_their_depth():
    grey16 = np.linspace(0, 65535, 30 * 20).reshape(20, 30).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(grey16).save(buffer, format="PNG")
    decoded = decode(buffer.getvalue(), "g.png", LIMIT)
    assert decoded.bits == 16 and decoded.grayscale
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode(decoded, decoded.rgb)))), grey16)

    rgb8 = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb8).save(buffer, format="PNG")
    decoded = decode(buffer.getvalue(), "c.png", LIMIT)
    assert decoded.bits == 8 and decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode(decoded, decoded.rgb)))), rgb8)


@pytest.mark.parametrize("bits", [8, 16])
def test_the_png_level_changes_the_bytes_never_the_pixels(bits):
    """Level 0 stores, 1 is the fastest that compresses, 9 squeezes hardest: every one decodes to the same
    pixels."""
    rng = np.random.default_rng(5)  # a gradient with some noise: compressible, but not trivially
    ramp = np.linspace(0, 1, 60)[None, :, None] * np.linspace(0.5, 1, 40)[:, None, None] * [1.0, 0.8, 0.6]
    noisy = np.clip(ramp + rng.normal(0, 0.01, ramp.shape), 0, 1)
    if bits == 8:
        data = save_png(Image.fromarray(np.rint(noisy * 255).astype(np.uint8)))
    else:
        data = png16(np.rint(noisy * 65535).astype(np.uint16))
    decoded = decode(data, "x.png", LIMIT)
    written = {level: encode(decoded, decoded.rgb, "PNG", png_level=level) for level in (0, 1, 9)}
    assert len(written[0]) > len(written[9])  # the level is honoured
    pixels = [imagecodecs.png_decode(data) for data in written.values()]
    assert all(np.array_equal(p, pixels[0]) for p in pixels)
    assert np.array_equal(pixels[0], imagecodecs.png_decode(data))  # and they are the source's


def save_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_png_level_outside_zlibs_range_is_named_and_the_option_reaches_the_job():
    from mirnet_pipeline.flows.commands.enhance import parse
    from mirnet_pipeline.tasks.batch.job import PNG_LEVEL, EnhanceJob, JobInputError

    with pytest.raises(JobInputError, match="png_level: expected 0"):
        EnhanceJob(source="in", destination="out", model="m.keras", png_level=10)
    assert parse(["in", "out", "--model", "m.keras"])[0].png_level == PNG_LEVEL == 6  # zlib's own default
    assert parse(["in", "out", "--model", "m.keras", "--png-level", "1"])[0].png_level == 1
