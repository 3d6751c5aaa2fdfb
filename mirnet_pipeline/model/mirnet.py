"""MIRNet: "Learning Enriched Features for Real Image Restoration and Enhancement"
(Zamir, Arora, Khan, Hayat, Khan, Yang, Shao; ECCV 2020).

Reproduces, layer for layer and parameter for parameter, the model of the Keras
example "Low-light image enhancement using MIRNet" (keras-io,
``examples/vision/mirnet.py``, the version whose selective kernel feature fusion
takes all three resolution levels). Read top-down in the paper's order:
resampling modules, multi-scale residual block, recursive residual group, model.
"""

from __future__ import annotations

import keras
from keras import layers

from mirnet_pipeline.model.attention import NonLocalBlock, dual_attention_unit, selective_kernel_feature_fusion
from mirnet_pipeline.model.registry import register_architecture
from mirnet_pipeline.model.residual import global_residual


def down_sampling_module(x):
    """x2 down-sampling, channels doubled.

    Main path: 1x1 conv ReLU -> 3x3 conv ReLU -> max-pool -> 1x1 conv to 2C.
    Residual path: max-pool -> 1x1 conv to 2C. The two are added.
    """
    channels = x.shape[-1]
    main = layers.Conv2D(channels, 1, activation="relu")(x)
    main = layers.Conv2D(channels, 3, padding="same", activation="relu")(main)
    main = layers.MaxPooling2D()(main)
    main = layers.Conv2D(channels * 2, 1)(main)
    skip = layers.MaxPooling2D()(x)
    skip = layers.Conv2D(channels * 2, 1)(skip)
    return layers.Add()([skip, main])


def up_sampling_module(x):
    """x2 up-sampling, channels halved: the mirror image with UpSampling2D."""
    channels = x.shape[-1]
    main = layers.Conv2D(channels, 1, activation="relu")(x)
    main = layers.Conv2D(channels, 3, padding="same", activation="relu")(main)
    main = layers.UpSampling2D()(main)
    main = layers.Conv2D(channels // 2, 1)(main)
    skip = layers.UpSampling2D()(x)
    skip = layers.Conv2D(channels // 2, 1)(skip)
    return layers.Add()([skip, main])


def multi_scale_residual_block(x, channels, skff_softmax="channels", non_local=False):
    """MRB: full, 1/2 and 1/4 resolution streams, each a dual attention unit,
    exchanging information through selective kernel feature fusion, fused again
    at full resolution, 3x3 conv, plus the block's input."""
    level1 = x
    level2 = down_sampling_module(level1)
    level3 = down_sampling_module(level2)
    if non_local:
        level3 = NonLocalBlock()(level3)

    level1_dau = dual_attention_unit(level1)
    level2_dau = dual_attention_unit(level2)
    level3_dau = dual_attention_unit(level3)

    def skff(streams):
        return selective_kernel_feature_fusion(streams, softmax=skff_softmax)

    level1_skff = skff(
        [
            level1_dau,
            up_sampling_module(level2_dau),
            up_sampling_module(up_sampling_module(level3_dau)),
        ]
    )
    level2_skff = skff(
        [down_sampling_module(level1_dau), level2_dau, up_sampling_module(level3_dau)]
    )
    level3_skff = skff(
        [
            down_sampling_module(down_sampling_module(level1_dau)),
            down_sampling_module(level2_dau),
            level3_dau,
        ]
    )

    level1_out = dual_attention_unit(level1_skff)
    level2_out = up_sampling_module(dual_attention_unit(level2_skff))
    level3_out = up_sampling_module(up_sampling_module(dual_attention_unit(level3_skff)))

    fused = skff([level1_out, level2_out, level3_out])
    fused = layers.Conv2D(channels, 3, padding="same")(fused)
    return layers.Add()([x, fused])


def recursive_residual_group(x, num_mrb, channels, skff_softmax="channels", non_local=False):
    """RRG: 3x3 conv, ``num_mrb`` multi-scale residual blocks, 3x3 conv, plus the input."""
    features = layers.Conv2D(channels, 3, padding="same")(x)
    for _ in range(num_mrb):
        features = multi_scale_residual_block(features, channels, skff_softmax, non_local)
    features = layers.Conv2D(channels, 3, padding="same")(features)
    return layers.Add()([features, x])


@register_architecture(
    "mirnet",
    size_multiple=4,
    summary="MIRNet (Zamir et al., ECCV 2020) as in the Keras low-light example",
)
def mirnet(
    num_rrg: int = 3,
    num_mrb: int = 2,
    channels: int = 64,
    skff_softmax: str = "channels",
    non_local: bool = False,
    identity_init: bool = False,
    input_shape: tuple = (None, None, 3),
) -> keras.Model:
    """MIRNet with ``num_rrg`` recursive residual groups of ``num_mrb`` multi-scale
    residual blocks at ``channels`` features; output = input + network(input).

    Defaults are the Keras example's (3, 2, 64). ``skff_softmax`` and
    ``non_local`` are off-example options (see ``selective_kernel_feature_fusion``
    and ``NonLocalBlock``); their defaults keep the model identical to the example.
    ``identity_init=True`` zero-initialises the last convolution, so that the
    untrained model returns its input (see ``model.residual``); the
    architecture and parameter count are unchanged.
    Heights and widths must be multiples of 4 (two x2 down-samplings).
    """
    if num_rrg < 1 or num_mrb < 1:
        raise ValueError(f"num_rrg and num_mrb must be >= 1, got {num_rrg}, {num_mrb}")
    if channels < 8 or channels % 8:
        raise ValueError(f"channels must be a positive multiple of 8, got {channels}")
    inputs = keras.Input(shape=input_shape)
    features = layers.Conv2D(channels, 3, padding="same")(inputs)
    for _ in range(num_rrg):
        features = recursive_residual_group(features, num_mrb, channels, skff_softmax, non_local)
    outputs = global_residual(inputs, features, identity_init=identity_init)
    return keras.Model(inputs, outputs, name="mirnet")
