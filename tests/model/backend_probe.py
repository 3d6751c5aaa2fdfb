"""Runs the model zoo under the Keras backend named by ``KERAS_BACKEND`` (in a
process of its own: the backend is chosen when Keras is first imported).

    python -m tests.model.backend_probe reference DIR   # build, save, infer: the reference
    python -m tests.model.backend_probe check DIR       # load the reference, infer, train, save, reload

``reference`` builds every small architecture of ``small_models.SMALL`` with
fixed seeds, saves each as ``DIR/<key>.keras`` and its outputs on fixed images
(whole with ``infer``, in tiles with ``infer_tiled``) as ``DIR/<key>.npz``.

``check`` loads those files under this process's backend, runs the same
inference, trains each model a few steps on MSE plus the perceptual loss
(random VGG weights), saves it as ``.keras``, loads it again and writes what it
found to ``DIR/<backend>.json``: the largest differences from the reference
outputs, the training losses, how far the weights moved and the largest
difference between the trained model and its reloaded copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np

from mirnet_pipeline.model import get_loss, infer, infer_tiled
from tests.model.small_models import SMALL, small_model

STEPS = 4


def images() -> dict[str, np.ndarray]:
    """Fixed inputs: an odd-sized image (padding) and one large enough for tiles."""
    rng = np.random.default_rng(7)
    return {"whole": rng.random((2, 37, 45, 3), dtype=np.float32),
            "tiled": rng.random((70, 90, 3), dtype=np.float32)}


def outputs(model) -> dict[str, np.ndarray]:
    inputs = images()
    return {"whole": infer(model, inputs["whole"], batch_size=2),
            "tiled": infer_tiled(model, inputs["tiled"], tile=48, overlap=8, batch_size=3)}


def reference(folder: Path) -> None:
    for index, key in enumerate(SMALL):
        keras.utils.set_random_seed(index)
        model = small_model(key)
        # random biases and scales too (they start at zero or one), so that no
        # weight can be lost or swapped on the way without changing the outputs
        rng = np.random.default_rng(index)
        model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
        model.save(folder / f"{key}.keras")
        np.savez(folder / f"{key}.npz", **outputs(model))


def training_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Noisy inputs and clean targets, 32x32 (VGG's smallest input)."""
    rng = np.random.default_rng(3)
    targets = rng.random((8, 32, 32, 3), dtype=np.float32)
    inputs = np.clip(targets + rng.normal(0, 0.1, targets.shape), 0, 1).astype(np.float32)
    return inputs, targets


def check(folder: Path) -> dict:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from mirnet_pipeline.tasks.tuning import tune_for_this_machine

        tune_for_this_machine()  # as training does: Grappler's rewrites cost more than they save on CPUs
    results = {}
    for index, key in enumerate(SMALL):
        model = keras.saving.load_model(folder / f"{key}.keras")
        expected = np.load(folder / f"{key}.npz")
        found = outputs(model)
        differences = {name: float(np.max(np.abs(found[name] - expected[name]))) for name in found}

        keras.utils.set_random_seed(index)
        loss = get_loss("mse+perceptual", weight=0.1, layers=["block1_conv2", "block2_conv2"], weights="random")
        # XLA for JAX (its only way); TensorFlow eagerly: tracing these graphs costs it
        # tens of seconds a model; the training flow test covers its graph mode
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=backend == "jax",
                      run_eagerly=backend == "tensorflow")
        before = [w.copy() for w in model.get_weights()]
        inputs, targets = training_pairs()
        loss_before = float(loss(targets, model.predict_on_batch(inputs)))
        history = model.fit(inputs, targets, batch_size=2, epochs=1, steps_per_epoch=STEPS, verbose=0)
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), before, strict=True))
        loss_after = float(loss(targets, model.predict_on_batch(inputs)))

        path = folder / backend / f"{key}.keras"
        path.parent.mkdir(exist_ok=True)
        model.save(path)
        reloaded = keras.saving.load_model(path, compile=False)
        trained, again = outputs(model), outputs(reloaded)
        results[key] = {
            "difference": differences,
            "loss_before": loss_before,
            "loss_after": loss_after,
            "fit_loss": [float(v) for v in history.history["loss"]],
            "weights_moved": moved,
            "reload_difference": max(float(np.max(np.abs(trained[n] - again[n]))) for n in trained),
        }
    (folder / f"{backend}.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    reference(folder) if mode == "reference" else check(folder)
