"""Render the README's and the docs' figures from what produced them.

    ./pipeline demo                                        # the demo's summary and figure
    ./pipeline run python benchmarks/...  --record docs/results/NAME.json
    ./pipeline run python docs/figures.py                  # then review `git diff`

Rewrites the blocks between ``<!-- figures:NAME -->`` and
``<!-- /figures:NAME -->`` in README.md and docs/*.md:

- ``demo-summary`` (README): the summary the last ``./pipeline demo`` printed
  (it keeps a copy in ``reports/demo_summary.txt``), and
  ``docs/before_after.png`` from ``reports/evaluation/before_after.png``;
- ``profile-<name>`` (docs/training.md): the summary of a run of another
  profile (``profile: cpu``), kept in ``docs/results/profile-<name>.txt``
  when ``--project`` names a checkout that ran it;
- ``model-zoo`` (docs/training.md): size and cost of the research's variants
  (``profile: research`` of params.yaml), computed as ``flows/model_zoo.py`` does;
- every other block from the benchmark result of the same name in
  ``docs/results/`` (``benchmarks/record.py`` writes them: the result, the
  command, the date and the machine).

``--project DIR`` reads the demo reports of another checkout (a fresh clone
that ran the demo). ``--check`` writes nothing and exits 1 when a block is
not what its source gives (the suite runs it for the benchmark and model-zoo
blocks). Exits 1, naming the file, when a source is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run as a script: this checkout's package

from mirnet_pipeline.tasks import artifacts  # noqa: E402
from mirnet_pipeline.tasks.config import parse_params, variant_options  # noqa: E402

SUMMARY = artifacts.REPORTS / "demo_summary.txt"
FIGURE = artifacts.EVALUATION / "before_after.png"
RESULTS = REPOSITORY / "docs" / "results"
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.DOTALL)


class MissingSource(RuntimeError):
    pass


def blocks(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def replace_blocks(text: str, render) -> str:
    """``text`` with each block rendered anew (``render`` gives None: left as it is)."""
    def rendered(m):
        body = render(m.group(2))
        return m.group(0) if body is None else m.group(1) + body.rstrip("\n") + "\n" + m.group(4)

    return BLOCK.sub(rendered, text)


def research_model_zoo(params_file: Path) -> str:
    """The research's variants as a Markdown table."""
    from mirnet_pipeline.tasks.training.model_zoo import describe_variant

    data = yaml.safe_load(params_file.read_text())
    params = parse_params({**data, "profile": "research"}, source=str(params_file))
    settings = params.model_zoo
    lines = ["| variant | options | parameters | GMACs / megapixel |", "|---|---|---:|---:|"]
    for name, spec in params.models.items():
        info = describe_variant(spec.arch, variant_options(spec), settings.height, settings.width)
        options = ", ".join(f"{k}={v}" for k, v in spec.options.model_dump(exclude_unset=True).items())
        lines.append(f"| {name} | {spec.arch}: {options} | {info['parameters']:,} | "
                     f"{info['gmacs_per_megapixel']:,.1f} |")
    return "\n".join(lines)


# --- benchmark results -------------------------------------------------------------

