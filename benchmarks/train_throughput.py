"""Training (and inference) throughput of one model under the Keras backend that
``KERAS_BACKEND`` names (tensorflow, jax or torch), on whatever device it finds.

Training: a preset of the research (or any architecture and options) trains
on synthetic batches (random crops, the same every step) or, where TensorFlow
is installed for ``tf.data``, on a shard set (``--shards``); after
``--warmup`` steps (compilation) it times ``--steps`` steps and prints crops/s,
the time per step, peak accelerator memory (host peak RSS on a CPU) and the
research's own figure beside it (RTX 4080), with the ratio.

Inference (``--mode infer``): megapixels/s of the inference helper on
``--size`` images (``infer``, a batch at a time) and, with ``--tiled``, on one
photo of that size in tiles (``infer_tiled``), and the arithmetic rate it
reaches (MACs from ``model.complexity``).

    KERAS_BACKEND=jax ./pipeline run python benchmarks/train_throughput.py --preset mirnet --precision bfloat16
    ./pipeline run python benchmarks/train_throughput.py --preset cnn128 --batch 8
    ./pipeline run python benchmarks/train_throughput.py --preset mirnet --mode infer --size 400x600 --batch 8
    ./pipeline run python benchmarks/train_throughput.py --preset mirnet --mode infer --size 4000x6000 --tiled

Several of these may share one accelerator: with ``--exclusive FILE`` each
compiles and runs its first step freely, then holds an exclusive lock on FILE
for the rest of its warm-up and its timed steps, so timings never overlap
(``benchmarks/accelerator.py`` runs the whole set that way).

Prints a human line and, with ``--json FILE``, writes the figures there.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402

# The research's settings and what they reached on an RTX 4080: steps per
# epoch, seconds per epoch and what one step trains on.
PRESETS = {
    "mirnet": dict(arch="mirnet", options=dict(num_rrg=3, num_mrb=2, channels=64), batch=4, size=(128, 128),
                   research=dict(steps=90, seconds=32.5, note="MIRNet (3,2,64), 90 steps in 32-33 s")),
    "mirnet32": dict(arch="mirnet", options=dict(num_rrg=3, num_mrb=2, channels=32), batch=4, size=(128, 128),
                     research=dict(steps=90, seconds=22.0, note="MIRNet (3,2,32), 90 steps in 22 s")),
    "mirnet_v2": dict(arch="mirnet_v2", options={}, batch=4, size=(128, 128), research=None),
    "cnn128": dict(arch="cnn", options=dict(channels=128), batch=8, size=(384, 512),
                   research=dict(steps=45, seconds=13.5, note="CNN-128, 45 steps in 13-14 s")),
    "cnn256": dict(arch="cnn", options=dict(channels=256), batch=8, size=(384, 512),
                   research=dict(steps=45, seconds=54.0, note="CNN-256, 45 steps in 54 s")),
}
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def parse_size(text: str) -> tuple[int, int]:
    """``128`` or ``384x512`` (height x width)."""
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def parse_options(text: str) -> dict:
    """``num_rrg=1,channels=8,non_local=true`` -> builder options (values read as YAML)."""
    import yaml

    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {key.strip(): yaml.safe_load(value) for key, _, value in pairs}


def accelerator() -> dict:
    """The backend's device and its peak memory so far (bytes; None on a CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        return {"device": f"{device.platform}:{device.device_kind}",
                "peak_bytes": stats.get("peak_bytes_in_use") if stats else None}
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return {"device": f"cuda:{torch.cuda.get_device_name(0)}", "peak_bytes": torch.cuda.max_memory_allocated()}
        return {"device": "cpu", "peak_bytes": None}
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return {"device": f"gpu:{tf.config.experimental.get_device_details(gpus[0]).get('device_name', '')}",
                "peak_bytes": tf.config.experimental.get_memory_info("GPU:0")["peak"]}
    return {"device": "cpu", "peak_bytes": None}


def research_rate(preset: str, options: dict, size: tuple[int, int]) -> dict | None:
    """The research's crops (or images) per second for this preset, where the
    model and crop size are the preset's own (None otherwise, or if unknown)."""
    spec = PRESETS[preset]
    if spec["research"] is None or options != spec["options"] or tuple(size) != spec["size"]:
        return None
    research = spec["research"]
    return {"research_crops_per_second": research["steps"] * spec["batch"] / research["seconds"],
            "research": research["note"] + " on an RTX 4080"}


def host_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(value) -> float:
    """A step's loss as a float: waits for the device to finish the step."""
    import keras

    return float(keras.ops.convert_to_numpy(value if not isinstance(value, (list, tuple)) else value[0]))


def batches(args, height: int, width: int):
    """Endless (input, target) batches: synthetic, or from a shard set."""
    import numpy as np

    if args.shards:
        from mirnet_pipeline.tasks.data.shards import make_dataset

        yield from make_dataset(args.shards, args.batch, training=True, seed=0).as_numpy_iterator()
        return
    rng = np.random.default_rng(0)
    targets = rng.random((args.batch, height, width, 3), dtype=np.float32)
    inputs = np.clip(targets + rng.normal(0, 0.1, targets.shape), 0, 1).astype(np.float32)
    while True:
        yield inputs, targets


