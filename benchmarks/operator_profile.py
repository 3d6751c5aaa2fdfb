"""Where the time goes inside the model: per-operator profiles of the exported
MIRNet on ONNX Runtime and OpenVINO, float32 and int8.

The same untrained MIRNet, images and exports as ``enhance_throughput.py``
(``--mirnet R,M,C``, 512x384 distorted TID2013 references, ``--batch`` at a
time). Each runtime runs the images once to warm up, then once with its
profiler on:

- ONNX Runtime: ``SessionOptions.enable_profiling``; the trace's node events
  are summed per operator type.
- OpenVINO: ``PERF_COUNT``; ``InferRequest.profiling_info`` summed per
  operator type (after OpenVINO's fusions, so its types are its own).

The convolutions' work is counted from the float32 ONNX Runtime trace, which
records every convolution's shapes (2 x output elements x input channels per
group x kernel area); the int8 models run the same convolutions (their trace
leaves the pre-packed weights out). Each table then shows the GFLOP/s its
convolutions reach.

Prints, per runtime and precision, the milliseconds per image of each
operator type and its share of the profiled time; then a JSON line.

    ./pipeline run python benchmarks/operator_profile.py --mirnet 3,2,32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's code
from benchmarks import record  # noqa: E402
from benchmarks.enhance_throughput import make_exports, make_images, make_model  # noqa: E402

# the convolution of each runtime and precision, by operator type
CONVOLUTIONS = {"Conv", "FusedConv", "QLinearConv", "Convolution"}


def conv_flops(inputs: list[dict], outputs: list[dict]) -> float:
    """FLOPs of one float32 convolution call from its recorded shapes (a multiply-add is 2)."""
    weight = list(inputs[1].values())[0]  # [C_out, C_in / groups, kh, kw]
    out = list(outputs[0].values())[0]
    return 2.0 * float(np.prod(out)) * float(np.prod(weight[1:]))


def onnxruntime_profile(path: str, batches: list[np.ndarray], work: Path) -> dict:
    import onnxruntime as ort

    warm = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = warm.get_inputs()[0].name
    for batch in batches:
        warm.run(None, {name: batch})
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"ort-{Path(path).stem}")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for batch in batches[:1]:  # the first profiled run still allocates; the next ones are measured
        session.run(None, {name: batch})
    start = time.perf_counter()
    for batch in batches:
        session.run(None, {name: batch})
    wall = time.perf_counter() - start
    trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("name") == "model_run"][1:]
    first_measured = min(e["ts"] for e in runs)
    by_type, flops = defaultdict(float), 0.0
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < first_measured:
            continue
        op = event["args"]["op_name"]
        by_type[op] += event["dur"] / 1e6
        if op in ("Conv", "FusedConv"):
            flops += conv_flops(event["args"]["input_type_shape"], event["args"]["output_type_shape"])
    return {"wall_s": wall, "model_run_s": sum(e["dur"] for e in runs) / 1e6, "seconds": dict(by_type),
            "conv_flops": flops}


def openvino_profile(path: str, batches: list[np.ndarray]) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for batch in batches:
        request.infer({0: batch})
    by_type = defaultdict(float)
    start = time.perf_counter()
    for batch in batches:
        request.infer({0: batch})
        for info in request.profiling_info:  # this request's last inference
            by_type[info.node_type] += info.real_time.total_seconds()
    return {"wall_s": time.perf_counter() - start, "seconds": dict(by_type)}


def report(title: str, profile: dict, images: int, conv_flops: float) -> list[str]:
    """Lines of the table; ``conv_flops``: the convolutions' FLOPs over all profiled images."""
    total = sum(profile["seconds"].values())
    lines = [f"{title}: {images / profile['wall_s']:.2f} img/s profiled, operators {1000 * total / images:.1f} "
             f"ms per image"]
    for op, seconds in sorted(profile["seconds"].items(), key=lambda kv: -kv[1]):
        if seconds / total < 0.005:
            continue
        line = f"  {op:<28} {1000 * seconds / images:8.2f} ms/img {seconds / total:6.1%}"
        if op in CONVOLUTIONS:
            line += f"  {conv_flops / seconds / 1e9:6.1f} GFLOP/s"
        lines.append(line)
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=100, help="64x64 crops to calibrate int8 on")
    parser.add_argument("--mirnet", default="1,1,16", help="RRGs, MRBs and channels of the MIRNet profiled")
    record.add_option(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="operator-profile-") as folder:
        return measure(args, Path(folder))


def measure(args, work: Path) -> dict:
    rrg, mrb, channels = (int(v) for v in args.mirnet.split(","))
    model_path = make_model(work / "mirnet.keras", rrg, mrb, channels)
    make_images(work / "in", args.images)
    exports = make_exports(model_path, work / "in", work / "export", args.calibration)
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0
                       for p in sorted((work / "in").glob("*.png"))])
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    result = {"benchmark": "operator_profile", "model": f"mirnet ({rrg} RRG, {mrb} MRB, {channels} channels)",
              "images": len(images), "batch": args.batch}
    lines = [f"mirnet ({rrg} RRG, {mrb} MRB, {channels} channels), {len(images)} images 512x384, "
             f"batch {args.batch}"]
    runs = [("onnxruntime float32", onnxruntime_profile, exports["onnx"]),
            ("onnxruntime int8", onnxruntime_profile, exports["int8"]),
            ("openvino float32", openvino_profile, exports["openvino"]),
            ("openvino int8", openvino_profile, exports["int8"])]
    profiles = {title: profiler(path, batches, work) if profiler is onnxruntime_profile else profiler(path, batches)
                for title, profiler, path in runs}
    conv_flops = profiles["onnxruntime float32"]["conv_flops"]
    result["conv_gflop_per_image"] = conv_flops / len(images) / 1e9
    lines.append(f"convolutions: {conv_flops / len(images) / 1e9:.1f} GFLOP per image")
    for title, profile in profiles.items():
        result[title.replace(" ", "_")] = profile
        lines += report(title, profile, len(images), conv_flops)
    print("\n".join(lines))
    print(json.dumps(result))
    record.record(args.record, result)
    return result


if __name__ == "__main__":
    main()
