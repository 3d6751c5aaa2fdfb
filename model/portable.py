"""Graphs that every exporter converts.

Under TensorFlow, Keras runs a grouped convolution (MIRNet-v2's residual
contextual blocks use groups 1, 2, 4, 4) as an XLA-compiled function, because
TensorFlow's CPU kernels cannot group. tf2onnx cannot convert that function
call (``StatefulPartitionedCall``) and OpenVINO's converter takes minutes over
it. ``split_grouped_convolutions`` makes each grouped ``Conv2D`` of a model
compute the same thing as one plain convolution per group (split the input
channels, convolve each slice with its slice of the kernel, concatenate) while
a graph is traced, and puts the layers back afterwards. Weights and outputs are
unchanged; only the traced graph differs.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops


def _grouped_convolutions(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]


def _per_group(layer):
    """``layer.convolution_op`` as ``groups`` plain convolutions."""

    def convolution_op(inputs, kernel):
        axis = -1 if layer.data_format == "channels_last" else 1
        slices = ops.split(inputs, layer.groups, axis=axis)
        kernels = ops.split(kernel, layer.groups, axis=-1)  # (h, w, in / groups, out): out is grouped
        outputs = [ops.conv(x, k, strides=list(layer.strides), padding=layer.padding,
                            dilation_rate=layer.dilation_rate, data_format=layer.data_format)
                   for x, k in zip(slices, kernels)]
        return ops.concatenate(outputs, axis=axis)

    return convolution_op


@contextlib.contextmanager
def split_grouped_convolutions(model: keras.Model):
    """Within the block, every grouped ``Conv2D`` in ``model`` (nested layers
    included) runs as one plain convolution per group."""
    layers = _grouped_convolutions(model)
    for layer in layers:
        layer.convolution_op = _per_group(layer)
    try:
        yield model
    finally:
        for layer in layers:
            del layer.convolution_op  # the class's method again
