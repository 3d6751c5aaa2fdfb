"""`dvc repro` of the data stages, offline, from a fresh copy of the repository:
it runs, a second run is a no-op, and a new crop size re-runs only the shards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def test_dvc_repro_offline_is_idempotent_and_reruns_only_what_changed(tmp_path):
    repo = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["shards"]["crops_per_pair"] = 2  # smaller shards: this test is about the pipeline
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo, env)
    dvc = [sys.executable, "-m", "dvc"]

    first = run(dvc + ["repro", "fetch", "index", "shards"], repo, env)
    for stage in ("fetch@tid2013", "fetch@lol", "index", "shards"):
        assert f"Running stage '{stage}'" in first
    counts = pd.read_parquet(repo / "data/prepared/tid2013.parquet").split.value_counts().to_dict()
    assert counts == {"train": 360, "validation": 120, "test": 120}
    assert (repo / "data/shards/tid2013/train/manifest.json").exists()

    second = run(dvc + ["repro", "fetch", "index", "shards"], repo, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date." in second

    params["shards"]["crop_size"] = 96
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(dvc + ["repro", "fetch", "index", "shards"], repo, env)
    assert "Running stage 'shards'" in third
    for stage in ("fetch@tid2013", "fetch@lol", "index"):
        assert f"Running stage '{stage}'" not in third
    manifest = yaml.safe_load((repo / "data/shards/tid2013/train/manifest.json").read_text())
    assert manifest["crop_size"] == 96 and manifest["records"] == 720
