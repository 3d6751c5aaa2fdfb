"""Writing a trained model in the formats serving stacks read.

Every export is of ``AnySize(model)``: reflect-padding to the architecture's
size multiple, the model, cropping and clipping to [0, 1] are all inside the
graph, so an exported model takes a float32 batch (N, H, W, 3) in [0, 1] of
any batch size, height and width, and needs no project code to run:

- ``saved_model``: a TensorFlow SavedModel (TF Serving; endpoint ``serve``);
- ``onnx``: ``model.onnx``, opset ``ONNX_OPSET``, dynamic batch, height and width;
- ``openvino``: ``openvino/model.xml`` with its ``model.bin``.

Grouped convolutions (MIRNet-v2) are traced as one convolution per group, which
every converter handles, and nearest up-sampling (MIRNet) as one resize, which
the runtimes run faster than Keras' ``repeat`` (``tasks.export.portable``).
"""

from __future__ import annotations

from pathlib import Path

from mirnet_pipeline.tasks.errors import UsageError

# name: (Keras' export format, where the export goes in the folder)
EXPORT_FORMATS = {
    "saved_model": ("tf_saved_model", "saved_model"),
    "onnx": ("onnx", "model.onnx"),
    "openvino": ("openvino", "openvino/model.xml"),
}
# ONNX opset of the exports: 17 is read by ONNX Runtime since 1.14 and by
# OpenVINO since 2023.0, and has every operator the architectures need
ONNX_OPSET = 17


def export_path(folder: str | Path, name: str) -> Path:
    """Where format ``name`` goes in an export folder."""
    return Path(folder) / EXPORT_FORMATS[name][1]


def check_formats(formats) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise UsageError(f"formats: expected some of {', '.join(EXPORT_FORMATS)}, got {', '.join(formats) or 'none'}")
    return tuple(formats)


def decline_openvino_telemetry() -> None:
    """OpenVINO's converter sends usage statistics unless its consent file
    (``~/intel/openvino_telemetry``) says no, and has no switch in the
    environment. Where the user has made no choice, record "no", as OpenVINO's
    own ``opt_in_out --opt_out`` does; a choice already made is left alone."""
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    checker = OptInChecker()
    if checker.consent_file_base_dir() and not Path(checker.consent_file()).exists():
        checker.update_result(ConsentCheckResult.DECLINED)


def export_model(model, folder: str | Path, formats=tuple(EXPORT_FORMATS), opset: int = ONNX_OPSET) -> dict[str, Path]:
    """Write ``model`` (a Keras model of the zoo) in each of ``formats`` into
    ``folder``; returns {format: path}. Needs the TensorFlow backend."""
    import keras

    from mirnet_pipeline.model import AnySize
    from mirnet_pipeline.tasks.export.portable import portable_graph

    if "openvino" in formats:
        decline_openvino_telemetry()
    served = AnySize(model)
    signature = [keras.InputSpec(shape=(None, None, None, 3), dtype="float32")]
    written = {}
    with portable_graph(model):
        for name in check_formats(formats):
            keras_format = EXPORT_FORMATS[name][0]
            target = export_path(folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            options = {"opset_version": opset} if name == "onnx" else {}
            served.export(str(target), format=keras_format, verbose=False, input_signature=signature, **options)
            written[name] = target
    return written
