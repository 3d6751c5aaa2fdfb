"""Batch enhancement against a naive loop, and memory for one 24-megapixel photo.

Throughput: the batch job's chunk processing (``tasks.batch.engine``: reads and
decoding ahead in threads, same-size images batched, compiled prediction,
encoding and writing in threads) against a naive loop (open one image, call
``model.predict`` on the whole image, save, next), same model, same 512x384
images, same run; the naive loop runs twice (``--naive-runs``) and its faster
run counts, so a slow moment of a shared machine cannot flatter the ratios.
The batch job runs once per ``--precisions`` entry (float32 first; bfloat16 is
the opt-in lower precision); how far its outputs are from the naive loop's
(float32) or float32's (others) is printed in 8-bit levels. The model alone
(``predict_on_batch`` on decoded images, nothing else) is timed too: no
pipeline can beat it, so it bounds the ratio.

Exported runtimes: the same model exported to ONNX and OpenVINO
(``tasks.export``), and its int8 model (ONNX Runtime's static quantization,
calibrated on 64x64 crops of the benchmark's own images), each run by the
batch job (``--runtime``) and alone; outputs are compared with the batch job's
Keras float32 outputs in 8-bit levels and as PSNR. ``--mirnet 3,2,32`` picks
the architecture's RRGs, MRBs and channels (default 1,1,16: the demo's MIRNet).
The model is untrained: the int8 PSNR against ground truth of a trained model
is in ``mirnet-export --int8``'s report.

The batch job's own work (decoding, encoding, the no-reference measures of
input and output) is timed per image on one core; with the model alone's rate
it gives each runtime's bound on these cores, if model and own work shared
them perfectly.

Memory: peak resident memory of a child process enhancing one 6000x4000 photo
tiled as the batch job does (its default tile, overlap and tile batch) against
one calling the model on the whole image; a child going over
``--memory-cap-gb`` is stopped and reported as over it.

Prints a human line per measurement and a JSON line.

    ./pipeline run python benchmarks/enhance_throughput.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402

MEMORY_CHILD = """
import sys, time, numpy as np, keras
sys.path.insert(0, {root!r})
from mirnet_pipeline.model import infer_tiled
from mirnet_pipeline.tasks.batch.engine import load_job_model
from mirnet_pipeline.tasks.batch.job import EnhanceJob
m = load_job_model({model!r}).model if {tiled} else keras.saving.load_model({model!r})
job = EnhanceJob(source="", destination="", model="")
image = np.random.default_rng(0).random((4000, 6000, 3), dtype=np.float32)
start = time.perf_counter()
if {tiled}:
    out = infer_tiled(m, image, tile=job.tile, overlap=job.overlap, batch_size=job.tile_batch_size)
else:
    out = np.clip(m.predict(image[None], verbose=0)[0], 0, 1)
