"""Training one variant: shards in, a fitted ``.keras`` model, its history,
curves and sample grid out; every epoch checkpointed so that a killed run
resumes from the last completed epoch; everything logged to MLflow.

``fit_variant`` is the plain function; ``flows.train`` wraps it as a Prefect task.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mirnet_pipeline.model import build_model, get_loss, infer, mae, psnr, ssim
from mirnet_pipeline.model.complexity import count_layers
from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import Params, TrainSettings, variant_options
from mirnet_pipeline.tasks.data.shards import make_dataset, read_manifest
from mirnet_pipeline.tasks.storage import atomic_file, atomic_write_json, atomic_write_text, file_sha256
from mirnet_pipeline.tasks.training import tracking
from mirnet_pipeline.tasks.training.model_card import describe
from mirnet_pipeline.tasks.tuning import tune_for_this_machine


class _SingleDevice:
    """The strategy-like object of backends that Keras distributes itself (or not at all)."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def accelerator_setup(settings: TrainSettings):
    """The distribution, mixed precision and XLA for this machine and Keras backend.

    On GPUs: data parallel over all of them (TensorFlow's ``MirroredStrategy``;
    Keras' ``DataParallel`` distribution under JAX; PyTorch: one GPU), mixed
    float16 and XLA unless switched off; on CPUs: one device, float32, no XLA
    (JAX compiles every step with XLA whatever the setting)."""
    backend = keras.backend.backend()
    strategy = _SingleDevice()
    if backend == "tensorflow":
        import tensorflow as tf

        tune_for_this_machine()
        gpus = len(tf.config.list_physical_devices("GPU"))
        if gpus > 1:
            strategy = tf.distribute.MirroredStrategy()
    elif backend == "jax":
        import jax

        gpus = sum(device.platform == "gpu" for device in jax.devices())
        if gpus > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
            strategy.num_replicas_in_sync = gpus
    elif backend == "torch":
        import torch

        gpus = torch.cuda.device_count()
    else:
        raise ValueError(f"training runs under the tensorflow, jax or torch Keras backend, not {backend!r}")
    mixed = settings.mixed_precision == "on" or (settings.mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    xla = backend == "jax" or (backend == "tensorflow" and (
        settings.xla == "on" or (settings.xla == "auto" and bool(gpus))))
    return strategy, {"backend": backend, "gpus": gpus, "replicas": strategy.num_replicas_in_sync,
                      "mixed_precision": mixed, "xla": xla}


def training_loss(settings: TrainSettings):
    """The loss that ``settings`` name, its perceptual network built (once)."""
    if settings.loss.endswith("+perceptual"):
        return get_loss(settings.loss, **settings.perceptual.model_dump())
    return get_loss(settings.loss)


def cosine_schedule(settings: TrainSettings, steps_per_epoch: int):
    return keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=settings.epochs * steps_per_epoch,
        alpha=settings.min_learning_rate / settings.learning_rate,
    )


class ValidationScores(keras.callbacks.Callback):
    """Validation loss, PSNR, SSIM and MAE at the end of each epoch, on the same
    batches every epoch, written into the epoch's logs as ``val_*`` for the
    callbacks after it (learning-rate schedule, early stopping, history).

    Computed here rather than as compiled metrics: those are traced into the
    training step too, which costs every training stage seconds of tracing,
    for training-batch figures nobody reads."""

    def __init__(self, batches: list, loss):
        super().__init__()
        self.batches = batches  # (inputs, targets) numpy pairs
        self.loss = loss

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        scores: dict[str, list[float]] = {"val_loss": [], "val_psnr": [], "val_ssim": [], "val_mae": []}
        for inputs, targets in self.batches:
            outputs = np.asarray(self.model.predict_on_batch(inputs), dtype=np.float32)
            scores["val_loss"].append(float(self.loss(targets, outputs)))
            scores["val_psnr"].extend(np.asarray(psnr(targets, outputs)).tolist())
            scores["val_ssim"].extend(np.asarray(ssim(targets, outputs)).tolist())
            scores["val_mae"].extend(np.asarray(mae(targets, outputs)).tolist())
        if logs is not None:
            logs.update({k: float(np.mean(v)) for k, v in scores.items()})
            logs["val_seconds"] = time.perf_counter() - started


