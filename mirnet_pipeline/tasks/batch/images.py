"""Reading and writing the images of batch enhancement without losing what
they carry: EXIF orientation is applied (and reset to 1 in the output), ICC
profile and EXIF are kept, grayscale stays grayscale, alpha passes through
unchanged, 16-bit stays 16-bit, palette images are converted to RGB (or RGBA
when they have transparency), CMYK is converted to RGB; images above a pixel
limit are refused before they are decoded, and so are images with more than
one frame (multi-page TIFF, animated PNG/WebP; a camera's MPO JPEG is read as
its primary image) and 32-bit integer or floating-point samples, whose range
no format we write can hold.

Metadata is carried over selectively: the ICC profile (not a CMYK one), and
from EXIF the descriptive tags of the main directory (camera, date, author,
copyright, resolution) with the Exif and GPS directories, never the structural
tags of the source (a TIFF's strip offsets, bits per sample, photometric...),
which would describe another file than the one written.

Pillow reads and writes everything except 16-bit images with more than one
channel (RGB, RGBA, grey + alpha), which it would truncate to 8 bits: their
pixels go through imagecodecs (PNG, libpng) and tifffile (TIFF), while Pillow
still reads their header, ICC profile and EXIF; pypng puts the ICC profile and
EXIF chunks back into such PNGs. Formats that cannot hold 16 bits (JPEG, WebP,
BMP) get 8-bit output.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
              ".tiff": "TIFF", ".bmp": "BMP"}


DEEP_FORMATS = ("PNG", "TIFF")  # formats written with 16 bits per channel
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An input that cannot be enhanced; the message says why."""


@dataclass
class Decoded:
    """The colour as read (``pixels``; ``rgb`` gives float32 in [0, 1]), and
    everything needed to write it back."""

    pixels: np.ndarray  # (H, W, 3) uint8 or uint16 as read (a quarter or half of float32's memory)
    format: str
    mode: str  # the source mode, e.g. "RGB", "RGBA", "L", "I;16", "P", "CMYK", "RGB;16"
    bits: int
    grayscale: bool
    alpha: np.ndarray | None = None  # uint8, or uint16 for 16-bit sources
    icc_profile: bytes | None = None
    exif: bytes | None = None
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def rgb(self) -> np.ndarray:
        """The colour as float32 in [0, 1] (a new array on each call)."""
        scale = 255.0 if self.pixels.dtype == np.uint8 else 65535.0
        return np.divide(self.pixels, scale, dtype=np.float32)