print(time.perf_counter() - start)
"""


def make_model(path: Path, rrg: int, mrb: int, channels: int) -> str:
    import keras

    from mirnet_pipeline.model import build_model

    keras.utils.set_random_seed(0)
    build_model("mirnet", num_rrg=rrg, num_mrb=mrb, channels=channels).save(path)
    return str(path)


def make_exports(model_path: str, source: Path, folder: Path, calibration: int) -> dict[str, str]:
    """{name: model file}: ONNX, OpenVINO and the int8 ONNX model."""
    import keras

    from mirnet_pipeline.tasks.export.formats import export_model
    from mirnet_pipeline.tasks.export.quantize import quantize_onnx

    written = export_model(keras.saving.load_model(model_path), folder, ("onnx", "openvino"))
    rng = np.random.default_rng(0)
    images = [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in sorted(source.glob("*.png"))]
    crops = []
    for i in range(calibration):
        image = images[i % len(images)]
        y, x = rng.integers(0, image.shape[0] - 64), rng.integers(0, image.shape[1] - 64)
        crops.append(image[None, y : y + 64, x : x + 64])
    int8 = quantize_onnx(written["onnx"], crops, folder / "model.int8.onnx")
    return {"onnx": str(written["onnx"]), "openvino": str(written["openvino"]), "int8": str(int8)}


def make_images(folder: Path, count: int) -> None:
    from mirnet_pipeline.tasks.data.distortions import distort
    from mirnet_pipeline.tasks.data.sample import TID_REFERENCES, tid_reference

    folder.mkdir(parents=True, exist_ok=True)
    numbers = sorted(TID_REFERENCES)
    for i in range(count):
        reference = tid_reference(numbers[i % len(numbers)])
        Image.fromarray(distort(reference, 1 + i % 24, 5, seed=i)).save(folder / f"img{i:04d}.png")


def naive_loop(model_path: str, source: Path, out: Path) -> float:
    import keras

    import mirnet_pipeline.model  # noqa: F401

    m = keras.saving.load_model(model_path)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in sorted(source.glob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        result = np.clip(m.predict(image[None], verbose=0)[0], 0, 1)
        Image.fromarray(np.rint(result * 255).astype(np.uint8)).save(out / path.name)
    return time.perf_counter() - start


def batch_job(model_path: str, source: Path, out: Path, batch: int, precision: str,
              runtime: str | None = None) -> float:
    from mirnet_pipeline.tasks.batch.engine import ChunkProcessor
    from mirnet_pipeline.tasks.batch.job import EnhanceJob
    from mirnet_pipeline.tasks.batch.stores import open_store

    job = EnhanceJob(source=str(source), destination=str(out), model=model_path, batch_size=batch,
                     precision=precision, runtime=runtime, state_dir=str(out / ".state"))
    infos = open_store(job.source).list(job.include, job.exclude)
    processor = ChunkProcessor(job)  # loads the model, as the naive loop does before its clock
    start = time.perf_counter()
    rows = processor.run(infos, {})
    elapsed = time.perf_counter() - start
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"][:3]
    return elapsed


def model_only(model_path: str, source: Path, batch: int, runtime: str | None = None) -> float:
    """Seconds for the model alone on the decoded images, ``batch`` at a time."""
    from mirnet_pipeline.tasks.batch.engine import load_job_model

    m = load_job_model(model_path, "float32", runtime).model
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0
                       for p in sorted(source.glob("*.png"))])
    m.predict_on_batch(images[:batch])  # compiled before the clock, as in the batch job
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        m.predict_on_batch(images[i : i + batch])
    return time.perf_counter() - start


def own_work(source: Path) -> dict[str, float]:
    """Milliseconds of one core per image for the batch job's own work on
    ``source``'s images, best of three: reading and decoding, encoding the
    output (an image of the same size, in the same format) and the
    no-reference measures of input and output."""
    from mirnet_pipeline.tasks.batch.images import decode, encode, no_reference
    from mirnet_pipeline.tasks.batch.job import PNG_LEVEL

    data = [p.read_bytes() for p in sorted(source.glob("*.png"))][:8]
    decoded = [decode(d, "image", 10**9) for d in data]
    steps = {"decode": lambda i: decode(data[i], "image", 10**9).rgb,
             "encode": lambda i: encode(decoded[i], decoded[i].rgb, png_level=PNG_LEVEL),
             "measures": lambda i: (no_reference(decoded[i].rgb), no_reference(decoded[i].rgb))}
    return {name: _best_ms(step, len(data)) for name, step in steps.items()}


def _best_ms(step, count: int, repeats: int = 3) -> float:
    """Milliseconds a call of ``step(i)`` over ``range(count)``, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            step(i)
        best = min(best, (time.perf_counter() - start) / count)
    return 1000 * best


def png_levels(source: Path, levels=(1, 6)) -> dict[str, dict[str, float]]:
    """{level: {"ms", "bytes"}}: the encoder's time and the file's size a photo at each zlib level."""
    from mirnet_pipeline.tasks.batch.images import decode, encode

    decoded = [decode(p.read_bytes(), "image", 10**9) for p in sorted(source.glob("*.png"))[:8]]
    out = {}
    for level in levels:
        def step(i: int, level: int = level) -> bytes:
            return encode(decoded[i], decoded[i].rgb, png_level=level)

        out[str(level)] = {"ms": _best_ms(step, len(decoded)),
                           "bytes": float(np.mean([len(step(i)) for i in range(len(decoded))]))}
    return out


def ceiling_with_own_work(model_images_per_s: float, own_ms: float, cores: int) -> float:
    """Images/s of the batch job if the model alone ran at ``model_images_per_s``
    on all ``cores`` and the job's own work (``own_ms`` of one core per image)
    shared them perfectly: what no scheduling can beat."""
    return 1.0 / (1.0 / model_images_per_s + own_ms / 1000.0 / cores)


