"""The inference helper and .keras round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mirnet_pipeline.model import (
    build_model,
    get_loss,
    infer,
    infer_tiled,
    mae_metric,
    psnr_metric,
    reflect_pad,
    ssim_metric,
)
from tests.model.small_models import SMALL, small_model


def test_reflect_pad_mirrors_the_bottom_and_right_edges():
    image = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6, 1)
    padded = reflect_pad(image, 4)
    assert padded.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(padded[:, :5, :6], image)
    np.testing.assert_array_equal(padded[0, 5:, :6, 0], image[0, [3, 2, 1], :, 0])
    np.testing.assert_array_equal(padded[0, :5, 6:, 0], image[0, :, [4, 3], 0].T)
    one = reflect_pad(np.full((1, 1, 1, 3), 0.25, np.float32), 4)
    assert one.shape == (1, 4, 4, 3) and np.all(one == 0.25)


@pytest.mark.parametrize("key", ["mirnet", "mirnet_v2", "cnn"])
@pytest.mark.parametrize("height, width", [(337, 601), (1, 1), (13, 7)])
def test_output_shape_equals_input_shape_for_any_size(key, height, width):
    model = small_model(key)
    image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    out = infer(model, image)
    assert out.shape == (height, width, 3)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_padding_does_not_change_the_pixels_a_padded_model_sees():
    """A pure per-pixel model must return exactly its input region, padding or not."""
    model = build_model("cnn", channels=4, depth=1)
    image = np.random.default_rng(1).random((10, 14, 3), dtype=np.float32)
    full = infer(model, image, multiple=1)
    padded = infer(model, image, multiple=8)
    # a 3x3 convolution stack sees 2 pixels beyond each edge: compare the interior
    np.testing.assert_allclose(padded[:-2, :-2], full[:-2, :-2], atol=1e-6)


def test_batches_give_the_same_result_as_single_images():
    model = small_model("mirnet")
    images = np.random.default_rng(2).random((3, 20, 24, 3), dtype=np.float32)
    together = infer(model, images, batch_size=3)
    alone = np.stack([infer(model, im) for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_unregistered_model_needs_an_explicit_multiple():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs), name="mine")
    with pytest.raises(ValueError, match="'mine' is not a registered architecture"):
        infer(model, np.zeros((4, 4, 3), np.float32))
    assert infer(model, np.zeros((5, 5, 3), np.float32), multiple=2).shape == (5, 5, 3)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_keras_round_trip_gives_identical_outputs(key, tmp_path):
    model = small_model(key)
    rng = np.random.default_rng(3)
    # perturb every weight so that zero-initialised parts take part too
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.compile(optimizer="adam", loss=get_loss("charbonnier"), metrics=[psnr_metric, ssim_metric, mae_metric])
    path = tmp_path / f"{key}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    image = rng.random((1, 24, 28, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        np.asarray(model(image, training=False)), np.asarray(loaded(image, training=False))
    )
    assert loaded.name == model.name
    assert loaded.count_params() == model.count_params()
    assert loaded.loss.__name__ == "charbonnier"


def test_bilinear_upsampling_matches_half_pixel_bilinear_with_clamped_edges():
    from mirnet_pipeline.model import BilinearUpSampling2D

    row = np.array([1.0, 5.0, 9.0], np.float32).reshape(1, 1, 3, 1)
    out = np.asarray(BilinearUpSampling2D()(np.repeat(row, 2, axis=1)))
    # PyTorch's Upsample(scale_factor=2, mode="bilinear", align_corners=False) gives these
    expected = [1.0, 2.0, 4.0, 6.0, 8.0, 9.0]
    np.testing.assert_allclose(out[0, 0, :, 0], expected, atol=1e-6)
    assert out.shape == (1, 4, 6, 1)


def test_every_architecture_trains_in_graph_mode_with_unknown_sizes():
    """fit() traces the model with unknown heights and widths: every layer must cope."""
    import tensorflow as tf

    x = np.random.default_rng(4).random((2, 16, 16, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x)).batch(2)
    for key in SMALL:
        model = small_model(key)
        model.compile(optimizer="adam", loss=get_loss("mse"))
        history = model.fit(data, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0]), key


def test_tiled_and_whole_image_outputs_agree():
    """A local model (the CNN) gives the same result tiled or whole; MIRNet's
    global attention pools over what it sees, so tiles differ a little more."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, 200)[None, :, None]
    image = np.clip(ramp + rng.normal(0, 0.08, (150, 200, 3)), 0, 1).astype(np.float32)
    cnn = build_model("cnn", channels=8, depth=3)
    whole = infer(cnn, image)
    tiled = infer_tiled(cnn, image, tile=96, overlap=12)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    keras.utils.set_random_seed(0)
    mirnet = build_model("mirnet", num_rrg=1, num_mrb=1, channels=8)
    difference = np.abs(infer_tiled(mirnet, image, tile=128, overlap=16) - infer(mirnet, image))
    assert difference.mean() < 0.02