class EpochLogger(keras.callbacks.Callback):
    """Per epoch: seconds, crops per second and the metrics, to MLflow and to a
    CSV history written atomically (so a kill never leaves a torn line). Runs
    after ``ValidationScores``, whose time it leaves out of crops per second.

    Hand-written rather than Keras' ``CSVLogger`` plus MLflow's
    ``MlflowCallback``: ``CSVLogger`` appends, so the epochs that
    ``BackupAndRestore`` replays after a kill would appear twice and a kill
    mid-write leaves a torn line, while this history is rewritten whole with
    the replayed epochs replaced; and ``MlflowCallback`` logs the optimizer's
    configuration as parameters when training begins, which fails on a resumed
    run whose learning rate a plateau schedule has lowered (MLflow refuses to
    change a parameter)."""

    def __init__(self, history_path: Path, crops_per_step: int, steps_per_epoch: int):
        super().__init__()
        self.history_path = history_path
        self.crops_per_step = crops_per_step
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.started
        train_seconds = seconds - logs.get("val_seconds", 0.0)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "seconds": seconds,
               "crops_per_second": self.crops_per_step * self.steps_per_epoch / train_seconds}
        lr = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(lr)) if not callable(lr) else float(
            keras.ops.convert_to_numpy(lr(self.model.optimizer.iterations)))
        rows = read_history(self.history_path)
        rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row]
        write_history(self.history_path, rows)
        tracking.log_epoch(row)


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(handle)]


def write_history(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(f"{r.get(k, ''):.6g}" if k != "epoch" else str(int(r[k]))
                                          for k in keys) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Loss (training and validation) and validation PSNR per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "psnr", "PSNR (dB, data range 1)")):
        if any(key in r for r in rows):
            ax.plot(epochs, [r.get(key) for r in rows], "o-", label="train")
        if any(f"val_{key}" in r for r in rows):
            ax.plot(epochs, [r.get(f"val_{key}") for r in rows], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_grid(model, validation_dir: Path, path: Path, count: int, title: str) -> None:
    """Rows of degraded input / model output / target for validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = next(iter(make_dataset(validation_dir, count, training=False)))
    inputs, targets = batch[0].numpy(), batch[1].numpy()
    outputs = infer(model, inputs, batch_size=1)
    fig, axes = plt.subplots(len(inputs), 3, figsize=(9, 2.4 * len(inputs)), squeeze=False)
    for i in range(len(inputs)):
        before = float(psnr(targets[i:i + 1], inputs[i:i + 1])[0])
        after = float(psnr(targets[i:i + 1], outputs[i:i + 1])[0])
        for j, (image, label) in enumerate(((inputs[i], f"input {before:.2f} dB"),
                                            (outputs[i], f"output {after:.2f} dB"), (targets[i], "target"))):
            axes[i, j].imshow(np.clip(image, 0, 1))
            axes[i, j].set_title(label, fontsize=9)
            axes[i, j].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


@dataclass(frozen=True)
class TrainingData:
    """The shard sets a variant trains and is validated on, with their manifests."""

    train_dir: Path
    validation_dir: Path
    train_manifest: dict
    validation_manifest: dict

    @classmethod
    def of(cls, variant) -> TrainingData:
        crops = variant.input == "crops"
        train_dir = artifacts.shard_set(variant.dataset, "train" if crops else "train_full")
        validation_dir = artifacts.shard_set(variant.dataset, "validation_crops" if crops else "validation")
        return cls(train_dir, validation_dir, read_manifest(train_dir), read_manifest(validation_dir))


@dataclass(frozen=True)
class Schedule:
    """How a variant trains on this machine: replicas, batch and step counts."""

    accelerator: dict
    global_batch: int
    steps: int
    validation_steps: int


def schedule_for(settings: TrainSettings, data: TrainingData, accelerator: dict) -> Schedule:
    global_batch = settings.batch_size * accelerator["replicas"]
    steps = settings.steps_per_epoch or max(1, data.train_manifest["records"] // global_batch)
    validation_steps = settings.validation_steps or math.ceil(data.validation_manifest["records"] / global_batch)
    return Schedule(accelerator, global_batch, steps, validation_steps)


def compiled_model(spec, settings: TrainSettings, schedule: Schedule, strategy, loss):
    """The variant's model, compiled with Adam and ``loss``, under ``strategy``."""
    with strategy.scope():
        model = build_model(spec.arch, **variant_options(spec))
        learning_rate = (cosine_schedule(settings, schedule.steps) if settings.schedule == "cosine"
                         else settings.learning_rate)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, global_clipnorm=settings.clip_norm)
        model.compile(optimizer=optimizer, loss=loss, jit_compile=schedule.accelerator["xla"])
        # Adam's slots made now, not inside the first step: otherwise TensorFlow
        # traces the training step twice
        optimizer.build(model.trainable_variables)
    return model


