"""A real local Prefect server on 127.0.0.1 fires the cron-scheduled retrain
deployment, and the run promotes the candidate.

One server and one served deployment for the module; each test checks one
thing about them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from mirnet_pipeline.flows.deploy import REGISTERED, SERVED
from tests.training.tiny_project import build_tiny_project, register_candidate

ROOT = Path(__file__).resolve().parents[2]

SERVE = """
import sys
sys.path.insert(0, {root!r})
from prefect import serve
from mirnet_pipeline.flows.deploy import retrain_deployment
serve(retrain_deployment(cron="* * * * *", parameters={{"pull": False, "reproduce": False}}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny project with a registered candidate, a Prefect server and the
    retrain deployment served on a cron of every minute."""
    project = build_tiny_project(tmp_path_factory.mktemp("scheduled"))
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    version = register_candidate(client, project / "mlartifacts", 20.0)

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(project / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(project / "server.log", "w"))
    serving = None
    try:
        wait_for(lambda: _ok(f"{api}/health"), 180, "the Prefect server")
        serving = subprocess.Popen([sys.executable, "-c", SERVE.format(root=str(ROOT))], cwd=project,
                                   env=env, stdout=open(project / "serve.log", "w"), stderr=subprocess.STDOUT)
        deployment = wait_for(lambda: _json("GET", f"{api}/deployments/name/retrain/{SERVED}"), 120,
                              "the deployment")
        yield {"api": api, "deployment": deployment, "client": client, "version": version,
               "log": project / "serve.log", "env": env}
    finally:
        for process in (serving, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def scheduled_runs(served, count=2):
    """At least ``count`` runs the scheduler made from the cron, earliest first."""
    api, deployment = served["api"], served["deployment"]

    def enough():
        runs = _json("POST", f"{api}/flow_runs/filter",
                     {"deployments": {"id": {"any_": [deployment["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}) or []
        runs = [r for r in runs if r["state_type"] == "SCHEDULED" and r["auto_scheduled"]]
        return runs if len(runs) >= count else None

    return wait_for(enough, 120, "the scheduler's runs")


def test_the_served_deployment_has_the_cron_schedule(served):
    assert served["deployment"]["schedules"][0]["schedule"]["cron"] == "* * * * *"


def test_the_deployment_never_runs_two_retrains_at_once(served):
    limit = served["deployment"].get("global_concurrency_limit") or {}
    assert limit.get("limit") == 1, served["deployment"]


def test_the_scheduler_makes_runs_on_minute_boundaries(served):
    times = [datetime.fromisoformat(r["expected_start_time"]) for r in scheduled_runs(served)]
    assert all(t.second == 0 and t.microsecond == 0 for t in times), times
    assert times[1] - times[0] == timedelta(minutes=1)


def test_a_scheduled_run_completes_and_promotes_the_candidate(served):
    # rather than wait for the next minute, the first run is made due now; the
    # served deployment picks it up, runs the retrain flow and promotes the candidate
    api = served["api"]
    first = scheduled_runs(served, count=1)[0]
    now = datetime.now(UTC).isoformat()
    assert _api("POST", f"{api}/flow_runs/{first['id']}/set_state",
                {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": now}}, "force": True})

    def finished():
        run = _json("GET", f"{api}/flow_runs/{first['id']}") or {}
        assert run.get("state_type") not in ("FAILED", "CRASHED"), served["log"].read_text()[-3000:]
        return run if run.get("state_type") == "COMPLETED" else None

    run = wait_for(finished, 180, "the scheduled run to complete")
    assert run["auto_scheduled"] is True  # created by the scheduler, not by hand
    assert int(served["client"].get_model_version_by_alias("tiny", "champion").version) == served["version"]


def test_the_registered_deployment_runs_on_a_worker_started_anywhere(served, tmp_path):
    """The docs' worker route on a copy of the repository (the tiny
    project's params and stores beside the code): `python -m mirnet_pipeline.flows.deploy
    register` there, then `prefect worker start --pool default` in another
    directory runs the retrain flow in the repository and promotes. The served
    deployment is still there (no name collision), and `prefect deploy --all`
    (prefect.yaml) records the same working directory."""
    api = served["api"]
    repository = tmp_path / "repository"
    repository.mkdir()
    build_tiny_project(repository)
    shutil.copytree(ROOT / "mirnet_pipeline", repository / "mirnet_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("flows", "tasks", "model"):  # the links a checkout has
        (repository / part).symlink_to(f"mirnet_pipeline/{part}")
    shutil.copy(ROOT / "prefect.yaml", repository)
    mlflow.set_tracking_uri(f"sqlite:///{repository / 'mlflow.db'}")
    client = MlflowClient()
    version = register_candidate(client, repository / "mlartifacts", 21.0)
    for pool in ("default", "gpu"):  # what `prefect work-pool create NAME --type process` makes
        _api("POST", f"{api}/work_pools/", {"name": pool, "type": "process"}, accept=(409,))  # 409: exists
    env = {k: v for k, v in served["env"].items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    registered = subprocess.run([sys.executable, "-m", "mirnet_pipeline.flows.deploy", "register"], cwd=repository,
                                env=env,
                                capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    deployment = _api("GET", f"{api}/deployments/name/retrain/{REGISTERED}")
    assert deployment["work_pool_name"] == "default"
    assert (deployment.get("global_concurrency_limit") or {}).get("limit") == 1, deployment
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(repository)}}]
    assert _api("GET", f"{api}/deployments/name/retrain/{SERVED}")["id"] == served["deployment"]["id"]
    assert _api("GET", f"{api}/deployments/name/train/gpu-train")["work_pool_name"] == "gpu"

    run = _api("POST", f"{api}/deployments/{deployment['id']}/create_flow_run",
               {"parameters": {"pull": False, "reproduce": False}})
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "default", "--run-once"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    finished = _api("GET", f"{api}/flow_runs/{run['id']}")
    assert finished["state_type"] == "COMPLETED", (finished["state"], worker.stdout[-3000:], worker.stderr[-3000:])
    assert int(client.get_model_version_by_alias("tiny", "champion").version) == version

    deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=repository,
                              env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert _api("GET", f"{api}/deployments/name/retrain/{REGISTERED}")["pull_steps"] == deployment["pull_steps"]


def _ok(url) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _api(method, url, body=None, accept=()):
    """One call to the Prefect API that must succeed (or answer a status in
    ``accept``): the generous timeout is for a loaded 2-core machine."""
    response = requests.request(method, url, json=body, timeout=120)
    assert response.ok or response.status_code in accept, (method, url, response.status_code, response.text[-2000:])
    return response.json() if response.ok else None


def _json(method, url, body=None):
    try:
        response = requests.request(method, url, json=body, timeout=5)
    except requests.RequestException:
        return None
    return response.json() if response.ok else None
