"""Whole-image inference for images of any size.

Architectures that down-sample need heights and widths divisible by their size
multiple (4 for MIRNet and MIRNet-v2). ``infer`` reflect-pads the bottom and
right edges up to that multiple, runs the model and crops the padding off again,
so a 601x337 photo comes back 601x337.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mirnet_pipeline.model.registry import size_multiple as registered_multiple


def padding_for(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Rows and columns to add so that both sides become multiples of ``multiple``."""
    return (-height) % multiple, (-width) % multiple


def reflect_pad(images: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad a batch (N, H, W, C) at the bottom and right to ``multiple``.

    Sides shorter than the padding are mirrored repeatedly (a 1-pixel side is
    repeated), so every size works."""
    pad_h, pad_w = padding_for(images.shape[1], images.shape[2], multiple)
    if pad_h == 0 and pad_w == 0:
        return images
    widths = ((0, 0), (0, pad_h), (0, pad_w), (0, 0))
    mode = "reflect" if min(images.shape[1:3]) > 1 else "symmetric"
    return np.pad(images, widths, mode=mode)


def infer(model, images, *, multiple: int | None = None, batch_size: int = 1, clip: bool = True):
    """Run ``model`` on one image (H, W, C) or a batch (N, H, W, C) of floats in [0, 1].

    ``multiple`` defaults to the registered architecture's size multiple. The
    output has the input's shape and dtype float32, clipped to [0, 1] unless
    ``clip`` is false.
    """
    array = np.asarray(images, dtype=np.float32)
    single = array.ndim == 3
    if single:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) images, got shape {array.shape}")
    if multiple is None:
        multiple = registered_multiple(model)
    height, width = array.shape[1:3]
    padded = reflect_pad(array, multiple)
    outputs = []
    for start in range(0, len(padded), batch_size):
        batch = padded[start : start + batch_size]
        # predict_on_batch runs the backend's compiled predict step: far faster
        # than calling the model eagerly layer by layer
        outputs.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
    result = np.concatenate(outputs, axis=0)[:, :height, :width, :]
    if clip:
        result = np.clip(result, 0.0, 1.0)
    return result[0] if single else result


class AnySize(keras.Model):
    """``infer`` inside the graph, for serving: a batch of float32 images of any
    height and width in, the enhanced batch of the same shape out, clipped to
    [0, 1]. The input is reflect-padded at the bottom and right to the size
    multiple and the padding cropped off again. The model the registry exports
    (``tasks.training.tracking``), so that a SavedModel serves any photo."""

    def __init__(self, inner: keras.Model, multiple: int | None = None, **kwargs):
        super().__init__(name=f"{inner.name}_any_size", **kwargs)
        self.inner = inner
        self.multiple = multiple or registered_multiple(inner)
        self.built = inner.built  # nothing of its own to build: exportable as soon as ``inner`` is

    def call(self, images):
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        # (m - h % m) % m, not (-h) % m: ONNX (tf2onnx) turns floor modulo of a
        # negative number into a truncating one, which would pad by -1
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="reflect")
        return ops.clip(self.inner(padded)[:, :height, :width, :], 0.0, 1.0)


def _blend_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """Weights along one side of a tile. Where a neighbouring tile overlaps (the
    ``2 * overlap`` pixels at that end), the outer ``overlap // 2`` pixels get
    weight 0 (they saw the tile border, not the image) and the rest ramps
    linearly to 1; the two ramps of neighbours sum to 1. Ends at the image
    border keep weight 1."""
    window = np.ones(size, np.float32)
    zone, margin = 2 * overlap, overlap // 2
    if overlap > 0:
        ramp = np.zeros(zone, np.float32)
        ramp[margin : zone - margin] = (np.arange(zone - 2 * margin, dtype=np.float32) + 0.5) / (zone - 2 * margin)
        ramp[zone - margin :] = 1.0
        if ramp_start:
            window[:zone] = np.minimum(window[:zone], ramp)
        if ramp_end:
            window[-zone:] = np.minimum(window[-zone:], ramp[::-1])
    return window


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def infer_tiled(model, image, *, tile: int = 512, overlap: int = 32, multiple: int | None = None,
                batch_size: int = 4, clip: bool = True) -> np.ndarray:
    """Run ``model`` on one image (H, W, C) of any size in overlapping tiles.

    Tiles of ``tile`` x ``tile`` pixels (clipped to the image) overlap by at
    least ``2 * overlap`` pixels; in each overlap the pixels nearest a tile's
    border are dropped and the rest blended with linear ramps, so no seam shows
    (a model that looks less than ``overlap // 2`` pixels around gives exactly
    the whole-image result), and memory stays bounded by the tile size whatever
    the image size. Tiles are run ``batch_size`` at a time. An image
    no larger than one tile is processed whole (same result as ``infer``).
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"expected one (H, W, C) image, got shape {array.shape}")
    height, width, channels = array.shape
    if height <= tile and width <= tile:
        return infer(model, array, multiple=multiple, clip=clip)
    if overlap * 2 >= tile:
        raise ValueError(f"overlap ({overlap}) must be less than half the tile ({tile})")
    th, tw = min(tile, height), min(tile, width)
    step_h, step_w = max(1, th - 2 * overlap), max(1, tw - 2 * overlap)
    boxes = [(y, x) for y in _starts(height, th, step_h) for x in _starts(width, tw, step_w)]
    total = np.zeros((height, width, channels), np.float32)
    norm = np.zeros((height, width, 1), np.float32)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        tiles = np.stack([array[y : y + th, x : x + tw] for y, x in chunk])
        outputs = infer(model, tiles, multiple=multiple, batch_size=len(chunk), clip=False)
        for (y, x), out in zip(chunk, outputs, strict=True):
            weights = (_blend_window(th, overlap, y > 0, y + th < height)[:, None]
                       * _blend_window(tw, overlap, x > 0, x + tw < width)[None, :])[..., None]
            total[y : y + th, x : x + tw] += out * weights
            norm[y : y + th, x : x + tw] += weights
    total /= norm  # in place: for a large photo every full-size copy counts
    return np.clip(total, 0.0, 1.0, out=total) if clip else total
