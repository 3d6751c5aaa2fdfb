"""The global residual that ends both MIRNets: a 3x3 convolution back to the
image's channels, added to the input image, so the network learns a
correction rather than the whole image.

With ``identity_init`` the convolution starts at zero (kernel and bias), so the
untrained model returns its input exactly and training starts from "do no
harm" instead of from a random colour cast (the zero-initialised last layer of
residual networks: Goyal et al. 2017, "Accurate, Large Minibatch SGD"; Zhang
et al. 2019, "Fixup Initialization"). The layers and parameter count are the
same either way; only the starting weights differ.
"""

from __future__ import annotations

from keras import layers


def global_residual(inputs, features, *, identity_init: bool = False, use_bias: bool = True):
    """``inputs + Conv2D(channels of inputs, 3x3)(features)``."""
    start = {"kernel_initializer": "zeros"} if identity_init else {}  # a bias starts at zero anyway
    residual = layers.Conv2D(inputs.shape[-1], 3, padding="same", use_bias=use_bias, **start)(features)
    return layers.Add()([inputs, residual])
