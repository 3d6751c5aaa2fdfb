"""TFRecord shards of (input, target) pairs and the ``tf.data`` reader that
training uses: training reads shards, never loose files.

A shard set is one folder ``data/shards/<dataset>/<split>/`` holding
``<split>.tfrecord-00000-of-000NN`` files and ``manifest.json`` (record counts,
crop parameters, the source manifest's hash, each shard's sha256), written
last. Records hold the input and target as lossless uint8, either raw bytes
(the default: no decoding cost when reading) or PNG (about 40 % smaller on the
sample; see ``benchmarks/reader_throughput.py``), plus the image id,
distortion type and level.

Two kinds of set: ``crops`` (random ``crop_size`` squares, ``crops_per_pair``
per pair, for patch training) and ``full`` (whole images, for the full-image
CNN and for evaluation).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.storage import atomic_directory, atomic_write_json, file_sha256

MANIFEST = "manifest.json"
TARGET_SHARD_BYTES = 150 * 2**20
READ_AHEAD = 4  # pairs decoded ahead of the writer


class ShardError(UsageError):
    """A shard set is missing, incomplete or corrupt; the message names the file."""


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: cannot read image ({exc})") from None


def _encode(array: np.ndarray, encoding: str) -> bytes:
    if encoding == "raw":
        return array.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _example(tf, input_img, target_img, row, encoding: str) -> bytes:
    height, width = input_img.shape[:2]

    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "input": b(_encode(input_img, encoding)),
                "target": b(_encode(target_img, encoding)),
                "height": i(height),
                "width": i(width),
                "image_id": b(str(row.image_id).encode()),
                "distortion": i(row.distortion),
                "level": i(row.level),
            }
        )
    ).SerializeToString()


@dataclass(frozen=True)
class ShardSet:
    """One set to write: its name (folder and file prefix), ``crops`` or
    ``full``, and crops per pair (crop sets only)."""

    name: str
    kind: str = "crops"
    crops_per_pair: int = 1


def _pairs_in_order(pairs: pd.DataFrame, seed: int):
    """(index, row, input, target) of every pair in a seeded order, each pair
    read once; the next pairs are decoded on a thread while this one is used."""
    order = np.random.default_rng(seed).permutation(len(pairs))

    def load(index):
        row = pairs.iloc[index]
        source, target = load_rgb(row.input_path), load_rgb(row.target_path)
        if source.shape != target.shape:
            raise ShardError(
                f"{row.input_path}: size {source.shape[1]}x{source.shape[0]} differs from its "
                f"target {row.target_path} ({target.shape[1]}x{target.shape[0]})"
            )
        return index, row, source, target

    with ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(load, i) for i in order[:READ_AHEAD]]
        for i in order[READ_AHEAD:]:
            yield pending.pop(0).result()
            pending.append(pool.submit(load, i))
        for future in pending:
            yield future.result()


def _crops(source, target, index: int, crop_size: int, count: int, seed: int, path):
    height, width = source.shape[:2]
    if height < crop_size or width < crop_size:
        raise ShardError(f"{path}: {width}x{height} is smaller than the {crop_size} crop")
    rng = np.random.default_rng([seed, int(index)])
    for _ in range(count):
        y = int(rng.integers(0, height - crop_size + 1))
        x = int(rng.integers(0, width - crop_size + 1))
        window = (slice(y, y + crop_size), slice(x, x + crop_size))
        yield source[window], target[window]


def write_shard_sets(
    pairs: pd.DataFrame,
    sets: dict[str | os.PathLike, ShardSet],
    *,
    crop_size: int = 128,
    seed: int = 0,
    encoding: str = "raw",
    target_shard_bytes: int = TARGET_SHARD_BYTES,
    source_manifest_sha256: str | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Write the pairs as shard sets ({folder: set}), reading each pair once for
    all of them. Each folder is replaced whole, or left as it was on any error.
    Returns each set's manifest by set name."""
    import tensorflow as tf

    for shard_set in sets.values():
        if shard_set.kind not in ("crops", "full"):
            raise ValueError(f"kind must be 'crops' or 'full', got {shard_set.kind!r}")
    if encoding not in ("raw", "png"):
        raise ValueError(f"encoding must be 'raw' or 'png', got {encoding!r}")
    if pairs.empty:
        raise ShardError(f"no pairs for {', '.join(s.name for s in sets.values())}")
    first = load_rgb(pairs.iloc[0].input_path)
    with contextlib.ExitStack() as stack:
        outputs = []  # (set, staging folder, shard names, writers, record counts)
        for folder, shard_set in sets.items():
            side = (crop_size, crop_size) if shard_set.kind == "crops" else first.shape[:2]
            per_record = 2 * side[0] * side[1] * 3 * (1.0 if encoding == "raw" else 0.6)
            count = len(pairs) * (shard_set.crops_per_pair if shard_set.kind == "crops" else 1)
            num_shards = max(1, math.ceil(count * per_record / target_shard_bytes))
            staging = stack.enter_context(atomic_directory(folder))
            names = [f"{shard_set.name}.tfrecord-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
            writers = [stack.enter_context(tf.io.TFRecordWriter(str(staging / n))) for n in names]
            outputs.append((shard_set, staging, names, writers, [0] * num_shards))
        bar = stack.enter_context(tqdm(total=len(pairs), unit="pair", disable=not progress, leave=False,
                                       desc=f"shards {', '.join(map(str, sets))}"))
        for index, row, source, target in _pairs_in_order(pairs, seed):
            for shard_set, _, _, writers, counts in outputs:
                records = ([(source, target)] if shard_set.kind == "full" else
                           _crops(source, target, index, crop_size, shard_set.crops_per_pair, seed, row.input_path))
                for crop_source, crop_target in records:
                    n = sum(counts) % len(writers)
                    writers[n].write(_example(tf, crop_source, crop_target, row, encoding))
                    counts[n] += 1
            bar.update()
        manifests = {}
        for shard_set, staging, names, writers, counts in outputs:
            for writer in writers:
                writer.close()
            manifests[shard_set.name] = manifest = {
                "split": shard_set.name,
                "kind": shard_set.kind,
                "encoding": encoding,
                "crop_size": crop_size if shard_set.kind == "crops" else None,
                "crops_per_pair": shard_set.crops_per_pair if shard_set.kind == "crops" else 1,
                "seed": seed,
                "pairs": len(pairs),
                "records": sum(counts),
                "source_manifest_sha256": source_manifest_sha256,
                "shards": [
                    {"file": n, "records": c, "bytes": (staging / n).stat().st_size,
                     "sha256": file_sha256(staging / n)}
                    for n, c in zip(names, counts, strict=True)
                ],
            }
            atomic_write_json(staging / MANIFEST, manifest)
    return manifests


def write_shards(pairs: pd.DataFrame, out_dir: str | os.PathLike, *, split: str, kind: str = "crops",
                 crops_per_pair: int = 8, **options) -> dict:
    """One shard set named ``split`` in ``out_dir``."""
    return write_shard_sets(pairs, {out_dir: ShardSet(split, kind, crops_per_pair)}, **options)[split]


def read_manifest(split_dir: str | os.PathLike, verify: bool = False) -> dict:
    split_dir = Path(split_dir)
    path = split_dir / MANIFEST
    if not path.exists():
        raise ShardError(f"{path}: missing; build the shards first (python -m mirnet_pipeline.flows.build_shards)")
    manifest = json.loads(path.read_text())
    for shard in manifest["shards"]:
        file = split_dir / shard["file"]
        if not file.exists():
            raise ShardError(f"{file}: listed in {path} but missing")
        if verify and file_sha256(file) != shard["sha256"]:
            raise ShardError(f"{file}: sha256 differs from {path}")
    return manifest


def _features(tf):
    return {
        "input": tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "image_id": tf.io.FixedLenFeature([], tf.string),
        "distortion": tf.io.FixedLenFeature([], tf.int64),
        "level": tf.io.FixedLenFeature([], tf.int64),
    }


def parse_record(tf, serialized, encoding: str):
    """One record as a dict of uint8 images and metadata."""
    record = tf.io.parse_single_example(serialized, _features(tf))
    shape = tf.stack([record["height"], record["width"], 3])

    def decode(data):
        if encoding == "raw":
            return tf.reshape(tf.io.decode_raw(data, tf.uint8), shape)
        return tf.reshape(tf.io.decode_png(data, channels=3), shape)

    return {
        "input": decode(record["input"]),
        "target": decode(record["target"]),
        "image_id": record["image_id"],
        "distortion": record["distortion"],
        "level": record["level"],
    }


def augment(tf, source, target, seed=None):
    """One of the 8 flips/rotations of the square's dihedral group, drawn per
    example and applied to input and target alike. Non-square images (whole
    images) keep their shape: they draw from the 4 of those that do."""
    k = tf.random.uniform([], 0, 8, dtype=tf.int32, seed=seed)
    square = tf.equal(tf.shape(source)[0], tf.shape(source)[1])
    k = tf.where(square, k, k - k % 2)  # odd quarter turns would swap height and width
    source = tf.image.rot90(source, k % 4)
    target = tf.image.rot90(target, k % 4)
    flip = k >= 4
    source = tf.cond(flip, lambda: tf.image.flip_left_right(source), lambda: source)
    target = tf.cond(flip, lambda: tf.image.flip_left_right(target), lambda: target)
    return source, target


def read_metadata(split_dir: str | os.PathLike) -> list[dict]:
    """Image id, distortion type and level of every record of a shard set, in
    the order ``make_dataset(..., training=False)`` yields them; images are
    not decoded."""
    import tensorflow as tf

    manifest = read_manifest(split_dir)
    files = [str(Path(split_dir) / s["file"]) for s in manifest["shards"]]
    wanted = {k: v for k, v in _features(tf).items() if k in ("image_id", "distortion", "level")}
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8))  # sequential: the same order
    return [{"image_id": r["image_id"].numpy().decode(), "distortion": int(r["distortion"]), "level": int(r["level"])}
            for r in ds.map(lambda x: tf.io.parse_single_example(x, wanted))]


