"""Training: outputs, MLflow tracking and registry, and resuming after a kill."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

# Runs training in a child process; with KILL_AT_EPOCH set, the process kills
# itself (SIGKILL, no clean-up) in the middle of that epoch (0-based).
TRAIN_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import keras
from mirnet_pipeline.tasks.config import load_params
from mirnet_pipeline.tasks.training.fit import fit_variant

class EpochWatcher(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        with open("epochs_started.txt", "a") as f:
            f.write(f"{{epoch}}\\n")

    def on_train_batch_end(self, batch, logs=None):
        kill_at = os.environ.get("KILL_AT_EPOCH")
        if kill_at is not None and self.epoch == int(kill_at) and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

fit_variant("tiny", load_params(), extra_callbacks=[EpochWatcher()], log_model={log_model})
"""


MLFLOW_LOADERS = """
import json, sys
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
images = np.load("../images.npy")
np.save("pyfunc.npy", mlflow.pyfunc.load_model("models:/tiny@candidate").predict(images))
exported = mlflow.keras.load_model("models:/tiny@candidate")  # kept: its variables live as long as it does
np.save("keras.npy", np.asarray(exported.serve(images)))
print(json.dumps({"project_modules": sorted(m for m in sys.modules
                                           if m.split(".")[0] in {"mirnet_pipeline", "model", "tasks", "flows"})}))
"""


