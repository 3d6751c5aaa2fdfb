"""TFRecord shards: bit-exact round trips, manifests, determinism, the reader."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from mirnet_pipeline.tasks.data.shards import ShardError, make_dataset, parse_record, read_manifest, write_shards


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Six small (input, target) pairs of real-looking noisy content."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        target = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        source = np.clip(target + rng.normal(0, 20, target.shape), 0, 255).astype(np.uint8)
        Image.fromarray(source).save(folder / f"in{i}.png")
        Image.fromarray(target).save(folder / f"t{i}.bmp")
        rows.append({"input_path": str(folder / f"in{i}.png"), "target_path": str(folder / f"t{i}.bmp"),
                     "image_id": f"im{i}", "distortion": i + 1, "level": 5 - i % 2, "split": "train"})
    return pd.DataFrame(rows)


def read_all(split_dir):
    manifest = read_manifest(split_dir, verify=True)
    out = []
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(str(split_dir / shard["file"])):
            r = parse_record(tf, raw, manifest["encoding"])
            out.append((r["input"].numpy(), r["target"].numpy(), r["image_id"].numpy().decode(),
                        int(r["distortion"]), int(r["level"])))
    return out


def crops_of(path, size):
    """Every size x size window of an image, as bytes, to look crops up in."""
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    return {image[y:y + size, x:x + size].tobytes() for y in range(h - size + 1) for x in range(w - size + 1)}


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_crops_round_trip_bit_exactly(pairs, tmp_path, encoding):
    manifest = write_shards(pairs, tmp_path / "train", split="train", crop_size=16, crops_per_pair=3,
                            seed=1, encoding=encoding, target_shard_bytes=10_000, progress=False)
    assert manifest["records"] == 18 and len(manifest["shards"]) > 1
    assert [s["file"] for s in manifest["shards"]][0] == f"train.tfrecord-00000-of-{len(manifest['shards']):05d}"
    records = read_all(tmp_path / "train")
    assert len(records) == 18
    by_id = {row.image_id: row for row in pairs.itertuples()}
    for source, target, image_id, distortion, level in records:
        row = by_id[image_id]
        assert source.shape == target.shape == (16, 16, 3)
        assert (distortion, level) == (row.distortion, row.level)
        assert source.tobytes() in crops_of(row.input_path, 16)
        assert target.tobytes() in crops_of(row.target_path, 16)
        # input and target come from the same window
        full_in = np.asarray(Image.open(row.input_path))
        full_t = np.asarray(Image.open(row.target_path))
        hits = [(y, x) for y in range(25) for x in range(37)
                if np.array_equal(full_in[y:y + 16, x:x + 16], source)]
        assert any(np.array_equal(full_t[y:y + 16, x:x + 16], target) for y, x in hits)


def test_whole_images_round_trip_bit_exactly(pairs, tmp_path):
    write_shards(pairs, tmp_path / "validation", split="validation", kind="full", progress=False)
    records = {r[2]: r for r in read_all(tmp_path / "validation")}
    assert len(records) == 6
    for row in pairs.itertuples():
        np.testing.assert_array_equal(records[row.image_id][0], np.asarray(Image.open(row.input_path)))
        np.testing.assert_array_equal(records[row.image_id][1], np.asarray(Image.open(row.target_path)))


def test_shards_are_deterministic_for_a_seed_and_listed_with_checksums(pairs, tmp_path):
    a = write_shards(pairs, tmp_path / "a", split="train", crop_size=16, seed=5, progress=False,
                     source_manifest_sha256="f" * 64)
    b = write_shards(pairs, tmp_path / "b", split="train", crop_size=16, seed=5, progress=False)
    c = write_shards(pairs, tmp_path / "c", split="train", crop_size=16, seed=6, progress=False)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert [s["sha256"] for s in a["shards"]] != [s["sha256"] for s in c["shards"]]
    written = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert written["source_manifest_sha256"] == "f" * 64
    assert written["crop_size"] == 16 and written["crops_per_pair"] == 8 and written["records"] == 48


def test_a_tampered_shard_is_detected(pairs, tmp_path):
    manifest = write_shards(pairs, tmp_path / "t", split="train", crop_size=16, progress=False)
    shard = tmp_path / "t" / manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ShardError, match=r"train.tfrecord-00000-of-00001: sha256 differs"):
        read_manifest(tmp_path / "t", verify=True)


def test_bad_inputs_name_the_file_and_leave_no_shard_set(pairs, tmp_path):
    broken = pairs.copy()
    broken.loc[3, "input_path"] = str(tmp_path / "missing.png")
    with pytest.raises(ShardError, match="missing.png: cannot read image"):
        write_shards(broken, tmp_path / "out", split="train", crop_size=16, progress=False)
    assert not (tmp_path / "out").exists()
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)
    mismatched = pairs.copy()
    mismatched.loc[2, "target_path"] = str(small)
    with pytest.raises(ShardError, match=r"in2.png: size 52x40 differs from its target .*small.png"):
        write_shards(mismatched, tmp_path / "out", split="train", crop_size=16, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["small.png"]


def test_training_reader_augments_with_the_eight_symmetries(pairs, tmp_path):
    write_shards(pairs, tmp_path / "train", split="train", crop_size=16, crops_per_pair=2, progress=False)
    stored = {r[0].tobytes(): (r[0], r[1]) for r in read_all(tmp_path / "train")}
    ds = make_dataset(tmp_path / "train", batch_size=4, training=True, seed=0, shuffle_buffer=16)
    seen_transforms = set()
    for x, y in ds.take(20):
        assert x.shape == (4, 16, 16, 3) and x.dtype == tf.float32
        for xi, yi in zip(np.rint(x.numpy() * 255).astype(np.uint8), np.rint(y.numpy() * 255).astype(np.uint8),
                          strict=True):
            matched = False
            for k in range(8):
                undo = np.rot90(np.fliplr(xi) if k >= 4 else xi, -(k % 4))
                if undo.tobytes() in stored:
                    source, target = stored[undo.tobytes()]
                    redo = np.rot90(target, k % 4)
                    np.testing.assert_array_equal(np.fliplr(redo) if k >= 4 else redo, yi)
                    seen_transforms.add(k)
                    matched = True
                    break
            assert matched
    assert len(seen_transforms) >= 6


def test_validation_reader_is_deterministic_and_complete(pairs, tmp_path):
    write_shards(pairs, tmp_path / "v", split="validation", kind="full", progress=False)
    first = [x.numpy() for x, _ in make_dataset(tmp_path / "v", batch_size=4, training=False)]
    second = [x.numpy() for x, _ in make_dataset(tmp_path / "v", batch_size=4, training=False)]
    assert [len(b) for b in first] == [4, 2]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ShardError, match="manifest.json: missing"):
        make_dataset(tmp_path / "nothing", batch_size=1, training=False)


def test_whole_images_keep_their_shape_under_augmentation(pairs, tmp_path):
    write_shards(pairs, tmp_path / "full", split="train_full", kind="full", progress=False)
    ds = make_dataset(tmp_path / "full", batch_size=3, training=True, seed=0)
    for x, y in ds.take(10):
        assert x.shape == y.shape == (3, 40, 52, 3)


READ_TRAINING = """
import sys
from mirnet_pipeline.tasks.data.shards import make_dataset
for x, y in make_dataset(sys.argv[1], batch_size=4, training=True, seed=0, shuffle_buffer=16).take(10):
    pass
"""


def test_the_training_reader_reads_without_tensorflow_error_lines(pairs, tmp_path):
    """Its flips and rotations run on float32: TensorFlow's oneDNN kernels log
    an error line for uint8 ones on CPUs without AVX-512 (and fall back)."""
    import subprocess
    import sys
    from pathlib import Path

    write_shards(pairs, tmp_path / "train", split="train", crop_size=16, crops_per_pair=2, progress=False)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", READ_TRAINING, str(tmp_path / "train")], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [line for line in done.stderr.splitlines() if line.startswith(("E0000", "W0000"))], done.stderr