def provenance(entry: dict) -> str:
    machine = entry["machine"]
    return (f"*Measured {entry['date']} on {machine['cpu']} ({machine['cores']} cores, "
            f"{machine['memory_gib']:.0f} GiB), Keras backend {machine['keras_backend']}:*\n"
            f"`{entry['command']}`")


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def enhance_throughput(entry: dict) -> str:
    r = entry["result"]
    naive = r["naive_images_per_s"]
    own = r["own_work_ms_per_image"]
    lines = [provenance(entry), "",
             f"{r['model']}, {r['images']} images of 512x384. The batch job's own work (decoding, encoding, "
             f"the no-reference measures) takes {sum(own.values()):.1f} ms of one core per image ("
             + ", ".join(f"{k} {v:.1f}" for k, v in own.items()) + ")."
             + ("" if "png_levels" not in r else " PNG encoding a photo at zlib level "
                + ", at level ".join(f"{level}: {v['ms']:.1f} ms, {v['bytes'] / 1024:.0f} KiB"
                                     for level, v in r["png_levels"].items()) + "."), "",
             "| run | images/s | vs naive loop | model alone | bound with the job's own work | "
             "output vs Keras float32 |",
             "|---|---:|---:|---:|---:|---|",
             f"| naive loop (`model.predict` per image) | {naive:.2f} | 1.00x | | | |"]
    for precision in ("float32", "bfloat16", "float16"):
        if f"batch_{precision}_images_per_s" not in r:
            continue
        alone = _ratio(r["model_only_ratio"]) if precision == "float32" else ""
        diff = r[f"{precision}_difference"]
        against = "naive loop" if diff["against"] == "naive" else "float32"
        lines.append(f"| batch job, Keras {precision} | {r[f'batch_{precision}_images_per_s']:.2f} | "
                     f"{_ratio(r[f'ratio_{precision}'])} | {alone} | | mean {diff['mean_levels']:.2f} "
                     f"levels, max {diff['max_levels']:.0f} (vs {against}) |")
    for key, title in (("onnxruntime_float32", "ONNX Runtime float32"), ("openvino_float32", "OpenVINO float32"),
                       ("onnxruntime_int8", "ONNX Runtime int8"), ("openvino_int8", "OpenVINO int8")):
        if key in r:
            run = r[key]
            lines.append(f"| batch job, {title} | {run['images_per_s']:.2f} | {_ratio(run['ratio'])} | "
                         f"{_ratio(run['model_only_ratio'])} | "
                         f"{_ratio(run['with_own_work_at_most_images_per_s'] / naive)} | mean "
                         f"{run['mean_levels']:.2f} levels, PSNR {run['psnr_vs_keras_db']:.1f} dB |")
    if "tiled_peak_gb" in r:
        whole = (f"over {r['memory_cap_gb']:.0f} GB (stopped there)" if r["whole_capped"]
                 else f"{r['whole_peak_gb']:.2f} GB")
        lines += ["", f"One 24-megapixel photo (6000x4000): peak resident memory {r['tiled_peak_gb']:.2f} GB tiled "
                      f"({r['tiled_seconds']:.0f} s); the naive whole-image call {whole}."]
    return "\n".join(lines)


def photo_memory(entry: dict) -> str:
    r = entry["result"]
    whole = (f"went over {r['memory_cap_gb']:.0f} GB and was stopped there" if r["whole_capped"]
             else f"peaked at {r['whole_peak_gb']:.2f} GB")
    return (f"{provenance(entry)}\n\nOne 24-megapixel photo (6000x4000) through {r['model']}: peak resident "
            f"memory {r['tiled_peak_gb']:.2f} GB in tiles ({r['tiled_seconds']:.0f} s); the naive whole-image "
            f"call {whole}.")


CONVOLUTIONS = {"Conv", "FusedConv", "QLinearConv", "Convolution"}


def operator_profile(entry: dict) -> str:
    r = entry["result"]
    images, conv_flops = r["images"], r["conv_gflop_per_image"] * 1e9 * r["images"]
    lines = [provenance(entry), "",
             f"{r['model']}, {images} images of 512x384, batch {r['batch']}: "
             f"{r['conv_gflop_per_image']:.1f} GFLOP of convolutions per image. Each runtime's operators, "
             "by share of its profiled time (those above 3 %):", "",
             "| runtime | images/s profiled | operator | ms per image | share | convolution rate |",
             "|---|---:|---|---:|---:|---:|"]
    for key in ("onnxruntime_float32", "onnxruntime_int8", "openvino_float32", "openvino_int8"):
        profile = r[key]
        total = sum(profile["seconds"].values())
        rows = [(op, s) for op, s in sorted(profile["seconds"].items(), key=lambda kv: -kv[1]) if s / total >= 0.03]
        for i, (op, seconds) in enumerate(rows):
            rate = f"{conv_flops / seconds / 1e9:,.0f} GFLOP/s" if op in CONVOLUTIONS else ""
            head = (f"{key.replace('_', ' ')} | {images / profile['wall_s']:.2f}" if i == 0 else " | ")
            lines.append(f"| {head} | {op} | {1000 * seconds / images:.2f} | {seconds / total:.0%} | {rate} |")
    return "\n".join(lines)


def enhance_memory(entry: dict) -> str:
    r = entry["result"]
    return (f"{provenance(entry)}\n\n{r['ok']} of {r['images']} photos of 4 MP ({r['input_mb']:.0f} MB of JPEG) "
            f"in one chunk at the default settings: peak resident memory **{r['peak_gb']:.2f} GB** "
            f"({r['seconds']:.0f} s).")


