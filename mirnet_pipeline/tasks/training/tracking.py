"""MLflow for the pipeline: the embedded default is a SQLite tracking store
(``sqlite:///mlflow.db``) with a local artifact root (``mlartifacts/``); any
tracking server works by URI (``mlflow.tracking_uri`` in params.yaml or
``MLFLOW_TRACKING_URI``)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from mirnet_pipeline.tasks.config import MlflowSettings

CANDIDATE, CHAMPION = "candidate", "champion"


def configure(settings: MlflowSettings) -> str:
    """Point MLflow at the tracking store and the experiment; returns the experiment id.

    Safe when several trainings start at once on a fresh machine: the first
    one creates the SQLite schema and the experiment while the others wait."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        experiment = mlflow.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            follow_a_moved_checkout(uri, experiment.artifact_location, settings.artifact_location)
        if experiment is None:
            location = settings.artifact_location
            if "://" not in location:
                location = Path(location).resolve().as_uri()
            try:
                mlflow.create_experiment(settings.experiment, artifact_location=location)
            except mlflow.exceptions.MlflowException:  # another process on a shared server won the race
                if mlflow.get_experiment_by_name(settings.experiment) is None:
                    raise
        return mlflow.set_experiment(settings.experiment).experiment_id


# where a SQLite store records artifact locations (MLflow resolves a relative
# location to an absolute one when it stores it)
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("model_versions", "source"), ("model_versions", "storage_location"),
                    ("logged_models", "artifact_location"))


def follow_a_moved_checkout(uri: str, recorded: str, configured: str) -> bool:
    """Rewrite the artifact locations of a local SQLite store whose checkout
    was moved or copied: the experiment's recorded location no longer exists,
    the configured local one (relative to the working directory) does, so
    every location under the old one is moved under the new one. Returns
    whether anything was rewritten; a tracking server, a remote artifact
    store or an unmoved checkout is left as it is."""
    import sqlite3
    import urllib.parse

    if not uri.startswith("sqlite:///") or "://" in configured or not recorded.startswith("file://"):
        return False
    old, new = Path(urllib.parse.urlparse(recorded).path), Path(configured).resolve()
    if old == new or old.exists() or not new.is_dir():
        return False
    old_uri, new_uri = old.as_uri(), new.as_uri()
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db, db:
        for table, column in LOCATION_COLUMNS:
            if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                for before, after in ((old_uri, new_uri), (str(old), str(new))):  # URIs and plain paths
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                               f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                               (after, len(before) + 1, before, len(before) + 1, before + "/"))
    return True


def store_lock(uri: str):
    """An inter-process lock beside a local SQLite store (MLflow creates its
    schema on first connection, and two processes doing it at once fail with
    "table alembic_version already exists"); nothing for a tracking server."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(uri.removeprefix("sqlite:///") + ".lock")


@contextlib.contextmanager
def run(settings: MlflowSettings, run_name: str, run_id_file: Path, tags: dict):
    """An MLflow run that survives a crash: its id is kept in ``run_id_file``
    until the run completes, so a resumed training continues the same run."""
    configure(settings)
    # CPU, memory, disk (and GPU) utilisation as system/* metrics
    mlflow.set_system_metrics_sampling_interval(settings.system_metrics_interval)
    mlflow.set_system_metrics_samples_before_logging(1)
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    if run_id is not None:
        try:
            MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None
    active = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, log_system_metrics=True)
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    run_id_file.write_text(active.info.run_id)
    mlflow.set_tags(tags)
    try:
        yield active
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()
    run_id_file.unlink(missing_ok=True)


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted MLflow params."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def log_params(params: dict[str, str]) -> None:
    existing = MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    new = {k: v for k, v in params.items() if k not in existing}  # a resumed run keeps its params
    if new:
        mlflow.log_params(new)


def log_metrics(metrics: dict, step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_epoch(row: dict) -> None:
    if mlflow.active_run() is not None:
        epoch = int(row["epoch"])
        log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)


def log_shard_sets(sets: dict[str, tuple[str, Path, str]]) -> None:
    """The shard sets a run reads as MLflow dataset inputs, ``{context: (name,
    folder, manifest SHA-256)}``: the run's Datasets tab lists them, with the
    manifest's hash as digest, and runs can be searched by them."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    for context, (name, folder, sha256) in sets.items():
        dataset = MetaDataset(LocalArtifactDatasetSource(str(Path(folder).resolve())), name=name, digest=sha256[:16])
        mlflow.log_input(dataset, context=context, tags={"manifest_sha256": sha256})


