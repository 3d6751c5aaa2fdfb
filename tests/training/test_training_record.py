"""``tracking.training_record``: the registry version a variant's
training recorded, as evaluation and export look it up."""

from __future__ import annotations

import json

from mirnet_pipeline.tasks.config import MlflowSettings
from mirnet_pipeline.tasks.training.tracking import training_record


def test_the_recorded_version_is_found_and_a_missing_one_is_none(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    settings = MlflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_location=str(tmp_path / "mlartifacts"))
    assert training_record("mirnet", settings) == ({}, None)  # never trained
    assert not (tmp_path / "mlflow.db").exists()  # and MLflow left alone

    reports = tmp_path / "reports" / "mirnet"
    reports.mkdir(parents=True)
    record = {"run_id": "r1", "registered_model": "mirnet", "version": 1}
    (reports / "mlflow.json").write_text(json.dumps(record))
    assert training_record("mirnet", settings) == (record, None)  # the registry has no such version

    client = MlflowClient()
    client.create_registered_model("mirnet")
    client.create_model_version("mirnet", source=str(tmp_path / "model"))
    found, version = training_record("mirnet")  # configured already
    assert found == record and (version.name, str(version.version)) == ("mirnet", "1")
