"""MIRNet-v2: "Learning Enriched Features for Fast Image Restoration and
Enhancement" (Zamir, Arora, Khan, Hayat, Khan, Yang, Shao; TPAMI 2022).

Follows the official architecture (``swz30/MIRNetv2``,
``basicsr/models/archs/mirnet_v2_arch.py``): residual contextual blocks (a
global context block instead of MIRNet's dual attention unit), selective kernel
fusion of two inputs, average-pool down-sampling and bilinear up-sampling with a
channel factor of 1.5, convolutions without bias, and within each multi-scale
residual block the same contextual blocks and fusions applied twice (shared
weights). Grouped convolutions per recursive residual group follow the official
schedule 1, 2, 4, 4.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from mirnet_pipeline.model.registry import PACKAGE, register_architecture
from mirnet_pipeline.model.residual import global_residual

LEAKY_SLOPE = 0.2


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContextBlock(layers.Layer):
    """Global context block (GCNet): a softmax attention mask over all pixels pools
    one context vector, transformed by 1x1 conv -> LeakyReLU -> 1x1 conv and added
    to every pixel."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.mask = layers.Conv2D(1, 1, use_bias=False, name="conv_mask", dtype=self.dtype_policy)
        self.transform_in = layers.Conv2D(channels, 1, use_bias=False, name="channel_add_1", dtype=self.dtype_policy)
        self.transform_out = layers.Conv2D(channels, 1, use_bias=False, name="channel_add_2", dtype=self.dtype_policy)
        self.mask.build(input_shape)
        self.transform_in.build((None, 1, 1, channels))
        self.transform_out.build((None, 1, 1, channels))

    def call(self, x):
        shape = ops.shape(x)
        batch, channels = shape[0], x.shape[-1]
        weights = ops.softmax(ops.reshape(self.mask(x), (batch, -1, 1)), axis=1)
        context = ops.sum(ops.reshape(x, (batch, -1, channels)) * weights, axis=1)
        context = ops.reshape(context, (batch, 1, 1, channels))
        term = self.transform_out(ops.leaky_relu(self.transform_in(context), LEAKY_SLOPE))
        return x + term

    def compute_output_shape(self, input_shape):
        return input_shape

    def macs(self, input_shape):
        pixels, channels = input_shape[1] * input_shape[2], input_shape[-1]
        return 2 * pixels * channels + 2 * channels * channels  # mask, pooling, transform


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualContextBlock(layers.Layer):
    """RCB: 3x3 conv -> LeakyReLU -> 3x3 conv (grouped), context block, LeakyReLU,
    plus the input."""

    def __init__(self, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"{channels} channels cannot be split into {self.groups} groups")
        conv = dict(kernel_size=3, padding="same", use_bias=False, groups=self.groups)
        self.conv1 = layers.Conv2D(channels, name="conv1", **conv, dtype=self.dtype_policy)
        self.conv2 = layers.Conv2D(channels, name="conv2", **conv, dtype=self.dtype_policy)
        self.context = ContextBlock(name="context", dtype=self.dtype_policy)
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)
        self.context.build(input_shape)

    def call(self, x):
        residual = self.conv2(ops.leaky_relu(self.conv1(x), LEAKY_SLOPE))
        residual = ops.leaky_relu(self.context(residual), LEAKY_SLOPE)
        return x + residual

    def compute_output_shape(self, input_shape):
        return input_shape

    def macs(self, input_shape):
        pixels, channels = input_shape[1] * input_shape[2], input_shape[-1]
        convs = 2 * pixels * channels * 9 * (channels // self.groups)
        return convs + self.context.macs(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelectiveKernelFusion(layers.Layer):
    """SKFF of MIRNet-v2: sum the streams, global average pool, 1x1 conv to
    max(C/8, 4) with LeakyReLU, one 1x1 conv per stream, softmax across streams,
    weighted sum."""

    def __init__(self, num_streams=2, reduction=8, **kwargs):
        super().__init__(**kwargs)
        self.num_streams = num_streams
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[0][-1]
        compact = max(int(channels / self.reduction), 4)
        self.squeeze = layers.Conv2D(compact, 1, use_bias=False, name="conv_du", dtype=self.dtype_policy)
        self.squeeze.build((None, 1, 1, channels))
        self.excite = []
        for i in range(self.num_streams):
            conv = layers.Conv2D(channels, 1, use_bias=False, name=f"fc_{i}", dtype=self.dtype_policy)
            conv.build((None, 1, 1, compact))
            self.excite.append(conv)

    def call(self, streams):
        total = streams[0]
        for s in streams[1:]:
            total = total + s
        statistics = ops.mean(total, axis=(1, 2), keepdims=True)
        compact = ops.leaky_relu(self.squeeze(statistics), LEAKY_SLOPE)
        weights = ops.softmax(ops.stack([fc(compact) for fc in self.excite], axis=0), axis=0)
        fused = streams[0] * weights[0]
        for i in range(1, self.num_streams):
            fused = fused + streams[i] * weights[i]
        return fused

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def macs(self, input_shapes):
        shape = input_shapes[0]
        channels = shape[-1]
        compact = max(int(channels / self.reduction), 4)
        weighting = self.num_streams * shape[1] * shape[2] * channels
        return weighting + channels * compact * (1 + self.num_streams)

    def get_config(self):
        return {
            **super().get_config(),
            "num_streams": self.num_streams,
            "reduction": self.reduction,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class BilinearUpSampling2D(layers.Layer):
    """x2 bilinear up-sampling with half-pixel centres and clamped edges, the
    same values as PyTorch's ``Upsample(scale_factor=2, mode="bilinear",
    align_corners=False)``: each output pixel is 3/4 of its nearest input
    pixel plus 1/4 of the next one towards it. Written with ``keras.ops`` so
    that it works for unknown heights and widths in every backend."""

    @staticmethod
    def _double(x, axis):
        size = ops.shape(x)[axis]
        first = ops.take(x, ops.convert_to_tensor([0]), axis=axis)
        last = ops.take(x, ops.convert_to_tensor([-1]), axis=axis)
        padded = ops.concatenate([first, x, last], axis=axis)
        index = ops.arange(size)
        before = ops.take(padded, index, axis=axis)
        centre = ops.take(padded, index + 1, axis=axis)
        after = ops.take(padded, index + 2, axis=axis)
        even = 0.25 * before + 0.75 * centre
        odd = 0.75 * centre + 0.25 * after
        stacked = ops.stack([even, odd], axis=axis + 1)
        shape = list(ops.shape(x))
        shape[axis] = size * 2
        return ops.reshape(stacked, shape)

    def call(self, x):
        return self._double(self._double(x, 1), 2)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


def _scaled(channels, factor, power):
    return int(channels * factor**power)


def down_sample(x, chan_factor):
    """x2 average-pool (ceil mode, padding excluded), 1x1 conv to C * factor."""
    x = layers.AveragePooling2D(2, padding="same")(x)
    return layers.Conv2D(int(x.shape[-1] * chan_factor), 1, use_bias=False)(x)


def up_sample(x, chan_factor):
    """1x1 conv to C / factor, x2 bilinear up-sampling."""
    x = layers.Conv2D(int(x.shape[-1] // chan_factor), 1, use_bias=False)(x)
    return BilinearUpSampling2D()(x)


def multi_scale_residual_block(x, chan_factor, groups):
    """MRB of MIRNet-v2: three streams (1, 1/2, 1/4) whose contextual blocks and
    fusions are each applied twice with shared weights, 1x1 conv, plus the input."""
    channels = x.shape[-1]
    rcb_top, rcb_mid, rcb_bot = (
        ResidualContextBlock(groups=groups) for _ in range(3)
    )
    skff_top, skff_mid = SelectiveKernelFusion(2), SelectiveKernelFusion(2)

    top = x
    mid = down_sample(x, chan_factor)
    bot = down_sample(down_sample(x, chan_factor), chan_factor)

    top, mid, bot = rcb_top(top), rcb_mid(mid), rcb_bot(bot)
    mid = skff_mid([mid, up_sample(bot, chan_factor)])
    top = skff_top([top, up_sample(mid, chan_factor)])

    top, mid, bot = rcb_top(top), rcb_mid(mid), rcb_bot(bot)
    mid = skff_mid([mid, up_sample(bot, chan_factor)])
    top = skff_top([top, up_sample(mid, chan_factor)])

    out = layers.Conv2D(channels, 1, use_bias=False)(top)
    return layers.Add()([out, x])


def recursive_residual_group(x, num_mrb, chan_factor, groups):
    """RRG: ``num_mrb`` multi-scale residual blocks, 3x3 conv, plus the input."""
    features = x
    for _ in range(num_mrb):
        features = multi_scale_residual_block(features, chan_factor, groups)
    features = layers.Conv2D(x.shape[-1], 3, padding="same", use_bias=False)(features)
    return layers.Add()([features, x])


GROUP_SCHEDULE = (1, 2, 4, 4)


@register_architecture(
    "mirnet_v2",
    size_multiple=4,
    summary="MIRNet-v2 (Zamir et al., TPAMI 2022), official architecture",
)
def mirnet_v2(
    channels: int = 80,
    chan_factor: float = 1.5,
    num_rrg: int = 4,
    num_mrb: int = 2,
    identity_init: bool = False,
    input_shape: tuple = (None, None, 3),
) -> keras.Model:
    """MIRNet-v2 with the paper's defaults (80 features, channel factor 1.5, 4
    recursive residual groups of 2 multi-scale residual blocks).

    Recursive residual group ``i`` uses grouped convolutions with
    ``GROUP_SCHEDULE[i]`` groups (the official 1, 2, 4, 4; groups beyond the
    fourth use 4). Heights and widths must be multiples of 4.
    ``identity_init=True`` zero-initialises the last convolution, so that the
    untrained model returns its input (see ``model.residual``).
    """
    if num_rrg < 1 or num_mrb < 1:
        raise ValueError(f"num_rrg and num_mrb must be >= 1, got {num_rrg}, {num_mrb}")
    inputs = keras.Input(shape=input_shape)
    features = layers.Conv2D(channels, 3, padding="same", use_bias=False)(inputs)
    for i in range(num_rrg):
        groups = GROUP_SCHEDULE[min(i, len(GROUP_SCHEDULE) - 1)]
        for level in range(3):
            if _scaled(channels, chan_factor, level) % groups:
                raise ValueError(
                    f"channels={channels} with chan_factor={chan_factor} gives "
                    f"{_scaled(channels, chan_factor, level)} channels at level {level}, "
                    f"not divisible into {groups} groups"
                )
        features = recursive_residual_group(features, num_mrb, chan_factor, groups)
    outputs = global_residual(inputs, features, identity_init=identity_init, use_bias=False)
    return keras.Model(inputs, outputs, name="mirnet_v2")
