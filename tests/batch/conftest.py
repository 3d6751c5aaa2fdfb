"""A tiny MIRNet saved as a .keras file, shared by the batch tests."""

from __future__ import annotations

import keras
import pytest

from mirnet_pipeline.model import build_model


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.utils.set_random_seed(0)
    model = build_model("mirnet", num_rrg=1, num_mrb=1, channels=8)
    model.save(path)
    return str(path)
