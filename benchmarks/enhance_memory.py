"""Peak memory of the batch job over a bucket-sized chunk: 40 photos of 4 MP.

A child process runs one chunk of the batch job (``process_chunk``: reads and
decoding ahead in threads, tiles through the model, encoding and writing in
threads) over 40 JPEG photos of 2448x1632 pixels at the job's default
settings (tile 512, overlap 32, tile batch 2, batch 4, 4 I/O threads, chunk
size 200: all 40 in one chunk), and reports its peak resident memory
(``ru_maxrss``). Goal: under 2 GB, whatever the chunk size.

The model is a small MIRNet (1 RRG, 1 MRB, 16 channels) built here: the
measurement is about what the job holds (images read ahead, outputs waiting to
be written), and a tile's activations, which the tile settings bound, come on
top for larger models. ``--root`` runs another checkout's job code on the same
files and model (for example the commit before the read-ahead bound).

    ./pipeline run python benchmarks/enhance_memory.py
    ./pipeline run python benchmarks/enhance_memory.py --root /tmp/before
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from mirnet_pipeline.tasks.batch.engine import process_chunk
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.stores import open_store
job = EnhanceJob(source={source!r}, destination={destination!r}, model={model!r}, state_dir={state!r})
infos = open_store(job.source).list(job.include, job.exclude)
started = time.perf_counter()
rows = process_chunk(job, infos, "bench", 0, {{}})
print(json.dumps({{"images": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
                  "seconds": time.perf_counter() - started,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def photos(folder: Path, count: int, size=(2448, 1632)) -> None:
    """``count`` JPEG photos (gradients with detail and noise) of ``size`` pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        rng = np.random.default_rng(i)
        base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / (40 + i))], axis=2) * 200
        noisy = base + rng.normal(0, 12, base.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"photo{i:02d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--root", default=str(ROOT), help="checkout whose job code runs")
    record.add_option(parser)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import keras

    from mirnet_pipeline.model import build_model

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        photos(scratch / "in", args.images)
        keras.utils.set_random_seed(0)
        build_model("mirnet", num_rrg=1, num_mrb=1, channels=16).save(scratch / "model.keras")
        code = CHILD.format(root=args.root, source=str(scratch / "in"), destination=str(scratch / "out"),
                            model=str(scratch / "model.keras"), state=str(scratch / "state"))
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=args.root)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(child.stdout.strip().splitlines()[-1])
        megabytes = sum(p.stat().st_size for p in (scratch / "in").iterdir()) / 2**20
    result.update(root=args.root, input_mb=round(megabytes, 1), wall_seconds=time.perf_counter() - started)
    print(f"{result['ok']}/{result['images']} photos of 4 MP ({result['input_mb']:.0f} MB of JPEG) in "
          f"{result['seconds']:.0f} s; peak resident memory {result['peak_gb']:.2f} GB (goal: under 2 GB)")
    print(json.dumps(result))
    record.record(args.record, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
