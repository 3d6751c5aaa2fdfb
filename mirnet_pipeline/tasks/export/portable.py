"""Graphs that every exporter converts, and runtimes run fast.

Under TensorFlow, Keras runs a grouped convolution (MIRNet-v2's residual
contextual blocks use groups 1, 2, 4, 4) as an XLA-compiled function, because
TensorFlow's CPU kernels cannot group. tf2onnx cannot convert that function
call (``StatefulPartitionedCall``) and OpenVINO's converter takes minutes over
it. ``portable_graph`` makes each grouped ``Conv2D`` of a model
compute the same thing as one plain convolution per group (split the input
channels, convolve each slice with its slice of the kernel, concatenate) while
a graph is traced, and puts the layers back afterwards. Weights and outputs are
unchanged; only the traced graph differs.

The same block also traces nearest-neighbour ``UpSampling2D`` (MIRNet's
up-sampling) as one image resize with the same output. Keras writes it as two
``repeat`` calls, which converters turn into Tile/Reshape chains: in the
exported demo MIRNet they were the largest cost after the convolutions
(``benchmarks/operator_profile.py`` shows each operator's share). As one
Resize/Interpolate node they cost the runtimes far less.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops


def _grouped_convolutions(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]


def _nearest_upsamplings(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"]


def _nearest_resize(x, height_factor, width_factor, data_format, interpolation="nearest"):
    """``UpSampling2D._resize_images`` for nearest interpolation, as one
    TensorFlow resize (the exporters trace TensorFlow graphs; Keras' own
    ``ops.image.resize`` wants a size known before tracing). Without
    half-pixel centres, output pixel ``i`` takes source pixel
    ``floor(i / factor)``: exactly what ``repeat`` copies there."""
    import tensorflow as tf

    if data_format == "channels_first":
        x = tf.transpose(x, [0, 2, 3, 1])
    shape = tf.shape(x)
    x = tf.raw_ops.ResizeNearestNeighbor(images=x, size=tf.stack([shape[1] * height_factor, shape[2] * width_factor]),
                                         align_corners=False, half_pixel_centers=False)
    return tf.transpose(x, [0, 3, 1, 2]) if data_format == "channels_first" else x


def _per_group(layer):
    """``layer.convolution_op`` as ``groups`` plain convolutions."""

    def convolution_op(inputs, kernel):
        axis = -1 if layer.data_format == "channels_last" else 1
        slices = ops.split(inputs, layer.groups, axis=axis)
        kernels = ops.split(kernel, layer.groups, axis=-1)  # (h, w, in / groups, out): out is grouped
        outputs = [ops.conv(x, k, strides=list(layer.strides), padding=layer.padding,
                            dilation_rate=layer.dilation_rate, data_format=layer.data_format)
                   for x, k in zip(slices, kernels, strict=True)]
        return ops.concatenate(outputs, axis=axis)

    return convolution_op


@contextlib.contextmanager
def portable_graph(model: keras.Model):
    """Within the block, every grouped ``Conv2D`` in ``model`` (nested layers
    included) runs as one plain convolution per group, and every nearest
    ``UpSampling2D`` as one resize."""
    convolutions, upsamplings = _grouped_convolutions(model), _nearest_upsamplings(model)
    for layer in convolutions:
        layer.convolution_op = _per_group(layer)
    for layer in upsamplings:
        layer._resize_images = _nearest_resize
    try:
        yield model
    finally:
        for layer in convolutions:
            del layer.convolution_op  # the class's method again
        for layer in upsamplings:
            del layer._resize_images
