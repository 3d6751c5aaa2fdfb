"""``tasks.export.portable``: the graphs the exporters trace compute what the
Keras layers compute, and the layers are themselves again afterwards."""

from __future__ import annotations

import keras
import numpy as np

from mirnet_pipeline.model import build_model


def test_grouped_convolutions_traced_per_group_compute_the_same():
    from mirnet_pipeline.tasks.export.portable import _grouped_convolutions, portable_graph

    model = build_model("mirnet_v2", channels=16, num_rrg=2, num_mrb=1)
    model.set_weights([w + np.random.default_rng(1).normal(0, 0.05, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    grouped = _grouped_convolutions(model)
    assert {layer.groups for layer in grouped} == {2}
    images = np.random.default_rng(2).random((2, 20, 28, 3), dtype=np.float32)
    expected = np.asarray(model(images))
    with portable_graph(model):
        assert all("convolution_op" in vars(layer) for layer in grouped)
        split = np.asarray(model(images))
    assert all("convolution_op" not in vars(layer) for layer in grouped)  # the layers are themselves again
    assert np.abs(split - expected).max() < 1e-5 and np.abs(expected - images).max() > 0.01


def test_nearest_upsampling_traced_as_one_resize_computes_the_same():
    """MIRNet's UpSampling2D traces as ResizeNearestNeighbor instead of the
    Tile chains of ``repeat``, bit for bit the same, and only inside the block."""
    import tensorflow as tf

    from mirnet_pipeline.tasks.export.portable import _nearest_upsamplings, portable_graph

    keras.utils.set_random_seed(0)
    model = build_model("mirnet", num_rrg=1, num_mrb=1, channels=8)
    upsamplings = _nearest_upsamplings(model)
    assert len(upsamplings) >= 2

    def traced_ops():
        spec = tf.TensorSpec((None, None, None, 3), tf.float32)
        graph = tf.function(lambda x: model(x)).get_concrete_function(spec).graph
        return {op.type for op in graph.get_operations()}

    images = np.random.default_rng(3).random((2, 36, 52, 3), dtype=np.float32)
    expected = np.asarray(model(images))
    assert "Tile" in traced_ops() and "ResizeNearestNeighbor" not in traced_ops()
    with portable_graph(model):
        assert "ResizeNearestNeighbor" in traced_ops() and "Tile" not in traced_ops()
        resized = np.asarray(model(images))
    assert all("_resize_images" not in vars(layer) for layer in upsamplings)
    assert "Tile" in traced_ops()
    assert np.array_equal(resized, expected)
