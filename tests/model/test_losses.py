"""The perceptual loss (pixel loss + weight x VGG19 feature MSE), checked against
an independent computation with Keras' own VGG19 preprocessing."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirnet_pipeline.model import get_loss, loss_names
from mirnet_pipeline.model.losses import VGG19_WEIGHTS_FILE, MissingWeights, PerceptualLoss
from mirnet_pipeline.tasks.config import LOSS_NAMES

LAYERS = ["block1_conv2", "block2_conv2"]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    clean = rng.random((2, 40, 48, 3), dtype=np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    return clean, noisy


@pytest.fixture(scope="module")
def loss():
    keras.utils.set_random_seed(0)
    return get_loss("mse+perceptual", weight=0.5, layers=LAYERS, weights="random")


def reference_perceptual(features: keras.Model, a, b) -> float:
    """Mean over layers of the MSE of VGG features / 255, with Keras' own VGG19
    preprocessing (caffe: RGB -> BGR, ImageNet mean subtracted, 0-255 scale)."""
    preprocess = keras.applications.vgg19.preprocess_input
    fa = features(preprocess(a * 255.0))
    fb = features(preprocess(b * 255.0))
    return float(np.mean([np.mean(((np.asarray(x) - np.asarray(y)) / 255.0) ** 2)
                          for x, y in zip(fa, fb, strict=True)]))


def test_the_loss_is_the_pixel_loss_plus_weight_times_the_feature_mse(loss, images):
    clean, noisy = images
    perceptual = reference_perceptual(loss.features, clean.copy(), noisy.copy())
    assert perceptual > 0
    mse = float(np.mean((clean - noisy) ** 2))
    assert float(loss.perceptual(clean, noisy)) == pytest.approx(perceptual, rel=1e-4)
    assert float(loss(clean, noisy)) == pytest.approx(mse + 0.5 * perceptual, rel=1e-4)
    # the weight scales the feature term and nothing else
    for weight in (0.0, 2.0):
        other = PerceptualLoss("mse", weight=weight, layers=LAYERS, weights="random")
        other.features = loss.features
        assert float(other(clean, noisy)) == pytest.approx(mse + weight * perceptual, rel=1e-4)
    mae = PerceptualLoss("mae", weight=0.5, layers=LAYERS, weights="random")
    mae.features = loss.features
    assert float(mae(clean, noisy)) == pytest.approx(np.mean(np.abs(clean - noisy)) + 0.5 * perceptual, rel=1e-4)


def test_it_is_zero_for_identical_images_and_differentiable(loss, images):
    clean, noisy = images
    assert float(loss(clean, clean)) == 0.0
    prediction = tf.Variable(noisy)
    with tf.GradientTape() as tape:
        value = loss(clean, prediction)
    gradient = tape.gradient(value, prediction).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    # a small step against the gradient lowers the loss
    assert float(loss(clean, noisy - 1e-2 * gradient / np.abs(gradient).max())) < float(value)


def test_a_model_compiled_with_it_saves_and_loads_without_vgg_weights(tmp_path, loss):
    from tests.model.small_models import small_model

    model = small_model("cnn")
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # compiled again: the loss is not built
    assert isinstance(loaded.loss, PerceptualLoss) and loaded.loss.features is None
    assert (loaded.loss.pixel, loaded.loss.weight, loaded.loss.layers) == ("mse", 0.5, tuple(LAYERS))


def test_weights_load_from_a_named_file(tmp_path, images):
    keras.utils.set_random_seed(1)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg19.weights.h5"
    vgg.save_weights(path)
    from_file = PerceptualLoss("mse", weight=0.5, layers=LAYERS, weights=str(path)).build_features()
    features = keras.Model(vgg.input, [vgg.get_layer(name).output for name in LAYERS])
    clean, noisy = images
    assert float(from_file.perceptual(clean, noisy)) == pytest.approx(
        reference_perceptual(features, clean.copy(), noisy.copy()), rel=1e-4)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    with pytest.raises(MissingWeights, match="does not exist"):
        get_loss("mse+perceptual", weights=str(tmp_path / "nowhere.h5"))
    # offline, with an empty Keras cache: the error names the file, the folder and the key
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # the discard port: refused at once
    with pytest.raises(MissingWeights) as error:
        get_loss("mse+perceptual")
    message = str(error.value)
    assert VGG19_WEIGHTS_FILE in message and str(tmp_path / "keras" / "models") in message
    assert "train.perceptual.weights" in message


def test_unknown_names_and_layers_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'mse\\+vgg'"):
        get_loss("mse+vgg")
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        get_loss("mse+perceptual", layers=["block9_conv1"], weights="random")


def test_params_yaml_knows_exactly_the_losses_of_the_model_package():
    assert list(LOSS_NAMES) == loss_names()