def make_dataset(
    split_dir: str | os.PathLike,
    batch_size: int,
    *,
    training: bool,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    repeat: bool | None = None,
    with_metadata: bool = False,
):
    """The ``tf.data`` pipeline over a shard set: interleaved parallel reads,
    parallel decoding, and for training a shuffle buffer, the 8 flip/rotation
    augmentations and repetition; batched and prefetched. Yields
    ``(input, target)`` float32 batches in [0, 1] (plus a metadata dict when
    ``with_metadata``). Validation order is deterministic."""
    import tensorflow as tf

    manifest = read_manifest(split_dir)
    files = [str(Path(split_dir) / s["file"]) for s in manifest["shards"]]
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=autotune,
        deterministic=not training,
    )
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    encoding = manifest["encoding"]

    def to_pair(serialized):
        record = parse_record(tf, serialized, encoding)
        # to float first: the flips and rotations then run on float32, which
        # TensorFlow's oneDNN kernels take on every CPU (uint8 only with AVX-512)
        source = tf.image.convert_image_dtype(record["input"], tf.float32)
        target = tf.image.convert_image_dtype(record["target"], tf.float32)
        if training:
            source, target = augment(tf, source, target)
        if with_metadata:
            meta = {k: record[k] for k in ("image_id", "distortion", "level")}
            return source, target, meta
        return source, target

    ds = ds.map(to_pair, num_parallel_calls=autotune, deterministic=not training)
    if repeat if repeat is not None else training:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=training).prefetch(autotune)