def difference_levels(first: Path, second: Path) -> tuple[float, float, float]:
    """(max, mean, share of values that differ) between two folders of 8-bit PNGs, in 8-bit levels."""
    diffs = [np.abs(np.asarray(Image.open(a), np.int16) - np.asarray(Image.open(second / a.name), np.int16))
             for a in sorted(first.glob("*.png"))]
    stacked = np.stack(diffs)
    return float(stacked.max()), float(stacked.mean()), float((stacked > 0).mean())


def psnr_between(first: Path, second: Path) -> float:
    """PSNR (dB, 8-bit data range) of one folder's PNGs against another's, over all pixels."""
    errors = [np.mean((np.asarray(Image.open(a), np.float64)
                       - np.asarray(Image.open(second / a.name), np.float64)) ** 2)
              for a in sorted(first.glob("*.png"))]
    mse = float(np.mean(errors))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def peak_memory(model_path: str, tiled: bool, cap_gb: float) -> tuple[float, bool, float | None]:
    """(peak RSS in GB, whether the cap stopped it, seconds)."""
    import psutil

    child = subprocess.Popen([sys.executable, "-c", MEMORY_CHILD.format(root=str(ROOT), model=model_path,
                                                                        tiled=tiled)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    process, peak, capped = psutil.Process(child.pid), 0, False
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > cap_gb * 2**30:
            child.kill()
            capped = True
            break
        time.sleep(0.05)
    output = child.communicate()[0].strip()
    seconds = float(output.splitlines()[-1]) if output and not capped else None
    return peak / 2**30, capped, seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--naive-runs", type=int, default=2, help="naive loop runs; the fastest counts")
    parser.add_argument("--precisions", default="float32,bfloat16", help="batch job runs, comma-separated")
    parser.add_argument("--runtimes", default="onnxruntime,openvino", help="exported runtimes, comma-separated "
                                                                         "('' for none)")
    parser.add_argument("--no-int8", action="store_true", help="leave the int8 model out")
    parser.add_argument("--calibration", type=int, default=100, help="64x64 crops to calibrate int8 on")
    parser.add_argument("--mirnet", default="1,1,16", help="RRGs, MRBs and channels of the MIRNet measured")
    parser.add_argument("--memory-cap-gb", type=float, default=12.0)
    parser.add_argument("--skip-memory", action="store_true")
    record.add_option(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="enhance-bench-") as folder:  # removed afterwards, whatever happens
        return measure(args, Path(folder))


def measure(args, work: Path) -> dict:
    from mirnet_pipeline.tasks.export.runtimes import available_cores

    rrg, mrb, channels = (int(v) for v in args.mirnet.split(","))
    model_path = make_model(work / "mirnet.keras", rrg, mrb, channels)
    make_images(work / "in", args.images)
    megapixels = args.images * 512 * 384 / 1e6
    # the fastest of --naive-runs: the ratios below are against the naive loop at its best
    naive = min(naive_loop(model_path, work / "in", work / "naive") for _ in range(args.naive_runs))
    alone = model_only(model_path, work / "in", args.batch)
    result = {
        "benchmark": "enhance_throughput",
        "model": f"mirnet ({rrg} RRG, {mrb} MRB, {channels} channels)",
        "images": args.images,
        "naive_images_per_s": args.images / naive,
        "naive_megapixels_per_s": megapixels / naive,
        "model_only_images_per_s": args.images / alone,
        "model_only_ratio": naive / alone,
    }
    lines = [f"mirnet ({rrg} RRG, {mrb} MRB, {channels} channels), "
             f"{args.images} images 512x384: naive loop {args.images / naive:.2f} img/s "
             f"({megapixels / naive:.2f} MP/s); "
             f"the model alone (float32) {args.images / alone:.2f} img/s = {naive / alone:.2f}x the naive loop, "
             "the most any pipeline could reach"]
    costs = own_work(work / "in")
    own_ms = sum(costs.values())
    cores = available_cores()
    result["own_work_ms_per_image"] = costs
    result["png_levels"] = png_levels(work / "in")
    lines.append("PNG encoding a photo: " + ", ".join(f"level {level} {v['ms']:.1f} ms, {v['bytes'] / 1024:.0f} KiB"
                                                      for level, v in result["png_levels"].items()))
    lines.append(f"the batch job's own work: {own_ms:.1f} ms of one core per image ("
                 + ", ".join(f"{k} {v:.1f}" for k, v in costs.items())
                 + f"); with it on the same {cores} cores, the model alone's {args.images / alone:.2f} img/s "
                 f"becomes at most {ceiling_with_own_work(args.images / alone, own_ms, cores):.2f}")
    for precision in args.precisions.split(","):
        batched = batch_job(model_path, work / "in", work / f"batch-{precision}", args.batch, precision)
        result[f"batch_{precision}_images_per_s"] = args.images / batched
        result[f"batch_{precision}_megapixels_per_s"] = megapixels / batched
        result[f"ratio_{precision}"] = naive / batched
        line = (f"batch job, {precision}: {args.images / batched:.2f} img/s ({megapixels / batched:.2f} MP/s) "
                f"= {naive / batched:.2f}x the naive loop")
        # float32 against the naive loop's outputs, lower precisions against float32's
        baseline = work / ("naive" if precision == "float32" else "batch-float32")
        largest, mean, share = difference_levels(baseline, work / f"batch-{precision}")
        result[f"{precision}_difference"] = {"against": baseline.name, "max_levels": largest, "mean_levels": mean,
                                             "share_differing": share}
        line += (f"; output vs {baseline.name}: max {largest:.0f} levels, mean {mean:.3f}, "
                 f"{share:.1%} of 8-bit values differ")
        lines.append(line)
    runtimes = [r for r in args.runtimes.split(",") if r]
    if runtimes:
        exports = make_exports(model_path, work / "in", work / "export", args.calibration)
        keras_outputs = work / "batch-float32"
        if not keras_outputs.exists():
            batch_job(model_path, work / "in", keras_outputs, args.batch, "float32")
        runs = [(r, "float32", exports["onnx" if r == "onnxruntime" else "openvino"]) for r in runtimes]
        runs += [] if args.no_int8 else [(r, "int8", exports["int8"]) for r in runtimes]
        for runtime, kind, file in runs:
            name = f"{runtime}_{kind}"
            batched = batch_job(file, work / "in", work / f"batch-{name}", args.batch, "float32", runtime)
            ceiling = model_only(file, work / "in", args.batch, runtime)
            largest, mean, share = difference_levels(keras_outputs, work / f"batch-{name}")
            psnr = psnr_between(keras_outputs, work / f"batch-{name}")
            bound = ceiling_with_own_work(args.images / ceiling, own_ms, cores)
            result[name] = {"images_per_s": args.images / batched, "ratio": naive / batched,
                            "model_only_images_per_s": args.images / ceiling, "model_only_ratio": naive / ceiling,
                            "with_own_work_at_most_images_per_s": bound,
                            "max_levels": largest, "mean_levels": mean, "share_differing": share,
                            "psnr_vs_keras_db": psnr}
            lines.append(f"batch job, {runtime} {kind}: {args.images / batched:.2f} img/s = {naive / batched:.2f}x "
                         f"the naive loop (the model alone {args.images / ceiling:.2f} img/s = "
                         f"{naive / ceiling:.2f}x; with the job's own work at most {bound:.2f} img/s = "
                         f"{naive * bound / args.images:.2f}x); output vs Keras float32: max {largest:.0f} levels, "
                         f"mean {mean:.3f}, PSNR {psnr:.1f} dB")
    if not args.skip_memory:
        tiled = peak_memory(model_path, True, args.memory_cap_gb)
        whole = peak_memory(model_path, False, args.memory_cap_gb)
        result.update(tiled_peak_gb=tiled[0], tiled_seconds=tiled[2], whole_peak_gb=whole[0],
                      whole_capped=whole[1], whole_seconds=whole[2], memory_cap_gb=args.memory_cap_gb)
        whole_text = (f"over {args.memory_cap_gb:.0f} GB (stopped)" if whole[1] else f"{whole[0]:.2f} GB")
        lines.append(f"24 MP photo peak memory: tiled {tiled[0]:.2f} GB, whole-image call {whole_text}")
    print("\n".join(lines))
    print(json.dumps(result))
    record.record(args.record, result)
    return result


if __name__ == "__main__":
    main()