def run_training(project: Path, kill_at_epoch=None, log_model=False, backend="tensorflow"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend}
    env.pop("KILL_AT_EPOCH", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri in other tests exports it
    if kill_at_epoch is not None:
        env["KILL_AT_EPOCH"] = str(kill_at_epoch)
    script = TRAIN_SCRIPT.format(root=str(ROOT), log_model=log_model)
    return subprocess.run([sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def history(project: Path) -> list[dict]:
    with open(project / "reports" / "tiny" / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_a_killed_training_resumes_from_the_last_completed_epoch(tiny_project):
    killed = run_training(tiny_project, kill_at_epoch=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [int(r["epoch"]) for r in history(tiny_project)] == [1, 2]
    assert not (tiny_project / "models" / "tiny" / "model.keras").exists()
    run_id = (tiny_project / "checkpoints" / "tiny" / "mlflow_run_id").read_text()

    resumed = run_training(tiny_project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # epochs 0, 1, 2 started before the kill; the second process started at 2 again
    assert (tiny_project / "epochs_started.txt").read_text().split() == ["0", "1", "2", "2", "3"]
    assert [int(r["epoch"]) for r in history(tiny_project)] == [1, 2, 3, 4]
    assert (tiny_project / "models" / "tiny" / "model.keras").exists()
    metrics = json.loads((tiny_project / "reports" / "tiny" / "metrics.json").read_text())
    assert metrics["epochs"] == 4
    assert json.loads((tiny_project / "reports" / "tiny" / "mlflow.json").read_text())["run_id"] == run_id
    # the same MLflow run carries all four epochs, and the checkpoint is gone
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlflow.db'}")
    steps = [m.step for m in MlflowClient().get_metric_history(run_id, "val_psnr")]
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert not (tiny_project / "checkpoints" / "tiny" / "backup").exists()
    assert not (tiny_project / "checkpoints" / "tiny" / "mlflow_run_id").exists()


def test_training_logs_everything_and_registers_a_candidate(tiny_project):
    done = run_training(tiny_project, log_model=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = tiny_project / "reports" / "tiny"
    for name in ("metrics.json", "history.csv", "curves.png", "grid.png"):
        assert (reports / name).stat().st_size > 0
    metrics = json.loads((reports / "metrics.json").read_text())
    metrics.update(json.loads((reports / "mlflow.json").read_text()))
    assert metrics["parameters"] == (3 * 9 * 4 + 4) + (4 * 9 * 3 + 3)
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlflow.db'}")
    client = MlflowClient()
    run = client.get_run(metrics["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.learning_rate"] == "0.001"
    assert run.data.params["model.options.channels"] == "4"
    assert run.data.tags["variant"] == "tiny" and len(run.data.tags["data.train_shards_manifest_sha256"]) == 64
    assert run.data.metrics["parameters"] == metrics["parameters"]
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}  # mlflow.log_input: the shard sets read
    assert sorted(inputs) == ["tid2013/train", "tid2013/validation_crops"]
    assert inputs["tid2013/train"].dataset.digest == run.data.tags["data.train_shards_manifest_sha256"][:16]
    for key in ("loss", "val_psnr", "val_ssim", "val_mae", "seconds", "crops_per_second"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "grid.png", "history.csv", "metrics.json"} <= artifacts
    version = client.get_model_version_by_alias("tiny", "candidate")
    assert int(version.version) == metrics["version"] == 1
    assert version.tags["variant"] == "tiny" and version.tags["git_commit"] == run.data.tags["git_commit"]
    assert version.run_id == run.info.run_id
    # it describes itself: what it is, its size, its data, its input, its figures; with an input example
    assert version.description.startswith("**tiny** repairs the 24 distortion types of TID2013")
    assert f"{metrics['parameters']:,} parameters" in version.description
    assert f"PSNR {metrics['val_psnr']:.2f} dB" in version.description and "Input: float32 RGB" in version.description
    assert client.get_registered_model("tiny").description == version.description
    logged = mlflow.artifacts.download_artifacts("models:/tiny/1", dst_path=str(tiny_project / "logged"))
    example = mlflow.models.Model.load(logged).load_input_example(logged)
    assert example.dtype == np.float32 and example.shape[0] == 1 and example.shape[-1] == 3
    assert 0 <= example.min() < example.max() <= 1  # a real validation crop, not zeros

    # MLflow's own loaders, in a fresh interpreter that never imports the project
    images = np.random.default_rng(0).random((2, 37, 45, 3), dtype=np.float32)  # not the training crop's size
    np.save(tiny_project / "images.npy", images)
    fresh = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-c", MLFLOW_LOADERS, f"sqlite:///{tiny_project / 'mlflow.db'}"],
                            cwd=tiny_project / "reports", env=fresh, capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.splitlines()[-1]) == {"project_modules": []}

    from mirnet_pipeline.model import infer
    from mirnet_pipeline.tasks.training.trained_models import load_model

    keras_model, label = load_model("models:/tiny@candidate")  # the project's loader: the Keras model itself
    assert label == "tiny/1" and keras_model.count_params() == metrics["parameters"]
    expected = infer(keras_model, images)
    for flavour in ("pyfunc", "keras"):
        served = np.load(tiny_project / "reports" / f"{flavour}.npy")
        assert served.shape == images.shape and np.abs(served - expected).max() < 1e-5, flavour

    # evaluated by its own stage's work, then compared: the figures reach the version's description
    from mirnet_pipeline.tasks.config import load_params
    from mirnet_pipeline.tasks.training import comparison, evaluation

    params = load_params()
    frame, panels = evaluation.evaluate_variant(params, "tiny")
    evaluation.write_variant_evaluation("tiny", frame, panels)
    read, read_panels = evaluation.read_variant_evaluations(["tiny"])
    pd.testing.assert_frame_equal(read, frame)
    assert read_panels.keys() == panels.keys() == {("tid2013", "tiny", 1)}
    for key, panel in panels.items():
        assert all(np.array_equal(read_panels[key][name], panel[name]) for name in ("input", "output", "target"))
    # the classical methods on the same images, then the comparison of both
    from mirnet_pipeline.tasks import artifacts

    scored, scored_panels = comparison.evaluate_classical(params)
    assert set(scored.variant) == {"nlm", "wavelet", "median", "unsharp"} and set(scored.dataset) == {"tid2013"}
    for _, method in scored.groupby("variant"):
        assert method.image_id.tolist() == frame.image_id.tolist()
        assert method.input_psnr.tolist() == pytest.approx(frame.input_psnr.tolist())
    evaluation.write_evaluation(artifacts.CLASSICAL, scored, scored_panels)
    read, read_panels = evaluation.read_variant_evaluations(["tiny"], classical=True)
    results, _ = comparison.write_reports(params, read)
    best = max(results[m]["tid2013"]["validation"]["output_psnr"] for m in ("nlm", "wavelet", "median", "unsharp"))
    lead = results["tiny"]["tid2013"]["validation"]["output_psnr"] - best
    assert json.loads((artifacts.HEADLINE / "tiny.json").read_text())["tid"]["lead"] == round(lead, 4)
    assert "| nlm (classical) | tid2013 | validation | 4 |" in artifacts.COMPARISON.read_text()
    best_per_type = comparison.best_per_type(read)
    assert comparison.write_figure(evaluation.figure_rows(params, ["tiny"]), read_panels,
                                   best_per_type).stat().st_size > 1000
    assert ("tid2013", best_per_type[("tid2013", 1)], 1) in read_panels  # the figure's classical column
    evaluation.log_evaluation(params, results)
    means = results["tiny"]["tid2013"]["validation"]
    assert means["images"] == 4 and means["input_psnr"] == pytest.approx(frame.input_psnr.mean())
    described = client.get_model_version("tiny", "1").description
    assert (f"Evaluated on tid2013 validation (4 whole images): PSNR {means['input_psnr']:.2f} dB doing nothing → "
            f"{means['output_psnr']:.2f} dB") in described


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_training_with_the_perceptual_loss_under(backend, tiny_project):
    """The training flow's code under JAX too (Keras 3 trains JAX models from
    tf.data), on MSE plus the perceptual loss (random VGG weights: no download)."""
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"].update(loss="mse+perceptual",
                           perceptual={"weight": 0.1, "layers": ["block1_conv2", "block2_conv2"], "weights": "random"})
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_training(tiny_project, backend=backend)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = history(tiny_project)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r["loss"])) and float(r["val_loss"]) > 0 for r in rows)
    run_id = json.loads((tiny_project / "reports" / "tiny" / "mlflow.json").read_text())["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlflow.db'}")
    logged = MlflowClient().get_run(run_id).data.params
    assert logged["accelerator.backend"] == backend and logged["train.loss"] == "mse+perceptual"
    assert logged["train.perceptual.weight"] == "0.1"
    import keras

    model = keras.saving.load_model(tiny_project / "models" / "tiny" / "model.keras", compile=False)
    assert model.count_params() == (3 * 9 * 4 + 4) + (4 * 9 * 3 + 3)
