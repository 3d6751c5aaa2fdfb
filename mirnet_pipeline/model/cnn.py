"""The plain convolutional network of the research: a stack of same-padded 3x3
convolutions with ReLU and a 3-channel output convolution, applied to whole
images (no down-sampling, so any size works)."""

from __future__ import annotations

import keras
from keras import layers

from mirnet_pipeline.model.registry import register_architecture


@register_architecture(
    "cnn", size_multiple=1, summary="plain CNN: depth x Conv2D(C, 3x3, ReLU) + Conv2D(3, 3x3)"
)
def cnn(
    channels: int = 128,
    depth: int = 6,
    final_activation: str | None = "relu",
    input_shape: tuple = (None, None, 3),
) -> keras.Model:
    """``depth`` Conv2D(channels, 3x3, ReLU, same) layers followed by
    Conv2D(3, 3x3, ``final_activation``, same).

    The research's settings: channels 128 (744,963 parameters) or 256
    (2,964,483 parameters), depth 6, final ReLU.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for _ in range(depth):
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(inputs.shape[-1], 3, padding="same", activation=final_activation)(x)
    return keras.Model(inputs, outputs, name="cnn")
