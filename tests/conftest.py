"""Shared fixtures. Services the tests need are started here on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

# Isolate Prefect's home and keep everything offline before anything imports Prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
# Every process this suite starts inherits this mark, so the end of the session
# can find any that outlived their test (pytest_sessionfinish below).
SESSION_MARK = "MIRNET_PIPELINE_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
from mirnet_pipeline.tasks.environment import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TEST_DATA = Path(__file__).parent / "testdata"


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


def processes_left_behind() -> list:
    """Processes other than this one that carry this session's mark, except
    multiprocessing's resource tracker of this process (a helper of pytest's
    own process that ends with it, not something a test left running)."""
    import psutil

    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(SESSION_MARK) != os.environ[SESSION_MARK]:
                continue
            if process.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(process.cmdline()):
                continue
            found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process started by a test is still running (after a
    grace period for ones being stopped), and stop it."""
    deadline = time.monotonic() + 15
    left = processes_left_behind()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_left_behind()
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for process in left:
        try:
            line = " ".join(process.cmdline())[:300]
            process.kill()
        except Exception:  # noqa: BLE001  (gone meanwhile)
            line = "(exited)"
        if reporter is not None:
            reporter.write_line(f"process left behind by the tests: pid {process.pid}: {line}", red=True)
    session.exitstatus = 1
