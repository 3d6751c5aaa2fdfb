"""The main job: the whole pipeline with ``dvc repro``, with Prefect's own
server on 127.0.0.1 for its length, then what came out of it.

    ./pipeline demo              # = python -m flows.demo
    ./pipeline demo --force      # arguments go to `dvc repro`

Exits with ``dvc repro``'s status. Nothing it starts (the Prefect server,
``dvc`` and its stages) outlives it, also when it is stopped with Ctrl-C or
killed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from tasks import artifacts
from tasks.config import ConfigError, load_params
from tasks.services import prefect_server, start_child, stop_child

PREFECT_LOG = Path(".prefect") / "server.log"


def _stop(signum, frame):  # SIGTERM ends the demo the way Ctrl-C does
    raise KeyboardInterrupt


def headline(metrics: dict, split: str = "validation") -> list[dict]:
    """One row per variant and dataset: PSNR in -> out and the gain."""
    rows = []
    for variant, per_dataset in metrics.items():
        for dataset, splits in per_dataset.items():
            if split in splits:
                m = splits[split]
                rows.append({"variant": variant, "dataset": dataset, "images": m["images"],
                             "input_psnr": m["input_psnr"], "output_psnr": m["output_psnr"],
                             "gain": m["psnr_gain"]})
    return rows


def summary_text(metrics: dict, seconds: float) -> str:
    lines = [f"Done in {seconds / 60:.1f} min. PSNR on the validation images (dB, data range 1):", "",
             f"  {'variant':<12} {'dataset':<8} {'images':>6}   {'input -> output':>17}   {'gain':>7}"]
    for r in headline(metrics):
        lines.append(f"  {r['variant']:<12} {r['dataset']:<8} {r['images']:>6}   "
                     f"{r['input_psnr']:>7.2f} -> {r['output_psnr']:>6.2f}   {r['gain']:>+7.2f}")
    lines += [
        "",
        "Where to look next:",
        f"  {artifacts.COMPARISON}                       every variant against doing nothing, per distortion type",
        f"  {artifacts.EVALUATION / 'before_after.png'}   input / output / target",
        f"  {artifacts.REPORTS}/<variant>/grid.png, curves.png       per variant: samples and training curves",
        "  ./pipeline run mlflow ui --backend-store-uri sqlite:///mlflow.db   runs, metrics, registered models",
        "  ./pipeline run dvc metrics show                              the same figures through DVC",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        load_params()  # a mistake in params.yaml stops here, before anything starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    dvc = None
    try:
        with prefect_server(PREFECT_LOG) as url:
            print(f">> Prefect server on {url.removesuffix('/api')} (log: {PREFECT_LOG})", flush=True)
            dvc = start_child([sys.executable, "-m", "dvc", "repro", *argv])
            status = dvc.wait()
            dvc = None
    except KeyboardInterrupt:
        print("\n>> stopped", file=sys.stderr)
        return 130
    finally:
        if dvc is not None:
            stop_child(dvc)
    if status != 0:
        print(f">> dvc repro failed (status {status})", file=sys.stderr)
        return status
    metrics_file = artifacts.EVALUATION / "metrics.json"
    if metrics_file.exists():
        print("\n" + summary_text(json.loads(metrics_file.read_text()), time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
