"""Training losses for images in [0, 1]."""

from __future__ import annotations

import keras
from keras import ops

from model.attention import PACKAGE

CHARBONNIER_EPSILON = 1e-3


@keras.saving.register_keras_serializable(package=PACKAGE)
def mse(y_true, y_pred):
    """Mean squared error (the research's loss)."""
    return ops.mean(ops.square(y_true - y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
def mae(y_true, y_pred):
    """Mean absolute error (L1)."""
    return ops.mean(ops.abs(y_true - y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
def charbonnier(y_true, y_pred, epsilon=CHARBONNIER_EPSILON):
    """Charbonnier loss mean(sqrt((y - x)^2 + eps^2)), eps = 1e-3 as in the Keras
    MIRNet example: a differentiable L1."""
    return ops.mean(ops.sqrt(ops.square(y_true - y_pred) + epsilon**2))


LOSSES = {"mse": mse, "mae": mae, "charbonnier": charbonnier}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None
