"""The whole demo DAG with `dvc repro`, offline, from a fresh copy of the
repository: every stage runs, the LoL model beats the do-nothing baseline,
MLflow has a run and a registered candidate per variant, a second `dvc repro`
is a no-op, and a changed parameter invalidates only its stage and what follows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def fresh_copy(repo: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "dvc.lock").unlink(missing_ok=True)


def changed_stages(dvc, repo, env) -> set[str]:
    status = json.loads(run(dvc + ["status", "--json"], repo, env))
    return set(status)


def edit_params(repo: Path, change) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_the_demo_dag_runs_offline_and_dvc_tracks_it(tmp_path):
    repo = tmp_path / "clone"
    fresh_copy(repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, repo, env)
    dvc = [sys.executable, "-m", "dvc"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    variants = list(params["variants"])

    first = run(dvc + ["repro"], repo, env)
    stages = ["fetch@tid2013", "fetch@lol", "index", "shards", *[f"train@{v}" for v in variants],
              "evaluate", "enhance", "model_zoo"]
    for stage in stages:
        assert f"Running stage '{stage}'" in first, stage

    # the research's splits on the full-size sample
    import pandas as pd

    counts = pd.read_parquet(repo / "data/prepared/tid2013.parquet").split.value_counts().to_dict()
    assert counts == {"train": 360, "validation": 120, "test": 120}
    counts = pd.read_parquet(repo / "data/prepared/lol.parquet").split.value_counts().to_dict()
    assert counts == {"train": 300, "validation": 185, "test": 15}

    # the demo's low-light model beats doing nothing, by a clear margin
    evaluation = json.loads((repo / "reports/evaluation/metrics.json").read_text())
    lol = evaluation["mirnet_lol"]["lol"]["validation"]
    assert lol["output_psnr"] > lol["input_psnr"] + 2.0, lol
    assert set(evaluation["mirnet_lol"]) == {"lol", "tid2013"}  # the cross-dataset experiment
    assert "| mirnet_lol | lol | validation |" in (repo / "reports/comparison.md").read_text()

    # the last stage enhanced a sample folder and measured it against the references
    enhanced = pd.read_parquet(repo / "data/enhanced/lol_eval15/metrics.parquet")
    assert len(enhanced) == 15 and (enhanced.status == "ok").all()
    assert enhanced.psnr.notna().all()
    assert (enhanced.after_mean_luminance > enhanced.before_mean_luminance).mean() > 0.5

    # one finished MLflow run and a registered candidate per variant
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("mirnet-pipeline").experiment_id])
    assert sorted(r.data.tags["variant"] for r in runs) == sorted(variants)
    assert all(r.info.status == "FINISHED" for r in runs)
    for variant in variants:
        assert int(client.get_model_version_by_alias(variant, "candidate").version) == 1
        info = json.loads((repo / "reports" / variant / "mlflow.json").read_text())
        dataset = params["variants"][variant]["dataset"]
        assert f"eval.{dataset}.validation.output_psnr" in client.get_run(info["run_id"]).data.metrics

    second = run(dvc + ["repro"], repo, env)
    assert "Running stage" not in second

    # a new learning rate invalidates the training stages only; evaluation and
    # enhancement depend on the models they write, so they follow
    edit_params(repo, lambda p: p["train"].update(learning_rate=2e-4))
    assert changed_stages(dvc, repo, env) == {f"train@{v}" for v in variants}
    dry = run(dvc + ["repro", "--dry"], repo, env)
    for variant in variants:
        assert f"Running stage 'train@{variant}'" in dry
    for stage in ("fetch@tid2013", "fetch@lol", "index", "shards", "model_zoo"):
        assert f"Running stage '{stage}'" not in dry
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert "models" in stages["evaluate"]["deps"]
    assert "models/mirnet_lol/model.keras" in stages["enhance"]["deps"]
    edit_params(repo, lambda p: p["train"].update(learning_rate=1e-4))

    # a new crop size invalidates the shards only, and re-running them leaves the rest alone
    edit_params(repo, lambda p: p["profiles"]["demo"]["shards"].update(crop_size=48))
    assert changed_stages(dvc, repo, env) == {"shards"}
    third = run(dvc + ["repro", "shards"], repo, env)
    assert "Running stage 'shards'" in third
    for stage in ("fetch@tid2013", "fetch@lol", "index"):
        assert f"Running stage '{stage}'" not in third
    manifest = json.loads((repo / "data/shards/tid2013/train/manifest.json").read_text())
    assert manifest["crop_size"] == 48
