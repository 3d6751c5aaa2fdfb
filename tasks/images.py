"""Reading and writing the images of batch enhancement without losing what
they carry: EXIF orientation is applied (and reset to 1 in the output), ICC
profile and EXIF are kept, grayscale stays grayscale, alpha passes through
unchanged, 16-bit grayscale stays 16-bit, palette images are converted to RGB
(or RGBA when they have transparency), CMYK is converted to RGB; images above a
pixel limit are refused before they are decoded."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
              ".tiff": "TIFF", ".bmp": "BMP"}


class ImageError(ValueError):
    """An input that cannot be enhanced; the message says why."""


@dataclass
class Decoded:
    """Colour as float32 RGB in [0, 1], and everything needed to write it back."""

    rgb: np.ndarray  # (H, W, 3) float32
    format: str
    mode: str  # the source mode, e.g. "RGB", "RGBA", "L", "I;16", "P", "CMYK"
    bits: int
    grayscale: bool
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


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
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        rgb, bits, grayscale = np.repeat(grey[..., None], 3, axis=2), 16, True
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
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        rgb, bits = array, 8
    exif.pop(0x0112, None)  # Orientation: the pixels are upright now
    return Decoded(rgb=np.ascontiguousarray(rgb), format=fmt, mode=mode, bits=bits, grayscale=grayscale,
                   alpha=alpha, icc_profile=icc, exif=exif.tobytes() if len(exif) else None)


def encode(decoded: Decoded, rgb: np.ndarray, fmt: str | None = None, quality: int = 95) -> bytes:
    """``rgb`` (float [0, 1]) written like ``decoded``: same mode family, bit
    depth, alpha, ICC profile and EXIF, in ``fmt`` (default: the source's)."""
    fmt = (fmt or decoded.format).upper()
    rgb = np.clip(rgb, 0.0, 1.0)
    if decoded.bits == 16 and decoded.grayscale:
        grey = np.rint(rgb.mean(axis=2) * 65535.0).astype(np.uint16)
        image = Image.fromarray(grey)  # uint16 -> mode "I;16"
    else:
        pixels = np.rint(rgb * 255.0).astype(np.uint8)
        image = Image.fromarray(pixels, mode="RGB")
        if decoded.grayscale:
            image = image.convert("L")
        if decoded.alpha is not None:
            image = image.convert("LA" if decoded.grayscale else "RGBA")
            image.putalpha(Image.fromarray(decoded.alpha))
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise ImageError("JPEG cannot hold the alpha channel; choose PNG, WebP or TIFF")
    options: dict = {}
    if decoded.icc_profile:
        options["icc_profile"] = decoded.icc_profile
    if decoded.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = decoded.exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- no-reference measures --------------------------------------------------------

def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def no_reference(rgb: np.ndarray) -> dict[str, float]:
    """Mean luminance, RMS contrast, colourfulness (Hasler and Suesstrunk 2003)
    and sharpness (variance of the Laplacian of the luminance), on [0, 1] data."""
    from scipy import ndimage

    y = luminance(rgb)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    return {
        "mean_luminance": float(y.mean()),
        "rms_contrast": float(y.std()),
        "colourfulness": colourfulness,
        "sharpness": float(ndimage.laplace(y.astype(np.float64)).var()),
    }