def training_callbacks(settings: TrainSettings, schedule: Schedule, validation: list, loss, checkpoints: Path,
                       history_path: Path, extra=()) -> list:
    """Validation scores, per-epoch checkpoints (resume), the history file, the
    learning-rate schedule and early stopping, then ``extra``."""
    callbacks = [
        ValidationScores(validation, loss),  # first: the callbacks below read its val_* logs
        keras.callbacks.BackupAndRestore(str(checkpoints / "backup"), save_freq="epoch", delete_checkpoint=True),
        EpochLogger(history_path, schedule.global_batch, schedule.steps),
        keras.callbacks.TerminateOnNaN(),
    ]
    if settings.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_psnr", mode="max", factor=settings.plateau_factor,
            patience=settings.plateau_patience, min_lr=settings.min_learning_rate))
    if settings.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_psnr", mode="max", patience=settings.early_stopping_patience, restore_best_weights=True))
    return callbacks + list(extra)


def run_record(name: str, params: Params, data: TrainingData, schedule: Schedule, resumed: bool) -> tuple[dict, dict]:
    """(the flat parameters, the tags) of the variant's MLflow run."""
    variant, settings = params.variants[name], params.variant_train(name)
    flat = tracking.flatten({"variant": name, "profile": params.profile,
                             "model": params.models[variant.model].model_dump(), "dataset": variant.dataset,
                             "input": variant.input, "train": settings.model_dump(),
                             "accelerator": schedule.accelerator, "global_batch_size": schedule.global_batch,
                             "steps_per_epoch": schedule.steps, "validation_steps": schedule.validation_steps})
    tags = {**tracking.provenance(name), "kind": "training", "profile": params.profile,
            "data.train_shards_manifest_sha256": file_sha256(data.train_dir / "manifest.json"),
            "data.validation_shards_manifest_sha256": file_sha256(data.validation_dir / "manifest.json"),
            "data.source_manifest_sha256": data.train_manifest.get("source_manifest_sha256") or "",
            "resumed": str(resumed)}
    return flat, tags


def log_shard_sets(variant, data: TrainingData, tags: dict) -> None:
    tracking.log_shard_sets({
        "training": (f"{variant.dataset}/{data.train_dir.name}", data.train_dir,
                     tags["data.train_shards_manifest_sha256"]),
        "validation": (f"{variant.dataset}/{data.validation_dir.name}", data.validation_dir,
                       tags["data.validation_shards_manifest_sha256"])})


def final_metrics(rows: list[dict], model) -> dict:
    """The last epoch's validation scores, the best epoch's PSNR, and the speed."""
    best = max(rows, key=lambda r: r.get("val_psnr", -math.inf))
    last = rows[-1]
    return {
        "val_psnr": last["val_psnr"], "val_ssim": last["val_ssim"], "val_mae": last["val_mae"],
        "val_loss": last["val_loss"], "best_val_psnr": best["val_psnr"], "best_epoch": int(best["epoch"]),
        "epochs": int(last["epoch"]), "parameters": int(model.count_params()),
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in rows])),
        "crops_per_second": float(np.mean([r["crops_per_second"] for r in rows])),
    }


