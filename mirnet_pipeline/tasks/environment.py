"""Offline-by-default settings for the services the pipeline embeds.

``apply_defaults()`` runs before Prefect, MLflow or boto3 are imported (the
``flows`` package calls it first thing); values a user has already set win.
``python -m mirnet_pipeline.tasks.environment`` prints the same defaults as shell ``export``
lines, which ``./pipeline`` evaluates so that every command it runs (``dvc``,
``mlflow ui``, ``prefect server start``) gets them too.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # no telemetry, no phoning home
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
    # Prefect's own temporary server needs time on a loaded 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # quieter TensorFlow start-up
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # MkDocs' notice about its successor, printed at every docs build
    "NO_MKDOCS_2_WARNING": "1",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def shell_exports() -> str:
    """``export KEY="${KEY:-value}"`` lines: the defaults, unless already set."""
    return "".join(f'export {key}="${{{key}:-{value}}}"\n' for key, value in DEFAULTS.items())


if __name__ == "__main__":
    print(shell_exports(), end="")