HEADER_BYTES = 1 << 18  # enough for the header of every format we read, bar JPEGs with huge APP segments
SIGNATURES = (PNG_SIGNATURE, b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF87a", b"GIF89a")


def max_file_bytes(max_pixels: int) -> int:
    """The largest file an image under ``max_pixels`` can plausibly be: 16-bit
    RGBA without compression, plus 64 MiB of metadata."""
    return max_pixels * 8 + (64 << 20)


def check_header(head: bytes, size: int, max_pixels: int) -> None:
    """Refuse a file from its first bytes (``head``) and its ``size``, before
    it is read whole: empty, far too large for the pixel limit, no image
    signature, or an image header announcing more than ``max_pixels``."""
    if size == 0 or not head:
        raise ImageError("empty file (0 bytes)")
    if size > max_file_bytes(max_pixels):
        raise ImageError(f"{size:,} bytes is more than an image of {max_pixels:,} pixels can take; not read")
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    try:
        image = Image.open(io.BytesIO(head))
    except (UnidentifiedImageError, OSError, ValueError):
        # a header longer than ``head`` (a JPEG's large EXIF) is fine when the file starts like an image
        if webp or head.startswith(SIGNATURES):
            return
        raise ImageError("not an image Pillow can read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}")


def decode(data: bytes, name: str, max_pixels: int) -> Decoded:
    """Decode ``data`` (the file ``name``), refusing more than ``max_pixels``."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}")
    fmt = image.format or "PNG"
    if fmt == "MPO":  # JPEG with extra pictures (previews, depth): the first is the photo
        fmt = "JPEG"
    elif getattr(image, "n_frames", 1) > 1:
        raise ImageError(f"{image.n_frames} frames (multi-page or animated {fmt}); only single-frame images "
                         "are enhanced: split the frames into files first")
    if image.mode == "F" or (image.mode == "I" and fmt != "PNG"):
        kind = "floating-point" if image.mode == "F" else "integer"
        raise ImageError(f"32-bit {kind} samples ({fmt}) are not supported: their range is not defined; "
                         "convert to 8 or 16 bits first")
    if _deep_colour(image, data):
        return _decode_deep(image, data, fmt)
    try:
        image.load()
        icc = image.info.get("icc_profile")
        exif = image.getexif()
        image = ImageOps.exif_transpose(image)  # pixels upright, orientation tag removed
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None
    mode = image.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image).astype(np.uint16)
        pixels, bits, grayscale = np.repeat(grey[..., None], 3, axis=2), 16, True
    else:
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode == "CMYK":
            image = image.convert("RGB")
            icc = None  # a CMYK profile does not describe the RGB output
        elif mode == "LA":
            alpha = np.asarray(image.getchannel("A"))
            image = image.convert("L")
        elif mode == "1":
            image = image.convert("L")
        if image.mode == "RGBA":
            alpha = np.asarray(image.getchannel("A"))
            image = image.convert("RGB")
        grayscale = image.mode == "L"
        pixels, bits = np.asarray(image.convert("RGB")), 8
    return Decoded(pixels=np.ascontiguousarray(pixels), format=fmt, mode=mode, bits=bits, grayscale=grayscale,
                   alpha=alpha, icc_profile=icc, exif=portable_exif(exif))


# EXIF tags of the main directory that describe the picture, not the file's layout
DESCRIPTIVE = (0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8298)
SUB_DIRECTORIES = (0x8769, 0x8825)  # Exif, GPS


def portable_exif(exif: Image.Exif) -> bytes | None:
    """The source's EXIF as it may go into any output: the descriptive tags
    (description, make, model, resolution, software, date, artist, copyright)
    and the Exif and GPS directories; no orientation (the pixels are upright)
    and no structural TIFF tags. None when nothing is left."""
    kept = Image.Exif()
    for tag in DESCRIPTIVE:
        if tag in exif:
            kept[tag] = exif[tag]
    for tag in SUB_DIRECTORIES:
        try:
            directory = exif.get_ifd(tag)
        except Exception:  # noqa: BLE001  (a broken sub-directory is dropped, not the image)
            directory = {}
        if directory:
            kept.get_ifd(tag).update(directory)
    return kept.tobytes() if len(kept) or any(kept.get_ifd(t) for t in SUB_DIRECTORIES) else None


def encode(decoded: Decoded, rgb: np.ndarray, fmt: str | None = None, quality: int = 95,
           png_level: int = 6) -> bytes:
    """``rgb`` (float [0, 1]) written like ``decoded``: same mode family, bit
    depth (where ``fmt`` can hold it), alpha, ICC profile and EXIF, in ``fmt``
    (default: the source's); ``png_level``: zlib's level for a PNG."""
    fmt = (fmt or decoded.format).upper()
    rgb = np.clip(rgb, 0.0, 1.0)
    deep = decoded.bits == 16 and fmt in DEEP_FORMATS
    if deep and (decoded.alpha is not None or not decoded.grayscale):
        return _encode_deep(decoded, rgb, fmt, png_level)
    if deep:
        grey = np.rint(rgb.mean(axis=2) * 65535.0).astype(np.uint16)
        image = Image.fromarray(grey)  # uint16 -> mode "I;16"
    else:
        rgb *= 255.0  # in place: rgb is clip's copy, and a 24 MP image makes every copy count
        pixels = np.rint(rgb, out=rgb).astype(np.uint8)
        image = Image.fromarray(pixels, mode="RGB")
        if decoded.grayscale:
            image = image.convert("L")
        if decoded.alpha is not None:
            alpha = decoded.alpha
            if alpha.dtype == np.uint16:
                alpha = np.rint(alpha / 257.0).astype(np.uint8)
            image = image.convert("LA" if decoded.grayscale else "RGBA")
            image.putalpha(Image.fromarray(alpha))
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise ImageError("JPEG cannot hold the alpha channel; choose PNG, WebP or TIFF")
    options: dict = {}
    if decoded.icc_profile:
        options["icc_profile"] = decoded.icc_profile
    if decoded.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = decoded.exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "PNG":
        options["compress_level"] = png_level
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- 16-bit images with more than one channel ----------------------------------

def _deep_colour(image: Image.Image, data: bytes) -> bool:
    """Whether ``image`` has 16 bits per sample and more than one sample per pixel."""
    if image.format == "PNG":
        # IHDR is the first chunk: bit depth at byte 24, colour type at 25 (2 RGB, 4 grey+alpha, 6 RGBA)
        return data[:8] == PNG_SIGNATURE and data[24] == 16 and data[25] in (2, 4, 6)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (1,))  # BitsPerSample
        bits = bits if isinstance(bits, tuple) else (bits,)
        return image.tag_v2.get(277, 1) > 1 and max(bits) == 16  # SamplesPerPixel
    return False


def _deep_pixels(data: bytes, fmt: str) -> np.ndarray:
    """(H, W, C) uint16 samples of a 16-bit PNG or TIFF (first page)."""
    if fmt == "PNG":
        import imagecodecs

        pixels = imagecodecs.png_decode(data)
    else:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages[0]
            photometric = page.photometric.name
            if photometric not in ("RGB", "MINISBLACK"):
                raise ImageError(f"16-bit TIFF with photometric {photometric} is not supported")
            pixels = page.asarray()
            if page.planarconfig.name == "SEPARATE":
                pixels = np.moveaxis(pixels, 0, -1)
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (2, 3, 4):
        raise ImageError(f"unexpected 16-bit layout {pixels.shape} {pixels.dtype}")
    return pixels


# EXIF orientation -> numpy operations that make the pixels upright (as ImageOps.exif_transpose)
ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, ...) turned as EXIF ``orientation`` (1-8) says."""
    return np.ascontiguousarray(ORIENT.get(orientation, lambda a: a)(pixels))


def _decode_deep(image: Image.Image, data: bytes, fmt: str) -> Decoded:
    try:
        pixels = _deep_pixels(data, fmt)
        icc = image.info.get("icc_profile")
        exif = image.getexif()
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001  (libpng, libtiff and Pillow raise their own types)
        raise ImageError(f"cannot decode: {exc}") from None
    pixels = upright(pixels, exif.get(0x0112, 1))
    channels = pixels.shape[2]
    grayscale = channels == 2
    alpha = pixels[..., -1].copy() if channels in (2, 4) else None
    colour = pixels[..., :1] if grayscale else pixels[..., :3]
    if grayscale:
        colour = np.repeat(colour, 3, axis=2)
    mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]
    return Decoded(pixels=np.ascontiguousarray(colour), format=fmt, mode=mode, bits=16, grayscale=grayscale,
                   alpha=alpha, icc_profile=icc, exif=portable_exif(exif))


def _encode_deep(decoded: Decoded, rgb: np.ndarray, fmt: str, png_level: int = 6) -> bytes:
    """16-bit PNG or TIFF with alpha and ICC profile (and EXIF for PNG)."""
    colour = rgb.mean(axis=2, keepdims=True) if decoded.grayscale else rgb
    pixels = np.rint(colour * 65535.0).astype(np.uint16)
    if decoded.alpha is not None:
        alpha = decoded.alpha if decoded.alpha.dtype == np.uint16 else decoded.alpha.astype(np.uint16) * 257
        pixels = np.concatenate([pixels, alpha[..., None]], axis=2)
    if fmt == "TIFF":
        import tifffile

        buffer = io.BytesIO()
        tifffile.imwrite(buffer, pixels, photometric="minisblack" if decoded.grayscale else "rgb",
                         extrasamples=("unassalpha",) if decoded.alpha is not None else None,
                         iccprofile=decoded.icc_profile, compression="zlib")
        return buffer.getvalue()
    import imagecodecs
    import png

    encoded = imagecodecs.png_encode(pixels if pixels.shape[2] > 1 else pixels[..., 0], level=png_level)
    extra = []
    if decoded.icc_profile:
        extra.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(decoded.icc_profile)))
    if decoded.exif:
        extra.append((b"eXIf", decoded.exif.removeprefix(b"Exif\x00\x00")))
    if not extra:
        return encoded
    chunks = list(png.Reader(bytes=encoded).chunks())
    buffer = io.BytesIO()
    png.write_chunks(buffer, chunks[:1] + extra + chunks[1:])  # right after IHDR, before the image data
    return buffer.getvalue()


# --- no-reference measures --------------------------------------------------------

def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def no_reference(rgb: np.ndarray) -> dict[str, float]:
    """Mean luminance, RMS contrast, colourfulness (Hasler and Suesstrunk 2003),
    colour cast (how far the mean colour is from grey: the length of the mean
    of Hasler and Suesstrunk's opponent channels, 0 for a grey-balanced image)
    and sharpness (variance of the Laplacian of the luminance), on [0, 1] data."""
    from scipy import ndimage

    y = luminance(rgb)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    cast = float(np.hypot(rg.mean(), yb.mean()))
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * cast)
    return {
        "mean_luminance": float(y.mean()),
        "rms_contrast": float(y.std()),
        "colourfulness": colourfulness,
        "colour_cast": cast,
        # the Laplacian in the image's own precision, its variance summed in float64
        "sharpness": float(ndimage.laplace(y).var(dtype=np.float64)),
    }
