"""Whole-image inference for images of any size.

Architectures that down-sample need heights and widths divisible by their size
multiple (4 for MIRNet and MIRNet-v2). ``enhance`` reflect-pads the bottom and
right edges up to that multiple, runs the model and crops the padding off again,
so a 601x337 photo comes back 601x337.
"""

from __future__ import annotations

import numpy as np

from model.registry import size_multiple as registered_multiple


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


def enhance(model, images, *, multiple: int | None = None, batch_size: int = 1, clip: bool = True):
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
