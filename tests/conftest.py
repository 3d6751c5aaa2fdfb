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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's server mode) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    previous = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://{host}:{port}"
    server.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the S3 server: (endpoint URL, bucket name, boto3 client)."""
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return s3_server, name, client


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep one test's store
    from leaking into the next test or its subprocesses."""
    before = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before
