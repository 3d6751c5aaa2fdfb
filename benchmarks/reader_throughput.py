"""Reader throughput: the shard reader against the straightforward pipeline.

The baseline is what the Keras MIRNet example does: a ``tf.data`` pipeline over
the original image files that reads and decodes both images of a pair and
takes one random crop, every epoch, with parallel map and prefetch. The shard
reader reads the pre-cropped TFRecord shards (``make_dataset``, training mode:
interleave, shuffle, 8-fold augmentation). Same pairs, same crop size, same
batch size, same run; prints a human line and a JSON line.

    ./pipeline run python benchmarks/reader_throughput.py            # after ./pipeline demo
    ./pipeline run python benchmarks/reader_throughput.py --dataset lol
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402
from mirnet_pipeline.tasks.data.shards import make_dataset, read_manifest  # noqa: E402


def baseline_dataset(pairs: pd.DataFrame, crop: int, batch: int):
    """The Keras example's loader: decode the files and crop, every epoch."""

    def load(input_path, target_path):
        source = tf.io.decode_image(tf.io.read_file(input_path), channels=3, expand_animations=False)
        target = tf.io.decode_image(tf.io.read_file(target_path), channels=3, expand_animations=False)
        stacked = tf.image.random_crop(tf.concat([source, target], axis=-1), (crop, crop, 6))
        stacked = tf.image.convert_image_dtype(stacked, tf.float32)
        return stacked[..., :3], stacked[..., 3:]

    ds = tf.data.Dataset.from_tensor_slices((pairs.input_path.tolist(), pairs.target_path.tolist()))
    ds = ds.shuffle(len(pairs)).repeat()
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE
    )


def crops_per_second(ds, batches: int, batch: int, warmup: int = 5) -> float:
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(iterator)
        x.numpy()
    return batches * batch / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tid2013", choices=["tid2013", "lol"])
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    record.add_option(parser)
    args = parser.parse_args(argv)

    split_dir = Path(args.shards) / args.dataset / "train"
    manifest = read_manifest(split_dir)
    pairs = pd.read_parquet(Path(args.prepared) / f"{args.dataset}.parquet")
    pairs = pairs[pairs.split == "train"]
    crop = manifest["crop_size"]
    ours, base = [], []
    for _ in range(args.repeats):  # interleave the two so that machine noise hits both
        base.append(crops_per_second(baseline_dataset(pairs, crop, args.batch), args.batches, args.batch))
        ours.append(crops_per_second(make_dataset(split_dir, args.batch, training=True), args.batches, args.batch))
    result = {
        "benchmark": "reader_throughput",
        "dataset": args.dataset,
        "crop_size": crop,
        "batch": args.batch,
        "encoding": manifest["encoding"],
        "baseline_crops_per_s": max(base),
        "shards_crops_per_s": max(ours),
        "ratio": max(ours) / max(base),
        "cpus": len(__import__("os").sched_getaffinity(0)),
    }
    print(
        f"{args.dataset} {crop}x{crop} crops, batch {args.batch}: shard reader "
        f"{result['shards_crops_per_s']:.0f} crops/s vs file decoding {result['baseline_crops_per_s']:.0f} "
        f"crops/s: {result['ratio']:.1f}x (best of {args.repeats}, {result['cpus']} CPUs)"
    )
    print(json.dumps(result))
    record.record(args.record, result)
    return result


if __name__ == "__main__":
    main()
