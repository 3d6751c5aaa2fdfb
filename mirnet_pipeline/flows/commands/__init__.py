"""The command-line entry points, one module each: ``mirnet-enhance``
(``enhance``), ``mirnet-export`` (``export``) and ``mirnet-summary``
(``summary``), each also ``python -m mirnet_pipeline.flows.commands.<name>``.

A command checks what the user gave before Prefect, Keras or TensorFlow are
imported, so a mistake costs a second: a ``UsageError`` (``tasks/errors.py``)
ends in one line, ``<command>: error: <message>``, and exit status 2. Then it
runs its flow or task. Commands import flows and tasks; nothing imports a
command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mirnet_pipeline.tasks.errors import UsageError


class HelpWithDefaults(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's default, where it has one and its help
    does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, "", [], argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


def usage_error(prog: str, exc: UsageError) -> int:
    """Print ``exc`` as the one line of a mistake; returns exit status 2."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def tracking_uri(given: str | None) -> str | None:
    """The MLflow registry of ``models:/`` URIs: ``given``, else
    ``MLFLOW_TRACKING_URI``, else the project's own store."""
    from mirnet_pipeline.tasks.config import project_tracking_uri

    return given or os.environ.get("MLFLOW_TRACKING_URI") or project_tracking_uri()


def check_registered(uri: str, store: str | None, runtime: str | None = None) -> None:
    """The registry at ``store`` (MLflow's default: None) holds ``models:/<name>@<alias>``
    or ``models:/<name>/<version>``, and the files that run it on ``runtime``
    are there and sound (``UsageError`` naming the version and what is missing)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mirnet_pipeline.tasks.export.runtimes import model_files
    from mirnet_pipeline.tasks.training.trained_models import registered_version, runnable_file

    store = store or mlflow.get_tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise UsageError(f"model {uri}: there is no MLflow store at {store} (train a model first, "
                         "or give --tracking-uri)")
    try:
        registered_version(MlflowClient(tracking_uri=store), uri)
    except MlflowException:
        raise UsageError(f"model {uri}: not in the MLflow registry at {store} "
                         "(check the name and alias in the MLflow UI, or give --tracking-uri)") from None
    path, _ = runnable_file(uri, runtime)
    if path is not None:
        model_files(path)
