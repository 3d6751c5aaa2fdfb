"""Running a trained float32 model at a lower compute precision.

``with_precision(model, "bfloat16")`` rebuilds the model with Keras' mixed
precision policy (``mixed_bfloat16`` or ``mixed_float16``): weights stay
float32, layers compute in the lower precision, and the output layer (MIRNet's
global residual) computes in float32 so the result is not rounded to 8
significant bits. Worth it where the hardware has fast low-precision
arithmetic (bfloat16 on recent x86 CPUs and TPUs, float16 on GPUs); the output
differs slightly from float32, so it is an option, never the default.
``"float32"`` turns a model trained with mixed precision (on a GPU) back into
plain float32, which CPUs run much faster than float16.
"""

from __future__ import annotations

import keras

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """``model`` computing in ``precision`` (``float32``, ``bfloat16`` or ``float16``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    policy = PRECISIONS[precision]
    if policy == "float32" and all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    output_layer = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name == output_layer else policy
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(model, clone_function=clone)
    converted.set_weights(model.get_weights())
    return converted
