"""Offline-by-default settings for the services the pipeline embeds.

``apply_defaults()`` runs before Prefect, MLflow or boto3 are imported (the
``flows`` package calls it first thing); values a user has already set win.
``python -m mirnet_pipeline.tasks.environment`` prints the same defaults as shell ``export``
lines, which ``./pipeline`` evaluates so that every command it runs (``dvc``,
``mlflow ui``, ``prefect server start``) gets them too.

``apply_defaults()`` also quiets TensorFlow's start-up: TensorFlow's C++ code
logs a few lines while it is imported, before it reads
``TF_CPP_MIN_LOG_LEVEL`` (absl's "All log messages before
absl::InitializeLog()" and oneDNN's notice), so the import runs with its
standard error captured and everything else it printed is passed on.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

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
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


# what TensorFlow's C++ start-up prints whatever TF_CPP_MIN_LOG_LEVEL says
START_UP_NOISE = (
    re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(rb"I0000 [^\]]*\] oneDNN custom operations are on\."),
)


@contextlib.contextmanager
def filtered_stderr(noise=START_UP_NOISE):
    """Standard error (the file descriptor, so C++ output too) into a
    temporary file for the block; afterwards every line that matches none of
    ``noise`` goes on to the real standard error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not any(pattern.match(line) for pattern in noise)]
            if kept:
                os.write(2, b"".join(kept))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and imports it inside
    ``filtered_stderr`` (once: it leaves ``sys.meta_path`` when used)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)


def shell_exports() -> str:
    """``export KEY="${KEY:-value}"`` lines: the defaults, unless already set."""
    return "".join(f'export {key}="${{{key}:-{value}}}"\n' for key, value in DEFAULTS.items())


if __name__ == "__main__":
    print(shell_exports(), end="")
