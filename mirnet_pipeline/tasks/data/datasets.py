"""The datasets the pipeline knows, as one table: how to validate each, how to
make its offline sample, how to index it into a pairs manifest; and the
three data stages' work on one dataset (``fetch``, ``index``,
``build_shard_sets``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import DataSettings, ShardSettings
from mirnet_pipeline.tasks.data import lol, sample, tid2013
from mirnet_pipeline.tasks.data.fetch import fetch_dataset
from mirnet_pipeline.tasks.data.shards import ShardSet, write_shard_sets
from mirnet_pipeline.tasks.storage import atomic_write_bytes, file_sha256


@dataclass(frozen=True)
class Dataset:
    name: str
    validate: Callable[[Path], Path]
    make_sample: Callable[[Path, int], object]
    index: Callable[[Path, DataSettings], pd.DataFrame]


DATASETS = {
    "tid2013": Dataset(
        "tid2013",
        tid2013.validate,
        lambda folder, seed: sample.write_tid2013_sample(folder, seed=seed),
        lambda root, s: tid2013.manifest(
            root, s.tid2013.split_references(), s.tid2013.levels, s.tid2013.type_numbers()
        ),
    ),
    "lol": Dataset(
        "lol",
        lol.validate,
        lambda folder, seed: sample.write_lol_sample(folder, seed=seed),
        lambda root, s: lol.manifest(root, s.lol.train_count),
    ),
}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def fetch(name: str, settings: DataSettings) -> str:
    """``data/raw/<name>`` from the configured source, validated, whole."""
    dataset = get_dataset(name)
    source = getattr(settings, name)
    out = fetch_dataset(
        source.source,
        artifacts.raw_dataset(name),
        validate=dataset.validate,
        make_sample=functools.partial(dataset.make_sample, seed=settings.sample_seed),
        sha256=source.sha256,
        downloads=artifacts.DOWNLOADS,
        endpoint_url=source.endpoint_url,
    )
    return str(out)


def index(name: str, settings: DataSettings) -> str:
    """``data/prepared/<name>.parquet``: one row per (input, target) pair."""
    frame = get_dataset(name).index(artifacts.raw_dataset(name), settings)
    path = artifacts.pairs_manifest(name)
    atomic_write_bytes(path, frame.to_parquet(index=False))
    return str(path)


# shard set -> (split of the manifest, kind, crops per pair or None for the setting)
SHARD_SETS = {
    "train": ("train", "crops", None),  # patch training
    "train_full": ("train", "full", 1),  # the full-image CNN
    "validation_crops": ("validation", "crops", 1),  # per-epoch validation of patch training
    "validation": ("validation", "full", 1),
    "test": ("test", "full", 1),
}


def build_shard_sets(name: str, settings: ShardSettings) -> dict:
    """Every set of ``SHARD_SETS`` for dataset ``name``; the sets of one split
    are written in one pass over its pairs."""
    manifest_path = artifacts.pairs_manifest(name)
    pairs = pd.read_parquet(manifest_path)
    digest = file_sha256(manifest_path)
    manifests = {}
    for split in dict.fromkeys(split for split, _, _ in SHARD_SETS.values()):
        sets = {artifacts.shard_set(name, set_name): ShardSet(set_name, kind, crops or settings.crops_per_pair)
                for set_name, (of, kind, crops) in SHARD_SETS.items() if of == split}
        manifests.update(write_shard_sets(
            pairs[pairs.split == split].reset_index(drop=True), sets,
            crop_size=settings.crop_size, seed=settings.seed, encoding=settings.encoding,
            target_shard_bytes=int(settings.target_shard_mb * 2**20), source_manifest_sha256=digest,
        ))
    return manifests
