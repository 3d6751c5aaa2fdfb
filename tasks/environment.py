"""Offline-by-default settings for the services the pipeline embeds.

``apply_defaults()`` runs before Prefect, MLflow or boto3 are imported (the
``flows`` package calls it first thing); values a user has already set win.
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
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
