"""The main job: the whole pipeline through DVC, with Prefect's own server on
127.0.0.1 for its length, then what came out of it.

    ./pipeline demo              # = python -m mirnet_pipeline.flows.demo
    ./pipeline demo --force      # arguments go to `dvc repro` (stages then run one at a time)

The stale stages run several at a time in dependency order
(``tasks/stages.py``), each recorded with ``dvc commit``; a final ``dvc
repro`` finds nothing left to do. ``dvc status`` is clean afterwards and a
second ``dvc repro`` runs nothing.

Exits non-zero when a stage fails. Nothing it starts (the Prefect server,
``dvc``, the stages) outlives it, also when it is stopped with Ctrl-C or killed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from mirnet_pipeline.tasks import artifacts
from mirnet_pipeline.tasks.config import ConfigError, load_params
from mirnet_pipeline.tasks.services import prefect_server
from mirnet_pipeline.tasks.stages import DVC, Children, StageFailed, plan, run_stages, stale_stages
from mirnet_pipeline.tasks.storage import atomic_write_text
from mirnet_pipeline.tasks.training.headline import headline

PREFECT_LOG = Path(".prefect") / "server.log"
SUMMARY_FILE = artifacts.REPORTS / "demo_summary.txt"  # the last run's summary


def _stop(signum, frame):  # SIGTERM ends the demo the way Ctrl-C does
    raise KeyboardInterrupt


def summary_text(metrics: dict, seconds: float) -> str:
    def optional(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    lines = [f"Done in {seconds / 60:.1f} min. PSNR on the validation images (dB, data range 1); lead: the",
             "output's PSNR minus that of the best classical method of its dataset (named); noise: the gain",
             "on TID2013's additive Gaussian noise; cast: the largest mean signed error of a colour channel:", "",
             f"  {'variant':<12} {'dataset':<8} {'images':>6}   {'input -> output':>17}   {'gain':>7}"
             f"   {'lead':>7} {'over':<8}   {'noise':>6}   {'cast':>6}"]
    kind = None
    for r in headline(metrics):
        if r["kind"] != kind and r["kind"] == "classical":
            lines += ["", "  classical methods (no training; the settings are in reports/comparison.md):"]
        kind = r["kind"]
        lead = "" if r["lead"] is None else f"{r['lead']:+7.2f} {r['classical']:<8}"
        lines.append(f"  {r['variant']:<12} {r['dataset']:<8} {r['images']:>6}   "
                     f"{r['input_psnr']:>7.2f} -> {r['output_psnr']:>6.2f}   {r['gain']:>+7.2f}   {lead:>16}"
                     f"   {optional(r['noise_gain'], '+6.2f'):>6}   {optional(r['cast'], '6.3f'):>6}")
    lines += [
        "",
        "Where to look next:",
        f"  {artifacts.COMPARISON}   every variant against doing nothing and the classical methods, per type",
        f"  {artifacts.EVALUATION / 'before_after.png'}   input, output and target side by side",
        f"  {artifacts.REPORTS}/<variant>/   per variant: training curves (curves.png), samples (grid.png)",
        f"  {enhanced_report()}   the enhance stage's report: before/after pictures, flagged images",
        "  ./pipeline run mlflow ui --backend-store-uri sqlite:///mlflow.db   runs, metrics, models",
        "  ./pipeline run dvc metrics show   the same figures through DVC",
        "  ./pipeline run mirnet-enhance PHOTOS OUT --model models:/mirnet@champion   your own photos",
    ]
    return "\n".join(lines)


def enhanced_report() -> str:
    """The report the enhance stage leaves in its destination (params.yaml's ``enhance.destination``)."""
    from mirnet_pipeline.tasks.batch.report import REPORT
    from mirnet_pipeline.tasks.config import load_params

    return f"{load_params().enhance.destination.rstrip('/')}/{REPORT}"


def promote_candidates(params) -> list[str]:
    """What scheduled retraining does for its variant (``flows/retrain.py``),
    for every variant: the ``candidate`` becomes ``champion`` when there is
    none yet or when it beats it by ``retrain.margin_db``. So the registry's
    ``models:/<variant>@champion`` exists after the demo. One line per variant."""
    from mirnet_pipeline.tasks.training.promotion import decide_and_promote
    from mirnet_pipeline.tasks.training.tracking import configure

    configure(params.mlflow)
    lines = []
    for variant, spec in params.variants.items():
        try:
            decision = decide_and_promote(variant, spec.dataset, params.retrain.margin_db)
        except ValueError as exc:
            lines.append(f"  {variant:<12} {exc}")
            continue
        if decision.promoted or decision.champion_version == decision.candidate_version:
            verdict = "champion"
        else:
            verdict = f"candidate (champion: version {decision.champion_version})"
        lines.append(f"  {variant:<12} version {decision.candidate_version} {verdict}: {decision.reason}")
    return lines


def main(argv: list[str]) -> int:
    try:
        params = load_params()  # a mistake in params.yaml stops here, before anything starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    children = Children()
    try:
        with prefect_server(PREFECT_LOG) as url:
            print(f">> Prefect server on {url.removesuffix('/api')} (log: {PREFECT_LOG})", flush=True)
            if not argv:  # the default run: the stale stages, JOBS at a time
                run_stages(children, plan(stale_stages()))
            status = children.run([*DVC, "repro", *argv])
            if status != 0:
                raise StageFailed(f"dvc repro failed (status {status})")
    except StageFailed as exc:
        print(f">> {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n>> stopped", file=sys.stderr)
        return 130
    finally:
        children.stop()
    print("\n>> MLflow registry (models:/<variant>@champion):\n" + "\n".join(promote_candidates(params)), flush=True)
    metrics_file = artifacts.EVALUATION / "metrics.json"
    if metrics_file.exists():
        summary = summary_text(json.loads(metrics_file.read_text()), time.monotonic() - started)
        atomic_write_text(SUMMARY_FILE, summary + "\n")  # docs/figures.py puts it in the README
        print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
