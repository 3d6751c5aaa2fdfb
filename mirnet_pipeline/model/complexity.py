"""Size and cost of a model: parameters, layers and multiply-accumulates (MACs).

MACs count the convolutions, dense layers and attention matrix products (the
work that dominates); element-wise additions and multiplications are not
counted, as is customary. Custom layers report their own work through a
``macs(input_shape)`` method.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from mirnet_pipeline.model.registry import build_model, get_architecture


def _shape_list(shapes):
    return shapes if isinstance(shapes, list) else [shapes]


def conv_macs(layer: layers.Conv2D, output_shape) -> int:
    kh, kw = layer.kernel_size
    inputs_per_group = layer.kernel.shape[2]  # kernel: (kh, kw, C_in / groups, C_out)
    height, width, out_channels = output_shape[1], output_shape[2], output_shape[3]
    return height * width * out_channels * kh * kw * inputs_per_group


def layer_macs(layer, input_shapes, output_shapes) -> int:
    """MACs of one call of ``layer``."""
    if isinstance(layer, layers.Conv2D):
        return conv_macs(layer, output_shapes[0])
    if isinstance(layer, layers.Dense):
        positions = math.prod(output_shapes[0][1:-1]) if len(output_shapes[0]) > 2 else 1
        return positions * layer.kernel.shape[0] * layer.kernel.shape[1]
    if hasattr(layer, "macs"):
        return int(layer.macs(input_shapes[0] if len(input_shapes) == 1 else input_shapes))
    return 0


def count_macs(model: keras.Model) -> int:
    """Total MACs of one forward pass; the model's input shape must be fully known."""
    total = 0
    for layer in model.layers:
        for node in layer._inbound_nodes:  # one node per call (shared layers have several)
            inputs = [t.shape for t in node.input_tensors]
            outputs = [t.shape for t in node.output_tensors]
            if any(d is None for s in inputs + outputs for d in s[1:]):
                raise ValueError("count_macs needs a model built with a fixed input shape")
            total += layer_macs(layer, inputs, outputs)
    return total


def layer_types(model: keras.Model) -> dict[str, int]:
    """How many layers of each class the model holds, nested sub-layers included."""
    counts: dict[str, int] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, layers.InputLayer):
            name = type(layer).__name__
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def count_layers(model: keras.Model) -> int:
    """Layers, nested sub-layers included, input layers excluded."""
    return sum(layer_types(model).values())


def describe(arch: str, height: int = 1000, width: int = 1000, **options) -> dict:
    """Parameters, layers and MACs per megapixel of ``build_model(arch, **options)``.

    MACs are measured at ``height`` x ``width`` (rounded up to the architecture's
    size multiple) and scaled to one megapixel.
    """
    multiple = get_architecture(arch).size_multiple
    height = -(-height // multiple) * multiple
    width = -(-width // multiple) * multiple
    model = build_model(arch, input_shape=(height, width, 3), **options)
    macs = count_macs(model)
    types = layer_types(model)
    return {
        "architecture": arch,
        "options": options,
        "parameters": int(model.count_params()),
        "layers": sum(types.values()),
        "layer_types": types,
        "gmacs_per_megapixel": macs / (height * width / 1e6) / 1e9,
        "measured_at": [height, width],
        "size_multiple": multiple,
    }
