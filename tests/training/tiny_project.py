"""A tiny project on disk: synthetic pairs, their shards and a params file with
small variants (and a SQLite MLflow store once trained), for training,
promotion and scheduling tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from mirnet_pipeline.tasks.data.shards import write_shards

PARAMS = {
    "profile": "research",
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "artifact_location": "mlartifacts", "experiment": "tests",
               "system_metrics_interval": 1},
    "models": {"tiny_cnn": {"arch": "cnn", "options": {"channels": 4, "depth": 1}}},
    "train": {"epochs": 4, "steps_per_epoch": 3, "validation_steps": 1, "batch_size": 2,
              "learning_rate": 1e-3, "grid_images": 2},
    "variants": {"tiny": {"model": "tiny_cnn", "dataset": "tid2013"}},
    "evaluate": {"splits": ["validation"]},
    "retrain": {"variant": "tiny", "margin_db": 0.1},
}


def make_pairs(folder, count, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        target = rng.integers(40, 216, (24, 32, 3), dtype=np.uint8)
        source = np.clip(target + rng.normal(0, 15, target.shape), 0, 255).astype(np.uint8)
        Image.fromarray(source).save(folder / f"in{seed}_{i}.png")
        Image.fromarray(target).save(folder / f"t{seed}_{i}.png")
        rows.append({"input_path": str(folder / f"in{seed}_{i}.png"), "target_path": str(folder / f"t{seed}_{i}.png"),
                     "image_id": f"im{i}", "distortion": 1, "level": 5})
    return pd.DataFrame(rows)


def build_tiny_project(root):
    """Pairs, shards and params.yaml of the tiny project under ``root``."""
    images = root / "images"
    images.mkdir()
    shards = root / "data" / "shards" / "tid2013"
    train, validation = make_pairs(images, 6, 0), make_pairs(images, 4, 1)
    write_shards(train, shards / "train", split="train", crop_size=16, crops_per_pair=2, progress=False)
    write_shards(validation, shards / "validation_crops", split="validation_crops", crop_size=16,
                 crops_per_pair=1, progress=False)
    write_shards(validation, shards / "validation", split="validation", kind="full", progress=False)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def register_candidate(client, artifact_root, psnr: float, name: str = "tiny") -> int:
    """A registered model ``name`` whose version 1 (a run that scored ``psnr``)
    holds the ``candidate`` alias; returns the version."""
    experiment = client.create_experiment("x", artifact_location=artifact_root.as_uri())
    client.create_registered_model(name)
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "final_val_psnr", psnr)
    version = client.create_model_version(name, source="x", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "candidate", version.version)
    return int(version.version)