def write_reports(name: str, model, rows: list[dict], metrics: dict, variant, settings: TrainSettings) -> None:
    """``reports/<name>/``: metrics.json, curves.png and grid.png, each logged to the run with history.csv."""
    reports = artifacts.variant_reports(name)
    atomic_write_json(reports / "metrics.json", metrics)
    plot_curves(rows, reports / "curves.png", f"{name}: loss and PSNR per epoch")
    plot_grid(model, artifacts.shard_set(variant.dataset, "validation"), reports / "grid.png", settings.grid_images,
              f"{name}: input / output / target (validation)")
    tracking.log_metrics({f"final_{k}": v for k, v in metrics.items()})
    for artifact in ("curves.png", "grid.png", "history.csv", "metrics.json"):
        tracking.log_artifact(reports / artifact)


EXAMPLE_SIZE = 32  # pixels a side of the input example stored with a registered model (a validation crop)


def fit_variant(name: str, params: Params, extra_callbacks=(), log_model: bool = True) -> dict:
    """Train variant ``name``; resume from its checkpoint if a previous run died.

    Writes ``models/<name>/model.keras``, ``reports/<name>/{metrics.json,
    history.csv,curves.png,grid.png,mlflow.json}``; returns the final metrics
    with the MLflow run id and registered version."""
    variant, settings = params.variants[name], params.variant_train(name)
    data = TrainingData.of(variant)
    keras.utils.set_random_seed(settings.seed)
    strategy, accelerator = accelerator_setup(settings)
    schedule = schedule_for(settings, data, accelerator)
    train_ds = make_dataset(data.train_dir, schedule.global_batch, training=True, seed=settings.seed)
    validation = [(x.numpy(), y.numpy()) for x, y in make_dataset(
        data.validation_dir, schedule.global_batch, training=False, repeat=True).take(schedule.validation_steps)]
    loss = training_loss(settings)
    model = compiled_model(params.models[variant.model], settings, schedule, strategy, loss)

    checkpoints, reports = artifacts.checkpoints(name), artifacts.variant_reports(name)
    checkpoints.mkdir(parents=True, exist_ok=True)
    history_path = reports / "history.csv"
    resumed = (checkpoints / "backup").exists()
    if not resumed:
        history_path.unlink(missing_ok=True)
    callbacks = training_callbacks(settings, schedule, validation, loss, checkpoints, history_path, extra_callbacks)
    flat, tags = run_record(name, params, data, schedule, resumed)
    with tracking.run(params.mlflow, name, checkpoints / "mlflow_run_id", tags) as run:
        tracking.log_params(flat)
        log_shard_sets(variant, data, tags)
        tracking.log_metrics({"parameters": model.count_params(), "layers": count_layers(model)})
        model.fit(train_ds, epochs=settings.epochs, steps_per_epoch=schedule.steps, callbacks=callbacks, verbose=2)

        rows = read_history(history_path)
        metrics = final_metrics(rows, model)
        model_file = artifacts.model_file(name)
        with atomic_file(model_file, suffix=".keras") as staging:  # Keras saves to a name ending in .keras
            model.save(staging)
        write_reports(name, model, rows, metrics, variant, settings)
        registered = None
        if log_model:
            registered = tracking.log_and_register_model(
                model, name, model_file, tracking.provenance(name), describe(name, params, metrics),
                input_example=validation[0][0][:1, :EXAMPLE_SIZE, :EXAMPLE_SIZE])
        atomic_write_json(reports / "mlflow.json", {
            "run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
            "registered_model": name if registered else None, "version": registered,
        })
    return {**metrics, "run_id": run.info.run_id, "registered_version": registered}
