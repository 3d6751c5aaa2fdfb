"""benchmarks/train_throughput.py at tiny size on the CPU: it trains (on
synthetic batches and on shards), infers, and reports figures that add up."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_throughput.py"
TINY = ["--options", "num_rrg=1,num_mrb=1,channels=8", "--batch", "2", "--warmup", "1"]


def bench(tmp_path, backend, *arguments) -> dict:
    out = tmp_path / f"{backend}.json"
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, str(SCRIPT), *arguments, "--json", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == backend and result["device"].startswith("cpu")
    return {**result, "printed": done.stdout.strip().splitlines()[-1]}


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_training_throughput_on_synthetic_batches(tmp_path, backend):
    result = bench(tmp_path, backend, *TINY, "--size", "32", "--steps", "3", "--precision", "bfloat16")
    assert result["parameters"] > 1000 and result["steps"] == 3 and result["crop"] == [32, 32]
    assert result["crops_per_second"] == pytest.approx(2 / (result["step_ms"] / 1000), rel=1e-6)
    assert result["precision"] == "bfloat16" and result["peak_bytes"] is None and result["host_peak_rss_bytes"] > 2**27
    # the research's figure is only set beside the research's own model and crop
    assert "research_crops_per_second" not in result
    assert f"{result['crops_per_second']:.2f} crops/s" in result["printed"]


def test_training_throughput_on_shards(tmp_path):
    from tests.training.tiny_project import build_tiny_project

    build_tiny_project(tmp_path)
    shards = tmp_path / "data" / "shards" / "tid2013" / "train"
    result = bench(tmp_path, "tensorflow", "--preset", "cnn128", "--options", "channels=4,depth=1", "--batch", "2",
                   "--warmup", "1", "--steps", "2", "--shards", str(shards))
    assert result["data"] == str(shards) and result["crop"] == [16, 16]  # the shards' crops, not the preset's size
    assert result["options"] == {"channels": 4, "depth": 1}


def test_inference_rate_whole_and_tiled(tmp_path):
    whole = bench(tmp_path, "tensorflow", *TINY, "--mode", "infer", "--size", "40x60", "--steps", "2")
    assert whole["megapixels_per_call"] == pytest.approx(2 * 40 * 60 / 1e6)
    assert whole["megapixels_per_second"] == pytest.approx(whole["megapixels_per_call"] / whole["seconds_per_call"])
    assert whole["tera_macs_per_second"] == pytest.approx(
        whole["gmacs_per_megapixel"] * whole["megapixels_per_second"] / 1e3)
    tiled = bench(tmp_path, "tensorflow", *TINY, "--mode", "infer", "--size", "64x96", "--tiled", "--tile", "48",
                  "--overlap", "8", "--steps", "1")
    assert tiled["megapixels_per_call"] == pytest.approx(64 * 96 / 1e6) and " tiled:" in tiled["printed"]


def test_the_research_figures_sit_beside_the_research_models_only():
    from benchmarks import train_throughput as bench_module

    mirnet = bench_module.research_rate("mirnet", dict(num_rrg=3, num_mrb=2, channels=64), (128, 128))
    assert mirnet["research_crops_per_second"] == pytest.approx(90 * 4 / 32.5)  # about 11 crops/s
    assert bench_module.research_rate("cnn128", dict(channels=128), (384, 512))["research_crops_per_second"] == (
        pytest.approx(45 * 8 / 13.5))
    assert bench_module.research_rate("mirnet", dict(num_rrg=3, num_mrb=2, channels=64), (64, 64)) is None
    assert bench_module.research_rate("mirnet", dict(num_rrg=1, num_mrb=2, channels=64), (128, 128)) is None
    assert bench_module.research_rate("mirnet_v2", {}, (128, 128)) is None


def test_the_accelerator_set_records_each_run_and_the_chip_peak(tmp_path):
    """benchmarks/accelerator.py on a CPU, tiny: two runs side by side, each
    timed under the shared lock, the matrix-product peak beside them, and the
    docs' table rendered from the recorded result."""
    record = tmp_path / "accelerator.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--backends", "jax",
                           "--only", "jax-cnn128", "--parallel", "2", "--matmul", "128", "--budget", "400",
                           "--extra", "--options channels=4,depth=1 --size 16 --batch 2 --steps 2 --warmup 2",
                           "--logs", str(tmp_path / "logs"), "--record", str(record)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(record.read_text())
    result = entry["result"]
    assert result["ceiling"]["outcome"] == "ok" and result["ceiling"]["bf16_matmul_tflops"] > 0
    assert [run["name"] for run in result["runs"]] == ["jax-cnn128-float32", "jax-cnn128-bfloat16"]
    for run, precision in zip(result["runs"], ["float32", "bfloat16"], strict=True):
        assert run["outcome"] == "ok", run.get("log_tail")
        figures = run["result"]
        assert figures["precision"] == precision and figures["backend"] == "jax" and figures["batch"] == 2
        assert figures["crops_per_second"] == pytest.approx(2 / (figures["step_ms"] / 1000), rel=1e-6)
        assert run["command"].startswith("KERAS_BACKEND=jax python3 benchmarks/train_throughput.py --preset cnn128")
    assert (tmp_path / "logs" / "timing.lock").is_file()

    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    docs_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_figures)
    table = docs_figures.accelerator(entry)
    assert "| `cnn128` | jax | bfloat16 | 2 of 16x16 |" in table
    assert f"{result['ceiling']['bf16_matmul_tflops']:.0f} TFLOP/s" in table


def test_a_run_past_the_budget_is_listed_as_not_run(tmp_path):
    from benchmarks import accelerator

    entry = accelerator.run_one("jax-cnn128-float32", "jax", ["--preset", "cnn128"], tmp_path,
                                deadline=time.monotonic() + 5)
    assert entry["outcome"] == "not run: the budget was spent" and "result" not in entry
    assert entry["command"] == "KERAS_BACKEND=jax python3 benchmarks/train_throughput.py --preset cnn128"
