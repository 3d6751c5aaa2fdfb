"""Prefect flows, one per pipeline stage, each runnable as ``python -m mirnet_pipeline.flows.<name>``.

Flows only orchestrate: the work is in ``tasks`` (plain functions, no Prefect);
a flow module wraps what it calls as ``@task`` itself."""

import contextlib

from mirnet_pipeline.tasks.environment import apply_defaults

apply_defaults()


@contextlib.contextmanager
def prefect_api():
    """Run flows against ``PREFECT_API_URL`` when it is set, else against a
    Prefect server of this process's own that dies with it: the temporary
    server Prefect starts by itself outlives a parent that is killed."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from mirnet_pipeline.tasks.services import prefect_server

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with prefect_server(PREFECT_HOME.value() / "server.log") as url, temporary_settings({PREFECT_API_URL: url}):
        try:
            yield url
        finally:
            # the run's last log lines and events, while the server is still there
            APILogWorker.drain_all(timeout=5)
            EventsWorker.drain_all(timeout=5)
