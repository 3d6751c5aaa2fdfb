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


QUIET = """
import os, sys
from mirnet_pipeline.tasks.environment import apply_defaults
apply_defaults()
print("before", file=sys.stderr, flush=True)
import tensorflow
os.write(2, b"after\\n")
"""


def test_tensorflow_starts_without_its_cpp_start_up_lines():
    """absl's and oneDNN's start-up lines are dropped; what else goes to
    standard error during and after the import still does."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    quiet = subprocess.run([sys.executable, "-c", QUIET], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.splitlines() == ["before", "after"], quiet.stderr
    plain = subprocess.run([sys.executable, "-c", QUIET.replace("apply_defaults()", "")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert "oneDNN custom operations are on" in plain.stderr  # what it drops, left alone


def test_command_help_shows_the_defaults():
    done = subprocess.run([sys.executable, "-m", "mirnet_pipeline.flows.commands.enhance", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    text = " ".join(done.stdout.split())
    for shown in ("--tile TILE larger images go through the model in tiles (default: 512)",
                  "--precision {float32,bfloat16,float16}", "(default: float32)", "--workers WORKERS I/O threads "
                  "per chunk (default: 4)", "--chunk-size CHUNK_SIZE images per chunk (one Prefect task) "
                  "(default: 200)"):
        assert shown in text, shown


def test_what_tools_write_into_the_checkout_is_ignored_by_git():
    paths = ["dvc_plots/index.html", "site/index.html", ".ruff_cache/x", "mlflow.db", "exports/mirnet/model.onnx"]
    done = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == paths
