"""Lower compute precision for inference: every layer (the ones built inside
custom layers too) computes in it, the output layer stays float32, and the
result stays close to float32's."""

from __future__ import annotations

import numpy as np
import pytest

from mirnet_pipeline.model import infer, with_precision
from tests.model.small_models import SMALL, small_model


def inner_layers(model):
    """Every layer, including those a custom layer builds for itself."""
    return [layer for top in model.layers for layer in top._flatten_layers(include_self=True)]


@pytest.mark.parametrize("key", sorted(SMALL))
@pytest.mark.parametrize("precision, dtype, tolerance", [("bfloat16", "bfloat16", 0.05), ("float16", "float16", 0.01)])
def test_lower_precision_computes_in_it_and_stays_close(key, precision, dtype, tolerance):
    model = small_model(key)
    images = np.random.default_rng(0).random((2, 24, 32, 3), dtype=np.float32)
    reference = infer(model, images, batch_size=2)
    converted = with_precision(model, precision)
    layers = inner_layers(converted)[1:-1]  # not the input, not the output layer
    assert layers and {layer.compute_dtype for layer in layers} == {dtype}
    assert converted.layers[-1].compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in converted.weights)  # weights stay float32
    out = infer(converted, images, batch_size=2)
    assert out.dtype == np.float32
    difference = np.abs(out - reference)
    assert 0 < difference.max() < tolerance  # it did compute differently, and not far off


def test_float32_is_the_model_itself_and_unknown_precisions_are_refused():
    model = small_model("cnn")
    assert with_precision(model, "float32") is model
    with pytest.raises(ValueError, match="precision: expected one of float32, bfloat16, float16, got 'int8'"):
        with_precision(model, "int8")


def test_a_mixed_precision_model_is_turned_back_into_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")  # as training on a GPU does
    try:
        trained = small_model("mirnet_v2")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.compute_dtype for layer in inner_layers(trained)[1:]} == {"float16"}
    plain = with_precision(trained, "float32")
    assert {layer.compute_dtype for layer in inner_layers(plain)} == {"float32"}
    images = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(infer(plain, images), infer(trained, images), atol=0.01)
