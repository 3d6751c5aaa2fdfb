"""Training losses for images in [0, 1]: pixel losses (MSE, MAE, Charbonnier)
and, as in MIRNet-v2's research, a pixel loss plus a perceptual (VGG-feature)
loss, selected by name: ``get_loss("mse+perceptual", weight=0.01)``."""

from __future__ import annotations

import os

import keras
from keras import ops

from mirnet_pipeline.model.registry import PACKAGE

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

# The perceptual loss compares VGG19 features (Keras' own VGG19; Simonyan and
# Zisserman 2015), ReLU outputs of these convolutions by default: edges and
# textures (block 2), structures (blocks 3 and 4).
PERCEPTUAL_LAYERS = ("block2_conv2", "block3_conv4", "block4_conv4")
VGG19_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG19_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + VGG19_WEIGHTS_FILE)
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # VGG's input normalisation (caffe mode)


class MissingWeights(FileNotFoundError):
    """The VGG19 ImageNet weights are neither in Keras' cache nor downloadable."""


def keras_weights_cache() -> str:
    """Where Keras keeps downloaded application weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", VGG19_WEIGHTS_FILE)


def vgg19_features(layers=PERCEPTUAL_LAYERS, weights: str = "imagenet") -> keras.Model:
    """A frozen float32 VGG19 cut after the deepest of ``layers``, returning their
    outputs. ``weights``: ``imagenet`` (Keras' cache, downloaded there by Keras
    where there is internet), ``random`` (tests) or the path of the weights file."""
    if weights == "random":
        source = None
    elif weights == "imagenet":
        source = "imagenet"
    else:
        source = os.path.expanduser(weights)
        if not os.path.isfile(source):
            raise MissingWeights(f"VGG19 weights file {source} does not exist")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # features squared overflow float16
    try:
        vgg = keras.applications.VGG19(include_top=False, weights=source, input_shape=(None, None, 3))
    except Exception as error:
        if weights != "imagenet" or os.path.isfile(keras_weights_cache()):
            raise
        raise MissingWeights(
            f"the perceptual loss needs VGG19's ImageNet weights: {VGG19_WEIGHTS_FILE} is not in "
            f"{os.path.dirname(keras_weights_cache())} and Keras could not download it ({error}); "
            f"copy it there from {VGG19_WEIGHTS_URL}, or name the file in train.perceptual.weights"
        ) from error
    finally:
        keras.config.set_dtype_policy(previous)
    unknown = [name for name in layers if name not in {layer.name for layer in vgg.layers}]
    if unknown:
        known = ", ".join(layer.name for layer in vgg.layers if "conv" in layer.name)
        raise ValueError(f"perceptual loss: unknown VGG19 layer(s) {', '.join(unknown)}; known: {known}")
    features = keras.Model(vgg.input, [vgg.get_layer(name).output for name in layers], name="vgg19_features")
    features.trainable = False
    return features


@keras.saving.register_keras_serializable(package=PACKAGE)
class PerceptualLoss(keras.losses.Loss):
    """``pixel(y, y') + weight * perceptual(y, y')``.

    ``perceptual`` is the mean squared difference of the VGG19 features of the
    two images, averaged over ``layers``. The images go in as VGG expects them
    (RGB in [0, 1] turned into ImageNet-normalised BGR in [0, 255]) and the
    features come out divided by 255, so the term is in the units of the pixel
    MSE: with ``weight`` 0.01, a feature error as large as a pixel error
    counts a hundredth as much.

    The feature network is built on first use or by ``build_features()``, so a
    model saved with this loss loads (for inference) without VGG's weights."""

    def __init__(self, pixel: str = "mse", weight: float = 0.01, layers=PERCEPTUAL_LAYERS,
                 weights: str = "imagenet", name: str = "perceptual", **kwargs):
        super().__init__(name=name, **kwargs)
        if pixel not in LOSSES:
            raise ValueError(f"unknown pixel loss {pixel!r}; known: {', '.join(LOSSES)}")
        if weight < 0:
            raise ValueError(f"perceptual loss weight must be >= 0, got {weight}")
        self.pixel, self.weight, self.layers, self.weights = pixel, float(weight), tuple(layers), weights
        self.features = None

    def build_features(self) -> PerceptualLoss:
        if self.features is None:
            self.features = vgg19_features(self.layers, self.weights)
        return self

    def perceptual(self, y_true, y_pred):
        """The feature term alone."""
        self.build_features()
        mean = ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype="float32")

        def vgg_input(images):
            return ops.flip(ops.cast(images, "float32"), axis=-1) * 255.0 - mean

        true_features = self.features(vgg_input(y_true))
        pred_features = self.features(vgg_input(y_pred))
        if len(self.layers) == 1:
            true_features, pred_features = [true_features], [pred_features]
        terms = [ops.mean(ops.square((p - ops.stop_gradient(t)) / 255.0))
                 for t, p in zip(true_features, pred_features, strict=True)]
        return ops.mean(ops.stack(terms))

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        loss = LOSSES[self.pixel](y_true, y_pred)
        if self.weight:
            loss = loss + self.weight * self.perceptual(y_true, y_pred)
        return loss

    def get_config(self):
        return {**super().get_config(), "pixel": self.pixel, "weight": self.weight,
                "layers": list(self.layers), "weights": self.weights}


def loss_names() -> list[str]:
    """Every name ``get_loss`` accepts."""
    return [*LOSSES, *(f"{pixel}+perceptual" for pixel in LOSSES)]


def get_loss(name: str, **perceptual):
    """The loss called ``name``: a pixel loss (``mse``, ``mae``, ``charbonnier``)
    or one of them plus the perceptual loss (``mse+perceptual``), whose
    options (``weight``, ``layers``, ``weights``) ``perceptual`` holds; its
    feature network is built here, before training traces anything."""
    pixel, plus, extra = name.partition("+")
    if pixel not in LOSSES or (plus and extra != "perceptual"):
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(loss_names())}")
    if not plus:
        return LOSSES[pixel]
    return PerceptualLoss(pixel, **perceptual).build_features()
