"""Attention and fusion blocks of MIRNet (Zamir et al., ECCV 2020) as the Keras
example "Low-light image enhancement using MIRNet" builds them, plus the
embedded-Gaussian non-local block (Wang et al., CVPR 2018).

Blocks are functions from a Keras tensor to a Keras tensor, named as the paper
names them; the few operations that no stock Keras layer performs are small
registered layers so that ``.keras`` files load without custom code.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from mirnet_pipeline.model.registry import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelPooling(layers.Layer):
    """Per-pixel average and maximum over channels, concatenated (2 channels)."""

    def call(self, inputs):
        average = ops.mean(inputs, axis=-1, keepdims=True)
        maximum = ops.max(inputs, axis=-1, keepdims=True)
        return ops.concatenate([average, maximum], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StreamSoftmax(layers.Layer):
    """Softmax across fusion streams: the i-th output is exp(a_i) / sum_j exp(a_j).

    Used by the selective kernel feature fusion when ``softmax="streams"`` (the
    paper's formulation); inputs are a list of equally shaped descriptors.
    """

    def call(self, inputs):
        stacked = ops.stack(inputs, axis=0)
        weights = ops.softmax(stacked, axis=0)
        return [weights[i] for i in range(len(inputs))]

    def compute_output_shape(self, input_shape):
        return list(input_shape)


def channel_attention(x):
    """Squeeze-and-excitation: GAP -> 1x1xC -> 1x1 conv C/8 ReLU -> 1x1 conv C sigmoid -> x * a."""
    channels = x.shape[-1]
    descriptor = layers.GlobalAveragePooling2D()(x)
    descriptor = layers.Reshape((1, 1, channels))(descriptor)
    activations = layers.Conv2D(channels // 8, 1, activation="relu")(descriptor)
    activations = layers.Conv2D(channels, 1, activation="sigmoid")(activations)
    return layers.Multiply()([x, activations])


def spatial_attention(x):
    """Average and max over channels -> concatenate -> 1x1 conv -> sigmoid -> x * a."""
    compressed = ChannelPooling()(x)
    attention = layers.Conv2D(1, 1, activation="sigmoid")(compressed)
    return layers.Multiply()([x, attention])


def dual_attention_unit(x):
    """DAU: conv-ReLU-conv, channel and spatial attention in parallel, concatenate,
    1x1 conv back to C channels, add the input."""
    channels = x.shape[-1]
    features = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    features = layers.Conv2D(channels, 3, padding="same")(features)
    merged = layers.Concatenate(axis=-1)(
        [channel_attention(features), spatial_attention(features)]
    )
    merged = layers.Conv2D(channels, 1)(merged)
    return layers.Add()([x, merged])


def selective_kernel_feature_fusion(streams, softmax="channels"):
    """SKFF over equally shaped streams: add, GAP, 1x1 conv to C/8 with ReLU, one
    1x1 conv per stream giving its attention descriptor, weighted sum.

    ``softmax="channels"`` normalises each descriptor over its channels, exactly as
    the Keras example does (``Conv2D(C, 1, activation="softmax")``);
    ``softmax="streams"`` normalises across the streams for each channel, as the
    paper's equations do. Both have the same parameters.
    """
    if softmax not in ("channels", "streams"):
        raise ValueError(f"softmax must be 'channels' or 'streams', got {softmax!r}")
    channels = streams[0].shape[-1]
    combined = layers.Add()(list(streams))
    statistics = layers.GlobalAveragePooling2D()(combined)
    statistics = layers.Reshape((1, 1, channels))(statistics)
    compact = layers.Conv2D(channels // 8, 1, activation="relu")(statistics)
    activation = "softmax" if softmax == "channels" else None
    descriptors = [
        layers.Conv2D(channels, 1, activation=activation)(compact) for _ in streams
    ]
    if softmax == "streams":
        descriptors = StreamSoftmax()(descriptors)
    weighted = [layers.Multiply()([s, d]) for s, d in zip(streams, descriptors, strict=True)]
    return layers.Add()(weighted)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NonLocalBlock(layers.Layer):
    """Embedded-Gaussian non-local block (Wang et al., "Non-local Neural Networks").

    z = x + W(softmax(theta(x) phi(x)^T) g(x)), with theta, phi, g 1x1 convolutions
    to ``channels * reduction`` channels. ``subsample`` max-pools phi and g by 2x2,
    the paper's cheaper variant. W starts at zero so that the block begins as the
    identity, as the paper recommends.
    """

    def __init__(self, reduction=0.5, subsample=True, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.subsample = subsample

    def build(self, input_shape):
        channels = input_shape[-1]
        inner = max(1, int(channels * self.reduction))
        self.inner = inner
        self.theta = layers.Conv2D(inner, 1, name="theta", dtype=self.dtype_policy)
        self.phi = layers.Conv2D(inner, 1, name="phi", dtype=self.dtype_policy)
        self.g = layers.Conv2D(inner, 1, name="g", dtype=self.dtype_policy)
        self.w = layers.Conv2D(channels, 1, kernel_initializer="zeros", name="w", dtype=self.dtype_policy)
        self.pool = layers.MaxPooling2D(2, padding="same", dtype=self.dtype_policy) if self.subsample else None
        self.theta.build(input_shape)
        self.phi.build(input_shape)
        self.g.build(input_shape)
        self.w.build((*input_shape[:-1], inner))

    def call(self, x):
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        theta = ops.reshape(self.theta(x), (batch, -1, self.inner))
        phi, g = self.phi(x), self.g(x)
        if self.pool is not None:
            phi, g = self.pool(phi), self.pool(g)
        phi = ops.reshape(phi, (batch, -1, self.inner))
        g = ops.reshape(g, (batch, -1, self.inner))
        affinity = ops.softmax(ops.matmul(theta, ops.transpose(phi, (0, 2, 1))), axis=-1)
        y = ops.reshape(ops.matmul(affinity, g), (batch, height, width, self.inner))
        return x + self.w(y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def macs(self, input_shape):
        pixels, channels = input_shape[1] * input_shape[2], input_shape[-1]
        keys = -(-input_shape[1] // 2) * -(-input_shape[2] // 2) if self.subsample else pixels
        projections = 4 * pixels * channels * self.inner  # theta, phi, g, w
        return projections + 2 * pixels * keys * self.inner  # affinity, aggregation

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "subsample": self.subsample}

