"""Prefect flows, one per pipeline stage, each runnable as ``python -m flows.<name>``."""

from tasks.environment import apply_defaults

apply_defaults()