def log_artifact(path: Path) -> None:
    mlflow.log_artifact(str(path))


def image_signature(channels: int = 3):
    """Any batch of float32 images of any height and width in, the same shape out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    images = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, channels))])
    return ModelSignature(inputs=images, outputs=images)


def provenance(variant: str) -> dict[str, str]:
    """What produced a model version: the variant, the git commit and, under
    ``dvc exp run``, the experiment's name and baseline revision (DVC passes
    them to every stage it runs as ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV``)."""
    tags = {"variant": variant, "git_commit": git_commit()}
    for key, variable in (("dvc.experiment", "DVC_EXP_NAME"), ("dvc.baseline_rev", "DVC_EXP_BASELINE_REV")):
        if os.environ.get(variable):
            tags[key] = os.environ[variable]
    return tags


class KerasFlavour:
    """MLflow's Keras flavour (``mlflow.keras.log_model`` is ``Model.log`` with
    it), its model folder made first: its ``save_model`` writes the input
    example before it creates the folder (mlflow/mlflow#16183)."""

    @staticmethod
    def save_model(path, **options):
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **options)


def log_and_register_model(model, name: str, keras_file: Path, tags: dict[str, str], description: str = "",
                           input_example=None) -> int:
    """Log ``model``, register it as a new version of the registered model
    ``name`` with ``tags`` and ``description`` (the registered model takes the
    description too: its newest version's), and point the alias ``candidate``
    at it. ``input_example``: a small batch of images MLflow stores with the
    model (and runs it on once, to check that the logged model serves).

    The logged model is MLflow's Keras flavour saved as a SavedModel of the
    model wrapped in ``model.AnySize``: ``mlflow.pyfunc.load_model`` and
    ``mlflow.keras.load_model`` then need neither this project's code (a
    ``.keras`` file names its custom layers, which only an import of ``model``
    registers) nor images of one size (the signature leaves batch, height and
    width free and the graph pads to the size multiple). ``keras_file`` is
    stored beside it for the project's own loader, which needs the Keras model
    itself (tiling, precision). Under JAX or PyTorch, which have no SavedModel
    exporter of their own, the flavour holds the ``.keras`` file."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    import keras

    from mirnet_pipeline.model import AnySize

    requirements = []
    for package in ("keras", "tensorflow-cpu", "tensorflow", "numpy"):
        try:
            requirements.append(f"{package}=={installed(package)}")
        except PackageNotFoundError:
            continue
    exported = keras.backend.backend() == "tensorflow"
    signature = image_signature(model.input_shape[-1])
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' exporter prints every captured variable
        info = mlflow.models.Model.log(
            artifact_path=None, name="model", flavor=KerasFlavour, model=AnySize(model) if exported else model,
            signature=signature, save_exported_model=exported, pip_requirements=requirements,
            input_example=input_example)
    client = MlflowClient()
    client.log_model_artifact(info.model_id, str(keras_file))
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    describe_version(name, version.version, description)
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return int(version.version)


def describe_version(name: str, version: str | int, description: str) -> None:
    """Set the description of a registry version and of its registered model."""
    if description:
        client = MlflowClient()
        client.update_model_version(name, str(version), description=description)
        client.update_registered_model(name, description=description)


def git_commit(root: Path = Path(".")) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def training_record(variant: str, settings=None) -> tuple[dict, object | None]:
    """``(record, version)`` for a variant trained by this project: what
    training wrote to ``reports/<variant>/mlflow.json`` (run id, registered
    model and version; empty when it has not been trained) and that registry
    version (None when the record names none, or the registry no longer has it,
    as after a reset). ``settings``: the MLflow settings to configure before
    the registry is asked (None: MLflow is configured already)."""
    import json

    from mlflow.exceptions import MlflowException

    from mirnet_pipeline.tasks import artifacts

    path = artifacts.variant_reports(variant) / "mlflow.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    if not (record.get("registered_model") and record.get("version")):
        return record, None
    if settings is not None:
        configure(settings)
    try:
        return record, MlflowClient().get_model_version(record["registered_model"], str(record["version"]))
    except MlflowException:
        return record, None
