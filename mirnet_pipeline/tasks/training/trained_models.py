"""Loading trained models, the one way every stage does it: from a ``.keras``
file or from the MLflow registry (``models:/<name>@<alias>``,
``models:/<name>/<version>``), with the project's custom layers registered and
TensorFlow tuned for this machine."""

from __future__ import annotations

from pathlib import Path

from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.storage import file_sha256


class ModelNotFound(UsageError):
    """The model file or registry entry does not exist; the message names it."""


def registry_reference(uri: str) -> tuple[str, str | None, str | None] | None:
    """``(name, alias, version)`` of ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` (one of alias and version is None); None when
    ``uri`` is not a registry URI (a file); ``ValueError`` when it is malformed."""
    if not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/")
    name, at, alias = rest.partition("@")
    if at and name and alias:
        return name, alias, None
    registered, _, version = rest.rpartition("/")
    if not at and registered and version.isdigit():
        return registered, None, version
    raise UsageError(f"model {uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def registered_version(client, uri: str):
    """The registry's ModelVersion that ``uri`` names (MlflowException if none)."""
    name, alias, version = registry_reference(uri)
    return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)


def load_model(uri: str | Path):
    """``(model, version)``: the Keras model and a version string, the registry's
    ``<name>/<version>`` or ``sha256:<first 12 hex digits>`` of the file."""
    import keras

    import mirnet_pipeline.model as _registered  # noqa: F401  (custom layers, losses, metrics)
    from mirnet_pipeline.tasks.tuning import tune_for_this_machine

    tune_for_this_machine()
    uri = str(uri)
    if uri.startswith("models:/"):
        import mlflow

        client, found = _found(uri)
        label = f"{found.name}/{found.version}"
        keras_file = _registered_keras_file(client, found)
        if keras_file is None:  # versions logged before the .keras file was stored beside the SavedModel
            return mlflow.keras.load_model(uri), label
        return keras.saving.load_model(keras_file), label
    path = Path(uri)
    if not path.is_file():
        raise ModelNotFound(f"{uri}: no such model file")
    return keras.saving.load_model(path), f"sha256:{file_sha256(path)[:12]}"


def _found(uri: str):
    """(client, the registry's ModelVersion that ``uri`` names); ModelNotFound naming the store if none."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        return client, registered_version(client, uri)
    except MlflowException as exc:
        raise ModelNotFound(f"{uri}: not in the MLflow registry at {mlflow.get_tracking_uri()} ({exc})") from None


def logged_model_id(version) -> str | None:
    """The id of the logged model (``m-...``) a registry version was made from:
    its ``model_id``, which the SQL store leaves empty, or its source
    ``models:/m-...``; None for a version made from a run's path."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = getattr(version, "source", "") or ""
    model_id = source.removeprefix("models:/")
    return model_id if source.startswith("models:/m-") and "/" not in model_id else None


def _registered_keras_file(client, version) -> str | None:
    """The local copy of the ``.keras`` file stored with a model version
    (``tasks.training.tracking.log_and_register_model``), or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_id = logged_model_id(version)
    if model_id is None:
        return None
    location = client.get_logged_model(model_id).artifact_location
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=f"{location.rstrip('/')}/model.keras")
    except (MlflowException, OSError):
        return None


def _check_logged(client, version, uri: str) -> None:
    """``ModelNotFound`` naming the version and where its files should be when
    the model it was logged as (its ``MLmodel``) is missing: an artifact store
    moved, cleaned or copied without its files."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_id = logged_model_id(version)
    location = (client.get_logged_model(model_id).artifact_location if model_id else version.source).rstrip("/")
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel")
    except (MlflowException, OSError):
        raise ModelNotFound(f"{uri}: version {version.version} of {version.name} has lost its files: neither "
                            f"model.keras nor MLmodel is at {location} (the artifact store was moved or cleaned; "
                            "train and register the model again)") from None


# what runs a registry version on each runtime, in its logged model's artifacts
# (the exports are stored there by mirnet-export; openvino needs its .bin beside the .xml)
REGISTRY_FILES = {"keras": ("model.keras", ""), "onnxruntime": ("exports/model.onnx", ""),
                  "openvino": ("exports/openvino", "model.xml"), "tensorflow": ("exports/saved_model", "")}


def runnable_file(uri: str | Path, runtime: str | None = None) -> tuple[Path | None, str | None]:
    """``(local path, registry label)`` of what runs ``uri`` on ``runtime``: a
    file is itself (label None); a registry version's file for the runtime
    (keras, the default: its ``.keras`` file; the others: its exports) is
    downloaded, labelled ``<name>/<version>``. The path is None for a Keras
    version logged before the ``.keras`` file was stored with it."""
    uri = str(uri)
    if not uri.startswith("models:/"):
        return Path(uri), None
    import mlflow
    from mlflow.exceptions import MlflowException

    client, version = _found(uri)
    label = f"{version.name}/{version.version}"
    runtime = runtime or "keras"
    if runtime == "keras":
        keras_file = _registered_keras_file(client, version)
        if keras_file is None:
            _check_logged(client, version, uri)
        return (Path(keras_file) if keras_file else None), label
    stored, inside = REGISTRY_FILES[runtime]
    model_id = logged_model_id(version)
    try:
        if model_id is None:
            raise OSError("no logged model")
        location = client.get_logged_model(model_id).artifact_location.rstrip("/")
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{stored}"))
    except (MlflowException, OSError):
        raise ModelNotFound(f"{uri}: version {version.version} has no {runtime} export "
                            f"(store one with: mirnet-export {uri} FOLDER)") from None
    return (local / inside if inside else local), label
