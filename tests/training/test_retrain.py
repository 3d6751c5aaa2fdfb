"""Promotion: the first candidate is promoted, a worse or barely better one is
refused, a clearly better one replaces the champion; the retrain flow records
its decision and never runs twice at once."""

from __future__ import annotations

import mlflow
import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

from mirnet_pipeline.tasks.training.promotion import decide_and_promote
from tests.training.tiny_project import register_candidate


@pytest.fixture
def registry(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("promotion", artifact_location=(tmp_path / "art").as_uri())
    client = MlflowClient()
    client.create_registered_model("tiny")

    def new_candidate(validation_psnr: float) -> int:
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "eval.tid2013.validation.output_psnr", validation_psnr)
        client.set_terminated(run.info.run_id)
        version = client.create_model_version("tiny", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("tiny", "candidate", version.version)
        return int(version.version)

    return client, new_candidate


def champion(client):
    return int(client.get_model_version_by_alias("tiny", "champion").version)


def test_first_candidate_is_promoted_then_the_margin_decides(registry):
    client, new_candidate = registry
    first = new_candidate(25.0)
    decision = decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client)
    assert decision.promoted and decision.reason.startswith("first model")
    assert champion(client) == first
    again = decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client)  # a retrain that changed nothing
    assert not again.promoted and "already is the champion" in again.reason
    assert client.get_model_version("tiny", first).tags["promotion"] == "promoted"  # the champion's tag stays true

    barely = new_candidate(25.05)  # better, but by less than the margin
    decision = decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client)
    assert not decision.promoted and "only +0.050 dB" in decision.reason
    assert champion(client) == first
    assert client.get_model_version("tiny", barely).tags["promotion"] == "refused"

    worse = new_candidate(24.0)
    assert not decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client).promoted
    assert champion(client) == first and worse != first

    better = new_candidate(25.3)
    decision = decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client)
    assert decision.promoted and decision.champion_version == first
    assert decision.candidate_psnr - decision.champion_psnr == pytest.approx(0.3)
    assert champion(client) == better
    run = client.get_run(client.get_model_version("tiny", better).run_id)
    assert run.data.tags["promotion"] == "promoted"
    assert client.get_model_version("tiny", first).tags["promotion"] == f"replaced by version {better}"


def test_the_evaluation_linked_to_the_logged_model_decides(registry):
    """The evaluate flow logs its figures in a run of its own, linked to the
    version's logged model; promotion reads them there, not the training run's."""
    client, _ = registry
    experiment = client.get_experiment_by_name("promotion").experiment_id
    training = client.create_run(experiment)
    client.log_metric(training.info.run_id, "final_val_psnr", 20.0)  # the per-epoch figure on crops
    client.set_terminated(training.info.run_id)
    logged = client.create_logged_model(experiment, name="model", source_run_id=training.info.run_id)
    version = client.create_model_version("tiny", source=f"models:/{logged.model_id}", run_id=training.info.run_id)
    client.set_registered_model_alias("tiny", "candidate", version.version)
    for psnr in (26.0, 26.5):  # evaluated twice (say, on more images): the latest counts
        with mlflow.start_run(experiment_id=experiment, run_name="evaluate tiny"):
            mlflow.log_metrics({"eval.tid2013.validation.output_psnr": psnr}, model_id=logged.model_id)
    decision = decide_and_promote("tiny", "tid2013", margin_db=0.1, client=client)
    assert decision.promoted and decision.candidate_psnr == 26.5
    assert "eval.tid2013.validation.output_psnr" not in client.get_run(training.info.run_id).data.metrics


def test_the_retrain_flow_records_its_decision_and_refuses_to_run_twice(tiny_project, prefect_server):
    from prefect.client.orchestration import get_client

    from mirnet_pipeline.flows.retrain import RetrainRunning, retrain
    from mirnet_pipeline.tasks.config import load_params

    params = load_params()
    mlflow.set_tracking_uri(params.mlflow.tracking_uri)  # the project's store
    project_client = MlflowClient()
    version = register_candidate(project_client, tiny_project / "art", 21.5)

    decision = retrain(params=params, pull=False, reproduce=False)
    assert decision["promoted"] and decision["candidate_psnr"] == 21.5
    assert project_client.get_model_version_by_alias("tiny", "champion").version == version

    import asyncio

    async def artifact():
        async with get_client() as prefect:
            return await prefect.read_latest_artifacts()

    latest = {a.key: a for a in asyncio.run(artifact())}
    assert "promoted" in latest["promotion-decision"].data

    with FileLock(".retrain.lock"):
        with pytest.raises(RetrainRunning, match="another retrain is running"):
            retrain(params=params, pull=False, reproduce=False)
