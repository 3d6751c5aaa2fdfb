"""Shared fixtures. Services the tests need are started here on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Isolate Prefect's home and keep everything offline before anything imports Prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
from tasks.environment import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TEST_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tid2013_pair() -> tuple[np.ndarray, np.ndarray]:
    """The real TID2013 reference I01 and its level-5 additive-noise version, uint8 RGB."""
    folder = TEST_DATA / "tid2013"
    reference = np.asarray(Image.open(folder / "I01.BMP").convert("RGB"))
    distorted = np.asarray(Image.open(folder / "i01_01_5.bmp").convert("RGB"))
    return reference, distorted


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server and database for the test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
