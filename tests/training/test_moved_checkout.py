"""A checkout moved (or copied) elsewhere keeps its MLflow store working: the
SQLite store records absolute artifact locations, which ``tracking.configure``
follows to the checkout's new place."""

from __future__ import annotations

import shutil
import sqlite3

import mlflow
from mlflow.tracking import MlflowClient

from mirnet_pipeline.tasks.config import MlflowSettings
from mirnet_pipeline.tasks.training.tracking import configure, follow_a_moved_checkout


def settings_in(folder) -> MlflowSettings:
    return MlflowSettings(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_location="mlartifacts",
                          experiment="moving")


def test_a_moved_checkout_finds_its_runs_and_model_versions(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "elsewhere" / "second"
    first.mkdir()
    monkeypatch.chdir(first)
    configure(settings_in(first))
    (first / "note.txt").write_text("kept")
    with mlflow.start_run() as run:
        mlflow.log_artifact("note.txt")
    client = MlflowClient()
    client.create_registered_model("moving")
    client.create_model_version("moving", source=f"{run.info.artifact_uri}/note.txt", run_id=run.info.run_id)
    neighbour = f"{(first / 'mlartifacts2').as_uri()}/x"  # shares the prefix, is not under the folder
    client.create_model_version("moving", source=neighbour)
    # configured again where it is: nothing to follow
    assert not follow_a_moved_checkout(f"sqlite:///{first / 'mlflow.db'}",
                                       client.get_experiment_by_name("moving").artifact_location, "mlartifacts")

    second.parent.mkdir()
    shutil.move(first, second)
    monkeypatch.chdir(second)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a new shell in the new place
    configure(settings_in(second))
    client = MlflowClient()
    new = (second / "mlartifacts").as_uri()
    assert client.get_experiment_by_name("moving").artifact_location == new
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(f"{new}/")
    version = client.get_model_version("moving", "1")
    assert version.source.startswith(f"{new}/")
    with sqlite3.connect(second / "mlflow.db") as db:  # where the registry copies from (not in its API)
        stored = [row[0] for row in db.execute("SELECT storage_location FROM model_versions ORDER BY version")]
    assert stored[0].startswith(f"{new}/") and stored[1] == neighbour, stored
    assert client.get_model_version("moving", "2").source == neighbour
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt",
                                                     dst_path=str(tmp_path / "download"))
    assert open(downloaded).read() == "kept"
