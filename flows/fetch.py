"""Flow: fetch datasets into ``data/raw/<name>``, validated, whole or not at all.

    python -m flows.fetch tid2013
    python -m flows.fetch lol
"""

from __future__ import annotations

import sys

from prefect import flow

from tasks.config import DataSettings, load_params
from tasks.data.datasets import DATASETS, fetch_task


@flow(name="fetch")
def fetch(names: list[str], settings: DataSettings | None = None) -> list[str]:
    settings = settings or load_params().data
    return [fetch_task(name, settings) for name in names]


if __name__ == "__main__":
    fetch(sys.argv[1:] or list(DATASETS))