def enhance_scale(entry: dict) -> str:
    lines = [provenance(entry), "",
             "| store | keys | fresh run | per key | peak RSS | task runs | re-run | per key | peak RSS "
             "| ledger files read → left |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in entry["result"]["runs"]:
        fresh, again = run["fresh"], run["rerun"]
        lines.append(f"| {run['store']} | {run['keys']:,} | {fresh['seconds']:.1f} s | "
                     f"{run['fresh_ms_per_key']:.2f} ms | {fresh['peak_gb']:.2f} GB | {fresh['task_runs']:,} | "
                     f"{again['seconds']:.1f} s | {run['rerun_ms_per_key']:.2f} ms | {again['peak_gb']:.2f} GB | "
                     f"{again['ledger_objects_read']} → {again['ledger_objects_after']} |")
    lines += ["", "Between sizes (each key beyond the smaller size; peak memory of the larger against the smaller):",
              ""]
    for g in entry["result"]["growth"]:
        lines.append(f"- {g['store']}, {g['from']:,} → {g['to']:,} keys: {g['fresh_marginal_ms_per_key']:.2f} ms a "
                     f"key fresh, {g['rerun_marginal_ms_per_key']:.2f} ms a key re-run; peak memory "
                     f"x{g['fresh_peak_ratio']:.2f} fresh, x{g['rerun_peak_ratio']:.2f} re-run.")
    runs = [run for run in entry["result"]["runs"] if "ledger_file_bytes_per_key" in run]
    if runs:
        lines += ["", "State a key (bytes, at the largest size of each store):", "",
                  "| store | keys | ledger on disk | ledger in memory at a start | metrics Parquet |",
                  "|---|---:|---:|---:|---:|"]
        for store in dict.fromkeys(run["store"] for run in runs):
            run = max((r for r in runs if r["store"] == store), key=lambda r: r["keys"])
            lines.append(f"| {store} | {run['keys']:,} | {run['ledger_file_bytes_per_key']:.0f} | "
                         f"{run['ledger_memory_bytes_per_key']:.0f} | {run['metrics_bytes_per_key']:.0f} |")
    if "planner_bytes_per_key" in entry["result"]:
        lines += ["", f"The planner's check for colliding outputs keeps "
                      f"{entry['result']['planner_bytes_per_key']:.0f} bytes a key "
                      f"(over {entry['result']['planner_keys']:,} keys)."]
    return "\n".join(lines)


def enhance_steps(entry: dict) -> str:
    steps = entry["result"]["per_key_steps_ms"]
    return "\n".join([provenance(entry), "", f"Each step of the per-key path alone, one thread, over "
                      f"{entry['result']['keys']:,} of the 16x16 images, ms a key (in the job reads, decoding, "
                      "encoding, writing and measures overlap on the I/O threads):", "",
                      "| " + " | ".join(steps) + " | sum |", "|" + "---:|" * (len(steps) + 1),
                      "| " + " | ".join(f"{v:.3f}" for v in steps.values()) + f" | {sum(steps.values()):.3f} |"])


PARTITION = 100_000  # keys a partition of the 10^8 design


def partition(entry: dict) -> str:
    """docs/scaling.md's partition table: the scale benchmark's figures times a partition's keys."""
    r = entry["result"]
    growth = max((g for g in r["growth"] if g["store"] == "folder"), key=lambda g: g["to"])
    largest = max((run for run in r["runs"] if run["store"] == "folder"), key=lambda run: run["keys"])
    task_runs = largest["fresh"]["task_runs"] / largest["keys"] * PARTITION

    def mb(per_key: float) -> str:
        return f"{per_key * PARTITION / 1e6:.0f} MB ({per_key:.0f} bytes a key)"

    rows = [
        ("bookkeeping, fresh run", f"{PARTITION:,} x {growth['fresh_marginal_ms_per_key']:.2f} ms = "
                                   f"{PARTITION * growth['fresh_marginal_ms_per_key'] / 60_000:.1f} min, "
                                   "overlapping the model's work"),
        ("bookkeeping, re-run of a finished partition",
         f"{PARTITION:,} x {growth['rerun_marginal_ms_per_key']:.2f} ms = "
         f"{PARTITION * growth['rerun_marginal_ms_per_key'] / 60_000:.1f} min"),
        ("task runs in its Prefect flow run", f"{task_runs:,.0f} (the benchmark's {largest['keys']:,} keys made "
                                              f"{largest['fresh']['task_runs']:,})"),
        ("ledger on disk (its snapshot)", mb(largest["ledger_file_bytes_per_key"])),
        ("ledger held by a start", mb(largest["ledger_memory_bytes_per_key"])),
        ("metrics Parquet", mb(largest["metrics_bytes_per_key"])),
        ("the planner's collision check", mb(r["planner_bytes_per_key"])),
        ("partitions for 10^8 keys", f"{10**8 // PARTITION:,} flow runs, launched by a parent flow a few at a time"),
    ]
    return "\n".join([f"| per partition of {PARTITION:,} keys | from `enhance_scale` ({entry['date']}) |",
                      "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def train_throughput(entry: dict) -> str:
    r = entry["result"]
    memory = r["peak_bytes"] if r.get("peak_bytes") is not None else r["host_peak_rss_bytes"]
    where = "peak accelerator memory" if r.get("peak_bytes") is not None else "host peak RSS"
    line = (f"{provenance(entry)}\n\n`{r['preset']}` {r['options']} in {r['precision']} on {r['device']} "
            f"({r['backend']}), batch {r['batch']} of {r['size'][0]}x{r['size'][1]}: "
            f"{r['crops_per_second']:.2f} crops/s, {r['step_ms'] / 1000:.1f} s a step, {where} "
            f"{memory / 2**30:.1f} GiB")
    if "research_crops_per_second" in r:
        line += (f"; the research's RTX 4080: {r['research_crops_per_second']:.1f} crops/s "
                 f"({r['ratio_to_research']:.1%} of it)")
    return line + "."


def reader_throughput(entry: dict) -> str:
    lines = [provenance(entry), "", "| dataset | shard reader | decoding files | ratio |", "|---|---:|---:|---:|"]
    r = entry["result"]
    lines.append(f"| {r['dataset']}, {r['crop_size']}x{r['crop_size']} crops, batch {r['batch']} | "
                 f"{r['shards_crops_per_s']:,.0f} crops/s | {r['baseline_crops_per_s']:,.0f} crops/s | "
                 f"{r['ratio']:.1f}x |")
    return "\n".join(lines)


def _failure(run: dict) -> str:
    """A left-out or failed run's outcome, with the error its log ends on."""
    errors = [line.strip() for line in run.get("log_tail", "").splitlines()
              if "Error" in line or "RESOURCE_EXHAUSTED" in line]
    reason = errors[-1].split("[", 1)[0].strip() if errors else ""
    return f"{run['outcome']}" + (f": `{reason}`" if reason else "")


def _memory(result: dict) -> str:
    """Peak accelerator memory, or the host's peak resident memory on a CPU."""
    if result.get("peak_bytes") is not None:
        return f"{result['peak_bytes'] / 2**30:.1f} GiB"
    return f"{result['host_peak_rss_bytes'] / 2**30:.1f} GiB (host)"


def _tiling(run: dict) -> int | None:
    """The tile size of an inference run (None: whole images), from its result
    or, in results recorded before it said so, from its command."""
    result, words = run["result"], run["command"].split()
    if "tiled" in result:
        return result.get("tile")
    if "--tiled" not in words:
        return None
    return int(words[words.index("--tile") + 1]) if "--tile" in words else 512


def accelerator(entry: dict) -> str:
    r = entry["result"]
    done = [run for run in r["runs"] if run["outcome"] == "ok"]
    device = done[0]["result"]["device"].split(":", 1)[-1] if done else "the accelerator"
    backends = sorted({run["result"]["backend"] for run in done})
    peak = r["ceiling"].get("bf16_matmul_tflops")
    machine = entry["machine"]
    lines = [f"*Measured {entry['date']} on one {device} (host: {machine['cpu']}, {machine['cores']} cores), "
             f"Keras backend {' and '.join(backends)}, synthetic data:*", f"`{entry['command']}`", ""]
    if peak:
        size = r["ceiling"]["size"]
        lines += [f"The chip's bfloat16 matrix product ({size}x{size} by {size}x{size}, random data) ran at "
                  f"**{peak:.0f} TFLOP/s** in the same session: the peak that the shares below are of.", ""]
    training = [run for run in done if run["result"]["mode"] == "train"]
    if training:
        lines += ["| run | backend | precision | batch | crops/s (median step) | step | peak memory | "
                  "vs the research's RTX 4080 |", "|---|---|---|---|---:|---:|---:|---:|"]
        for run in training:
            t = run["result"]
            median_rate = t["batch"] / (t["median_step_ms"] / 1000)
            research = (f"{median_rate / t['research_crops_per_second']:.1f}x of "
                        f"{t['research_crops_per_second']:.1f}" if "research_crops_per_second" in t else "")
            lines.append(f"| `{t['preset']}` | {t['backend']} | {t['precision']} | {t['batch']} of "
                         f"{t['size'][0]}x{t['size'][1]} | {median_rate:.1f} | {t['median_step_ms']:.0f} ms | "
                         f"{_memory(t)} | {research} |")
        lines.append("")
    inference = [run for run in done if run["result"]["mode"] == "infer"]
    if inference:
        lines += ["| photo | backend | precision | how | megapixels/s | seconds a photo | TMAC/s | "
                  "share of the bf16 peak | peak memory |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for run in inference:
            t = run["result"]
            how = f"tiles of {_tiling(run)}, {t['batch']} at a time" if _tiling(run) else "whole"
            share = f"{2 * t['tera_macs_per_second'] / peak:.1%}" if peak else ""
            lines.append(f"| {t['size'][0]}x{t['size'][1]} `{t['preset']}` | {t['backend']} | {t['precision']} | "
                         f"{how} | {t['megapixels_per_second']:.2f} | {t['seconds_per_call']:.2f} | "
                         f"{t['tera_macs_per_second']:.1f} | {share} | {_memory(t)} |")
        lines.append("")
    lines += ["Each run's command:", ""] + [f"- {run['name']}: `{run['command']}`" + (
        "" if run["outcome"] == "ok" else f" — {_failure(run)}") for run in r["runs"]]
    return "\n".join(lines)


def photo_throughput(entry: dict) -> str:
    """Whole photos through MIRNet at several sizes of the model, one run each."""
    lines = [provenance(entry), "",
             "| model | GMAC a megapixel | megapixels/s | seconds a photo | TMAC/s | peak accelerator memory |",
             "|---|---:|---:|---:|---:|---:|"]
    for run in entry["result"]["runs"]:
        r = run["result"]
        lines.append(f"| `{run['name']}`: {r['preset']} {r['options']} | {r['gmacs_per_megapixel']:,.0f} | "
                     f"{r['megapixels_per_second']:.1f} | {r['seconds_per_call']:.2f} | "
                     f"{r['tera_macs_per_second']:.1f} | {r['peak_bytes'] / 2**30:.1f} GiB |")
    lines += ["", "Each run's command:", ""]
    lines += [f"- {run['name']}: `{run['command']}`" for run in entry["result"]["runs"]]
    return "\n".join(lines)


GPU_PHOTOS = "photo_throughput-h200-12mp"  # whole 12-megapixel photos through MIRNet on one H200


def cores_per_gpu(entry: dict) -> str:
    """docs/scaling.md's cores a GPU: the job's own work a photo (enhance_throughput) against the time
    the research's model takes for a photo on the GPU (photo_throughput)."""
    own = entry["result"]["own_work_ms_per_image"]
    per_megapixel = sum(own.values()) / (512 * 384 / 1e6)
    gpu = json.loads((RESULTS / f"{GPU_PHOTOS}.json").read_text())["result"]["runs"]
    research = next(run["result"] for run in gpu if run["name"] == "research")
    megapixels = research["megapixels_per_call"]
    photo = per_megapixel * megapixels / 1000
    return (f"The job's own work besides the model (decode, PNG encode, the no-reference measures) is "
            f"{sum(own.values()):.1f} ms of one core for a 512x384 photo (`enhance_throughput`, {entry['date']}: "
            + " + ".join(f"{k} {v:.1f}" for k, v in own.items())
            + f" ms), {per_megapixel:.0f} ms a megapixel, {photo:.2f} s for a {megapixels:.0f}-megapixel photo. "
            f"To keep one H200 busy at {research['seconds_per_call']:.2f} s a photo (`research`, above) a worker "
            f"needs {photo / research['seconds_per_call']:.1f} cores of its own work.")


RENDERERS = {"accelerator": accelerator, "photo_throughput": photo_throughput,
             "enhance_throughput": enhance_throughput, "operator_profile": operator_profile,
             "enhance_memory": enhance_memory, "enhance_scale": enhance_scale, "enhance_steps": enhance_steps,
             "train_throughput": train_throughput,
             "reader_throughput": reader_throughput}


def benchmark_block(name: str) -> str:
    """The block ``name`` from ``docs/results/<name>.json``, rendered as its benchmark's result."""
    file = RESULTS / f"{name.removesuffix('-partition').removesuffix('-cores')}.json"
    if not file.is_file():
        raise MissingSource(f"{file}: not found; run the benchmark with --record {file.relative_to(REPOSITORY)}")
    entry = json.loads(file.read_text())
    if name.endswith("24mp-memory"):
        return photo_memory(entry)
    if name == "enhance_scale-partition":
        return partition(entry)
    if name == "enhance_throughput-cores":
        return cores_per_gpu(entry)
    return RENDERERS[entry["result"].get("benchmark") or name.split("-")[0]](entry)


def project_profile(project: Path) -> str:
    """The profile ``project``'s params.yaml selects."""
    return (yaml.safe_load((project / "params.yaml").read_text()) or {}).get("profile", "research")


def keep_profile_summary(project: Path) -> None:
    """A checkout that ran another profile than the demo: its summary becomes
    ``docs/results/profile-<name>.txt``, what the ``profile-<name>`` block shows."""
    summary = project / SUMMARY
    if not summary.is_file():
        raise MissingSource(f"{summary}: not found (run ./pipeline demo there)")
    target = RESULTS / f"profile-{project_profile(project)}.txt"
    target.write_text(summary.read_text().split("\nWhere to look next:")[0].rstrip("\n") + "\n")
    print(f"updated {target.relative_to(REPOSITORY)}")


def render(name: str, project: Path) -> str | None:
    """Block ``name`` from its source; None for the demo's summary where the demo has not run."""
    if name.startswith("profile-"):
        file = RESULTS / f"{name}.txt"
        if not file.is_file():
            raise MissingSource(f"{file}: not found; run that profile and python docs/figures.py --project THERE")
        return "```\n" + file.read_text().rstrip("\n") + "\n```"
    if name == "demo-summary":
        summary = project / SUMMARY
        if project_profile(project) != "demo":
            return None  # another profile's summary goes to its own block
        if not summary.is_file():
            print(f"figures: {summary}: not found (run ./pipeline demo there); the demo's summary and picture "
                  "stay as they are", file=sys.stderr)
            return None
        return "```\n" + summary.read_text().rstrip("\n") + "\n```"
    if name == "model-zoo":
        return research_model_zoo(REPOSITORY / "params.yaml")
    return benchmark_block(name)


def documents() -> list[Path]:
    return [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=REPOSITORY,
                        help="the checkout whose demo reports to read (default: this one)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a block other than the demo's differs from its source")
    args = parser.parse_args(argv)
    stale = []
    try:
        if not args.check and project_profile(args.project) != "demo":
            keep_profile_summary(args.project)
        for document in documents():
            text = document.read_text()
            if args.check:
                for name, body in blocks(text).items():
                    if name != "demo-summary" and body.rstrip("\n") != render(name, args.project).rstrip("\n"):
                        stale.append(f"{document.relative_to(REPOSITORY)}: {name}")
                continue
            new = replace_blocks(text, lambda name: render(name, args.project))
            if new != text:
                document.write_text(new)
                print(f"updated {document.relative_to(REPOSITORY)}")
    except MissingSource as exc:
        print(f"figures: {exc}", file=sys.stderr)
        return 1
    if args.check:
        for line in stale:
            print(f"figures: out of date: {line} (run python docs/figures.py)", file=sys.stderr)
        return 1 if stale else 0
    figure = args.project / FIGURE
    if figure.is_file() and project_profile(args.project) == "demo":
        shutil.copyfile(figure, REPOSITORY / "docs" / "before_after.png")
        print("updated docs/before_after.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
