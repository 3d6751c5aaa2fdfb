"""The first stage: params.yaml checked before any other stage runs.

    python -m mirnet_pipeline.flows.params

DVC deletes a stage's outputs before it runs the stage's command, so a
stage that found a mistake in params.yaml only after starting would already
have lost its previous results. This stage depends on the whole of
params.yaml and every other stage depends on its output, so ``dvc repro`` and
``dvc exp run`` stop here on a mistake, with one line naming the key, before
any result is touched. The output never changes (it only says that the check
passed), so a valid change of params.yaml re-runs nothing else by itself.
"""

from __future__ import annotations

import sys

from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import ConfigError, load_params
from mirnet_pipeline.tasks.storage import atomic_write_text

PASSED = "params.yaml passed the checks of tasks/config.py\n"


def main() -> int:
    try:
        params = load_params()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(artifacts.PARAMS_CHECKED, PASSED)
    print(f"params.yaml: valid (profile {params.profile}, {len(params.variants)} variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
