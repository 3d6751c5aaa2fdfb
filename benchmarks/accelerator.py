"""The accelerator's figures in one go, within a time budget.

Runs ``benchmarks/train_throughput.py`` for each of the research's presets
(the research's batch in float32 and bfloat16, and MIRNet at batches that
fill the chip), inference of one 4000x6000 photo whole and in tiles, and the
chip's own bfloat16 matrix-product rate (its practical peak), under the Keras
backends named by ``--backends``. Up to ``--parallel`` runs at once: they
compile side by side and time one at a time (``train_throughput.py
--exclusive``). Runs still waiting when the budget is spent are left out,
and one still running then is stopped; each is listed with its outcome.

    python3 benchmarks/accelerator.py --backends jax,torch --record docs/results/accelerator-h200.json

Meant for a machine with an accelerator and Keras with the JAX (or PyTorch)
backend; it needs neither TensorFlow nor the project's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402

SCRIPT = "benchmarks/train_throughput.py"
PHOTO = ["--mode", "infer", "--size", "4000x6000", "--steps", "3", "--warmup", "2"]


def plan(backends: list[str]) -> list[tuple[str, str, list[str]]]:
    """(name, backend, arguments) of every run, the most wanted first."""
    runs = []
    for backend in backends:
        first = backend == backends[0]
        runs += [(f"{backend}-mirnet-float32-b4", backend, ["--preset", "mirnet"]),
                 (f"{backend}-mirnet-bfloat16-b4", backend, ["--preset", "mirnet", "--precision", "bfloat16"])]
        if not first:
            continue
        runs += [(f"{backend}-mirnet-bfloat16-b64", backend,
                  ["--preset", "mirnet", "--precision", "bfloat16", "--batch", "64", "--steps", "10"]),
                 (f"{backend}-photo-tiled-bfloat16", backend,
                  ["--preset", "mirnet", "--precision", "bfloat16", *PHOTO, "--tiled", "--batch", "16"])]
        for preset in ("mirnet32", "mirnet_v2", "cnn128", "cnn256"):
            for precision in ("float32", "bfloat16"):
                runs.append((f"{backend}-{preset}-{precision}", backend,
                             ["--preset", preset, "--precision", precision]))
        runs += [(f"{backend}-mirnet-float32-b64", backend, ["--preset", "mirnet", "--batch", "64", "--steps", "10"]),
                 (f"{backend}-photo-whole-bfloat16", backend,
                  ["--preset", "mirnet", "--precision", "bfloat16", *PHOTO, "--batch", "1"]),
                 (f"{backend}-photo-tiled-float32", backend,
                  ["--preset", "mirnet", *PHOTO, "--tiled", "--batch", "16"]),
                 (f"{backend}-photo-tiled1024-bfloat16", backend,
                  ["--preset", "mirnet", "--precision", "bfloat16", *PHOTO, "--tiled", "--tile", "1024",
                   "--batch", "4"]),
                 (f"{backend}-mirnet-bfloat16-b128", backend,
                  ["--preset", "mirnet", "--precision", "bfloat16", "--batch", "128", "--steps", "5"])]
    return runs


def matmul_rate(size: int, lock: Path, repeats: int = 10) -> dict:
    """The backend's bfloat16 matrix-product rate on random data (TFLOP/s),
    timed while holding ``lock``."""
    import keras
    import numpy as np

    from benchmarks.train_throughput import exclusive

    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32), dtype="bfloat16")
    b = keras.ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32), dtype="bfloat16")
    if keras.backend.backend() == "jax":
        import jax

        product = jax.jit(lambda x, y: x @ y)
    else:
        product = keras.ops.matmul
    keras.ops.convert_to_numpy(product(a, b)[0, 0])  # compiles
    with exclusive(lock):
        for _ in range(2):
            keras.ops.convert_to_numpy(product(a, b)[0, 0])
        started = time.perf_counter()
        for _ in range(repeats):
            out = product(a, b)
        keras.ops.convert_to_numpy(out[0, 0])
        seconds = (time.perf_counter() - started) / repeats
    return {"backend": keras.backend.backend(), "size": size, "bf16_matmul_tflops": 2 * size**3 / seconds / 1e12}


def run_one(name: str, backend: str, arguments: list[str], folder: Path, deadline: float) -> dict:
    """One benchmark run in its own process, stopped at ``deadline``."""
    command = f"KERAS_BACKEND={backend} python3 {SCRIPT} {shlex.join(arguments)}"
    left = deadline - time.monotonic()
    if left < 30:
        return {"name": name, "command": command, "outcome": "not run: the budget was spent"}
    out = folder / f"{name}.json"
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(folder / f"{name}.log", "w") as log:
        try:
            done = subprocess.run([sys.executable, str(ROOT / SCRIPT), *arguments, "--json", str(out),
                                   "--exclusive", str(folder / "timing.lock")],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=left)
            outcome = "ok" if done.returncode == 0 and out.is_file() else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            outcome = "stopped: the budget was spent"
    entry = {"name": name, "command": command, "outcome": outcome, "seconds": round(time.monotonic() - started, 1)}
    if outcome == "ok":
        entry["result"] = json.loads(out.read_text())
    else:
        entry["log_tail"] = (folder / f"{name}.log").read_text()[-2000:]
    print(f"{name}: {outcome} after {entry['seconds']:.0f} s", flush=True)
    return entry


def ceiling(backend: str, size: int, folder: Path, deadline: float) -> dict:
    """The chip's practical bfloat16 peak, measured in its own process."""
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        done = subprocess.run([sys.executable, __file__, "--ceiling-only", str(size), str(folder / "timing.lock")],
                              env=env, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return {"outcome": "stopped: the budget was spent"}
    if done.returncode != 0:
        return {"outcome": f"failed (exit {done.returncode})", "log_tail": done.stderr[-2000:]}
    result = {"outcome": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}
    print(f"bfloat16 matrix products: {result['bf16_matmul_tflops']:.0f} TFLOP/s", flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="jax", help="Keras backends, comma-separated, the first in full")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole set")
    parser.add_argument("--parallel", type=int, default=6, help="runs at once (they compile side by side)")
    parser.add_argument("--only", help="run only these runs (names, comma-separated; part of a name will do)")
    parser.add_argument("--extra", default="", help="arguments added to every run's (a small model for a try-out)")
    parser.add_argument("--logs", type=Path, help="keep each run's log and JSON in this folder")
    parser.add_argument("--matmul", type=int, default=8192, help="size of the matrices that measure the peak")
    parser.add_argument("--ceiling-only", nargs=2, help=argparse.SUPPRESS)
    record.add_option(parser)
    args = parser.parse_args(argv)
    if args.ceiling_only:
        print(json.dumps(matmul_rate(int(args.ceiling_only[0]), Path(args.ceiling_only[1]))))
        return {}
    deadline = time.monotonic() + args.budget
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    extra = shlex.split(args.extra)
    runs = [(name, backend, arguments + extra) for name, backend, arguments in plan(backends)
            if not args.only or any(part in name for part in args.only.split(","))]
    folder = args.logs or Path(tempfile.mkdtemp(prefix="accelerator-"))
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        peak = pool.submit(ceiling, backends[0], args.matmul, folder, deadline)
        entries = list(pool.map(lambda r: run_one(*r, folder, deadline), runs))
        peak = peak.result()
    result = {"benchmark": "accelerator", "ceiling": peak, "runs": entries}
    (folder / "accelerator.json").write_text(json.dumps(result, indent=1))
    record.record(args.record, result)
    return result


if __name__ == "__main__":
    main()
