"""The offline defaults: one table, applied in Python and exported by ./pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mirnet_pipeline.tasks.environment import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def exported(env: dict) -> dict:
    script = 'eval "$("$PYTHON" -m mirnet_pipeline.tasks.environment)"; env'
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env={**env, "PYTHON": sys.executable},
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_shell_gets_every_default_and_a_users_setting_wins():
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    assert {k: exported(env)[k] for k in DEFAULTS} == DEFAULTS
    assert exported({**env, "DO_NOT_TRACK": "mine"})["DO_NOT_TRACK"] == "mine"


def test_the_pipeline_script_takes_its_defaults_from_the_table():
    script = (ROOT / "pipeline").read_text()
    assert "python -m mirnet_pipeline.tasks.environment" in script
    assert not [key for key in DEFAULTS if f"export {key}" in script]  # written once
