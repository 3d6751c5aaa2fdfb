"""The model zoo under every Keras backend: TensorFlow, JAX and PyTorch (CPU).

Every architecture (with the non-local block too) is built and saved under
TensorFlow; each backend then loads those ``.keras`` files, runs the inference
helper (whole images and tiles) and must agree with TensorFlow's outputs to
1e-4, trains each model a few steps on MSE plus the perceptual loss, and saves
and reloads it (``backend_probe.py`` does the work in a process per backend).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model.small_models import SMALL

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["tensorflow", "jax", "torch"]
TOLERANCE = 1e-4  # float32 outputs of the same weights, backend against backend


def probe(mode: str, folder: Path, backend: str) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tests.model.backend_probe", mode, str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{backend} {mode}:\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The small models saved under TensorFlow, with their outputs."""
    folder = tmp_path_factory.mktemp("backends")
    probe("reference", folder, "tensorflow")
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_architecture_infers_trains_saves_and_reloads_under(backend, reference):
    probe("check", reference, backend)
    results = json.loads((reference / f"{backend}.json").read_text())
    assert sorted(results) == sorted(SMALL)
    for key, found in results.items():
        # the same weights give the same outputs as under TensorFlow, whole and tiled
        assert found["difference"]["whole"] <= TOLERANCE, (key, found)
        assert found["difference"]["tiled"] <= TOLERANCE, (key, found)
        # a few steps of MSE + perceptual loss move the weights and lower the loss
        assert found["weights_moved"] > 1e-4, (key, found)
        assert found["loss_after"] < found["loss_before"], (key, found)
        # the trained model survives .keras: the reloaded copy gives its outputs
        assert found["reload_difference"] <= 1e-5, (key, found)
        assert (reference / backend / f"{key}.keras").stat().st_size > 0


def test_the_backends_are_the_locked_cpu_builds():
    """The extra backends come from requirements-backends.lock, CPU builds (in a
    process of their own: this one keeps to TensorFlow)."""
    done = subprocess.run([sys.executable, "-c", "import jax, torch; print(jax.__version__, torch.__version__, "
                           "[d.platform for d in jax.devices()])"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    jax_version, torch_version, platforms = done.stdout.split(maxsplit=2)
    assert platforms.strip() == "['cpu']" and torch_version.endswith("+cpu")
    lock = (ROOT / "requirements-backends.lock").read_text()
    assert f"jax=={jax_version}\n" in lock and f"torch=={torch_version}\n" in lock