@contextlib.contextmanager
def exclusive(path: Path | None):
    """Hold an exclusive lock on ``path`` (nothing when it is None)."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train(args, model, height: int, width: int) -> dict:
    import keras

    from mirnet_pipeline.model import get_loss

    loss = get_loss(args.loss, weights="random") if args.loss.endswith("+perceptual") else get_loss(args.loss)
    backend = keras.backend.backend()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss,
                  jit_compile=args.xla if backend != "torch" else False)
    data = batches(args, height, width)
    started = time.perf_counter()
    synchronize(model.train_on_batch(*next(data)))  # compiles
    first_step = time.perf_counter() - started
    times = []
    with exclusive(args.exclusive):
        for _ in range(args.warmup - 1):
            synchronize(model.train_on_batch(*next(data)))
        for _ in range(args.steps):
            x, y = next(data)
            step = time.perf_counter()
            synchronize(model.train_on_batch(x, y))
            times.append(time.perf_counter() - step)
    seconds = sum(times)
    crops = args.batch * args.steps
    return {"crops_per_second": crops / seconds, "step_ms": 1000 * seconds / args.steps,
            "median_step_ms": 1000 * sorted(times)[len(times) // 2], "first_step_seconds": first_step,
            "crop": [int(x.shape[1]), int(x.shape[2])]}


def infer_rate(args, model, height: int, width: int, gmacs_per_megapixel: float) -> dict:
    import numpy as np

    from mirnet_pipeline.model import infer, infer_tiled

    rng = np.random.default_rng(0)
    if args.tiled:
        image = rng.random((height, width, 3), dtype=np.float32)

        def run():
            return infer_tiled(model, image, tile=args.tile, overlap=args.overlap, batch_size=args.batch)

        pixels = height * width
    else:
        images = rng.random((args.batch, height, width, 3), dtype=np.float32)

        def run():
            return infer(model, images, batch_size=args.batch)

        pixels = args.batch * height * width
    started = time.perf_counter()
    run()  # compiles
    first_step = time.perf_counter() - started
    with exclusive(args.exclusive):
        for _ in range(args.warmup - 1):
            run()
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    seconds = sum(times) / args.steps
    megapixels = pixels / 1e6
    return {"megapixels_per_second": megapixels / seconds, "seconds_per_call": seconds,
            "median_seconds_per_call": sorted(times)[len(times) // 2],
            "first_step_seconds": first_step, "megapixels_per_call": megapixels,
            "tera_macs_per_second": gmacs_per_megapixel * megapixels / seconds / 1e3}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mirnet",
                        help="the research's model and settings (default: mirnet, i.e. MIRNet (3,2,64))")
    parser.add_argument("--options", default="", help="builder options over the preset's: num_rrg=1,channels=8")
    parser.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--size", type=parse_size, help="crop or image size, 128 or HxW (default: the preset's)")
    parser.add_argument("--precision", choices=sorted(POLICIES), default="float32")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the step with XLA (TensorFlow, JAX; PyTorch never)")
    parser.add_argument("--loss", default="mse", help="mse, charbonnier, mse+perceptual (random VGG weights), ...")
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--tiled", action="store_true", help="infer: one photo of --size, in tiles")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--shards", type=Path, help="train on this shard set (needs TensorFlow for tf.data)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (calls when inferring)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, the first compiles (at least 1)")
    parser.add_argument("--exclusive", type=Path, metavar="FILE",
                        help="after the first step, hold an exclusive lock on FILE while warming up and timing")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    record.add_option(parser)
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "warmup"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    import keras

    from mirnet_pipeline.model import build_model
    from mirnet_pipeline.model.complexity import describe

    preset = PRESETS[args.preset]
    options = {**preset["options"], **parse_options(args.options)}
    args.batch = args.batch or preset["batch"]
    height, width = args.size or preset["size"]
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(POLICIES[args.precision])
    model = build_model(preset["arch"], **options)
    keras.mixed_precision.set_global_policy("float32")
    gmacs = describe(preset["arch"], 256, 256, **options)["gmacs_per_megapixel"]
    result = {"backend": keras.backend.backend(), "preset": args.preset, "arch": preset["arch"], "options": options,
              "parameters": int(model.count_params()), "gmacs_per_megapixel": gmacs, "precision": args.precision,
              "batch": args.batch, "size": [height, width], "mode": args.mode,
              "data": str(args.shards) if args.shards else "synthetic", "steps": args.steps}
    if args.mode == "train":
        result.update(train(args, model, height, width))
    else:
        result.update(infer_rate(args, model, height, width, gmacs), tiled=args.tiled)
        if args.tiled:
            result.update(tile=args.tile, overlap=args.overlap)
    result.update(accelerator())
    result["host_peak_rss_bytes"] = host_peak_rss()
    research = research_rate(args.preset, options, (height, width))
    if args.mode == "train" and research:
        result.update(research, ratio_to_research=result["crops_per_second"] / research["research_crops_per_second"])

    memory = result["peak_bytes"] if result["peak_bytes"] is not None else result["host_peak_rss_bytes"]
    where = "peak accelerator memory" if result["peak_bytes"] is not None else "host peak RSS"
    head = (f"{args.preset} {options} {args.precision} on {result['device']} ({result['backend']}), "
            f"batch {args.batch} of {height}x{width}")
    if args.mode == "train":
        line = (f"{head}: {result['crops_per_second']:.2f} crops/s, {result['step_ms']:.1f} ms/step "
                f"(median {result['median_step_ms']:.1f}), {where} {memory / 2**30:.2f} GiB")
        if "research_crops_per_second" in result:
            line += (f"; research {result['research_crops_per_second']:.1f} crops/s ({result['research']}): "
                     f"x{result['ratio_to_research']:.2f}")
    else:
        line = (f"{head}{' tiled' if args.tiled else ''}: {result['megapixels_per_second']:.3f} MP/s, "
                f"{result['tera_macs_per_second']:.3f} TMAC/s ({gmacs:.2f} GMAC/MP), {where} "
                f"{memory / 2**30:.2f} GiB")
    print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    record.record(args.record, result)
    return result


if __name__ == "__main__":
    main()
