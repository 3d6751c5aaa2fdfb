"""int8 models: post-training static quantization of the ONNX export with ONNX
Runtime's quantizer (QDQ format, int8 weights per output channel, uint8
activations), calibrated on crops from the training shards, and the check
that counts: PSNR and SSIM against ground truth on the validation split, for
float32 and int8.

Why ONNX Runtime's quantizer and not NNCF on the OpenVINO IR: compared on the
demo's MIRNet (TID2013 validation split, 300 calibration crops), ONNX
Runtime's int8 model kept the PSNR of float32 while NNCF's, with its default
preset and with the mixed one, lost more than the 0.2 dB goal allows. The int8
ONNX file runs on ONNX Runtime and on OpenVINO, which executes its quantized
operators in int8 (the performance page compares the two).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

INT8_FILE = "model.int8.onnx"
PSNR_LOSS_GOAL_DB = 0.2


def calibration_crops(split_dir: str | Path, count: int) -> list[np.ndarray]:
    """The first ``count`` input crops (1, h, w, 3) of a training shard set, in
    the shards' order (no augmentation)."""
    from mirnet_pipeline.tasks.data.shards import make_dataset

    crops = [x.numpy() for x, _ in make_dataset(split_dir, 1, training=False, repeat=False).take(count)]
    if not crops:
        raise ValueError(f"calibration {split_dir}: no crops in the shard set")
    return crops


def validation_pairs(split_dir: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) whole images (H, W, 3) of a validation shard set."""
    from mirnet_pipeline.tasks.data.shards import make_dataset

    dataset = make_dataset(split_dir, 1, training=False)
    if limit is not None:
        dataset = dataset.take(limit)
    return [(x.numpy()[0], y.numpy()[0]) for x, y in dataset]


def quantize_onnx(model: str | Path, crops: list[np.ndarray], out: str | Path) -> Path:
    """``model`` (a float32 ONNX export) quantized to int8 into ``out``."""
    from onnxruntime import InferenceSession
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(crops)

        def get_next(self):
            crop = next(self.remaining, None)
            return None if crop is None else {name: np.ascontiguousarray(crop, np.float32)}

    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)  # folds constants, infers shapes
        quantize_static(str(prepared), str(out), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Path(out)


def scores(model, pairs) -> dict[str, float]:
    """Mean PSNR and SSIM (data range 1) of ``model``'s outputs against the targets."""
    from mirnet_pipeline.model import infer, reference_scores

    rows = [reference_scores(target[None], infer(model, source)[None])[0] for source, target in pairs]
    return {"psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows if r["ssim"] is not None]))}


def int8_report(float_model, int8_model, pairs, calibration: int) -> dict:
    """float32 and int8 against ground truth on ``pairs``, and the difference."""
    before, after = scores(float_model, pairs), scores(int8_model, pairs)
    loss = before["psnr"] - after["psnr"]
    return {"calibration_crops": calibration, "validation_images": len(pairs), "float32": before, "int8": after,
            "psnr_loss_db": loss, "ssim_loss": before["ssim"] - after["ssim"],
            "psnr_loss_goal_db": PSNR_LOSS_GOAL_DB, "within_goal": loss <= PSNR_LOSS_GOAL_DB}
