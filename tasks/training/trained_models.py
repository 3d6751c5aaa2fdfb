"""Loading trained models, the one way every stage does it: from a ``.keras``
file or from the MLflow registry (``models:/<name>@<alias>``,
``models:/<name>/<version>``), with the project's custom layers registered and
TensorFlow tuned for this machine."""

from __future__ import annotations

from pathlib import Path

from tasks.storage import file_sha256


class ModelNotFound(FileNotFoundError):
    """The model file or registry entry does not exist; the message names it."""


def load_model(uri: str | Path):
    """``(model, version)``: the Keras model and a version string, the registry's
    ``<name>/<version>`` or ``sha256:<first 12 hex digits>`` of the file."""
    import keras

    import model as _registered  # noqa: F401  (custom layers, losses, metrics)
    from tasks.runtime import tune_for_this_machine

    tune_for_this_machine()
    uri = str(uri)
    if uri.startswith("models:/"):
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name, _, selector = uri.removeprefix("models:/").partition("@")
        try:
            if selector:
                version = MlflowClient().get_model_version_by_alias(name, selector).version
            else:
                name, _, version = uri.removeprefix("models:/").rpartition("/")
            return mlflow.keras.load_model(uri), f"{name}/{version}"
        except MlflowException as exc:
            raise ModelNotFound(f"{uri}: not in the MLflow registry at {mlflow.get_tracking_uri()} ({exc})") from None
    path = Path(uri)
    if not path.is_file():
        raise ModelNotFound(f"{uri}: no such model file")
    return keras.saving.load_model(path), f"sha256:{file_sha256(path)[:12]}"
