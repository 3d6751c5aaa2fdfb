"""Training losses for images in [0, 1]."""

from __future__ import annotations

import keras
from keras import ops

from model.registry import PACKAGE

CHARBONNIER_EPSILON = 1e-3


# Losses are scalars over a batch (``model.metrics`` holds the per-image
# measures); registered under their short names, which saved models refer to.
@keras.saving.register_keras_serializable(package=PACKAGE, name="mse")
def mse_loss(y_true, y_pred):
    """Mean squared error over the batch (the research's loss)."""
    return ops.mean(ops.square(y_true - y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE, name="mae")
def mae_loss(y_true, y_pred):
    """Mean absolute error (L1) over the batch."""
    return ops.mean(ops.abs(y_true - y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
def charbonnier(y_true, y_pred, epsilon=CHARBONNIER_EPSILON):
    """Charbonnier loss mean(sqrt((y - x)^2 + eps^2)), eps = 1e-3 as in the Keras
    MIRNet example: a differentiable L1."""
    return ops.mean(ops.sqrt(ops.square(y_true - y_pred) + epsilon**2))


LOSSES = {"mse": mse_loss, "mae": mae_loss, "charbonnier": charbonnier}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None
