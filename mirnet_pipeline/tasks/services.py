"""Local services the pipeline starts for itself, and the rule that nothing it
starts outlives it.

``prefect_server()`` runs Prefect's own server on 127.0.0.1 for the length of a
``with`` block (unless ``PREFECT_API_URL`` already names one) and stops it
afterwards. ``start_child()`` starts a process in its own process group that
the kernel stops when its parent dies, even by ``SIGKILL``, and
``stop_child()`` ends that whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the process-group clean-up still applies
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def start_child(command: list[str], **popen) -> subprocess.Popen:
    """``subprocess.Popen`` in a new process group that dies with this process."""
    parent = os.getpid()
    return subprocess.Popen(command, start_new_session=True, preexec_fn=lambda: _die_with_parent(parent), **popen)


def stop_child(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the child's whole process group, SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # members of the group that outlived its leader
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Prefect server services (prefect.settings.models.server.services): only the
# task run recorder runs in the server the pipeline starts for itself
SERVER_SERVICES = {f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED": "true" if name == "task_run_recorder" else "false"
                   for name in ("cancellation_cleanup", "db_vacuum", "event_persister", "event_logger", "foreman",
                                "late_runs", "scheduler", "pause_expirations", "repossessor", "cleanup_reconciler",
                                "task_run_recorder", "triggers")}


@contextlib.contextmanager
def prefect_server(log_file: str | os.PathLike, timeout: float = 180.0):
    """Yield the API URL of a Prefect server on 127.0.0.1, started here unless
    ``PREFECT_API_URL`` is set; ``PREFECT_API_URL`` points at it meanwhile."""
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        # the API the flows report to and the one service that records their task
        # runs (the UI's Task Runs tab); no scheduler or other loops competing
        # with the pipeline for the CPU
        server = start_child([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                              "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **SERVER_SERVICES})
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with status {server.returncode}; see {log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {log_file}")
            time.sleep(0.25)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop_child(server)
