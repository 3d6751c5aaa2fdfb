"""Exports (SavedModel, ONNX, OpenVINO) of every architecture compute what the
Keras model computes, on real images of odd sizes; bad model files are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirnet_pipeline.tasks.export.bundle import REPORT, write_verified_export
from mirnet_pipeline.tasks.export.formats import EXPORT_FORMATS
from mirnet_pipeline.tasks.export.runtimes import ExportedModel, ModelFileError, model_hash, runtime_for
from mirnet_pipeline.tasks.export.verification import VerificationError, read_images

ROOT = Path(__file__).resolve().parents[2]
# tiny widths; mirnet with the non-local block, mirnet_v2 with a grouped convolution (2 groups in its second group)
SMALL_OPTIONS = {
    "cnn": {"channels": 4, "depth": 1},
    "mirnet": {"num_rrg": 1, "num_mrb": 1, "channels": 8, "non_local": True},
    "mirnet_v2": {"channels": 16, "num_rrg": 2, "num_mrb": 1},
}


@pytest.fixture(scope="module")
def images():
    """Crops of odd sizes from the repository's TID2013 pair (reference and distorted)."""
    pair = read_images([ROOT / "tests/testdata/tid2013"])
    return {f"{Path(name).name}[{h}x{w}]": image[40:40 + h, 100:100 + w]
            for (name, image), (h, w) in zip(sorted(pair.items()), [(61, 47), (38, 90)], strict=True)}


@pytest.fixture(scope="module", params=list(SMALL_OPTIONS))
def exported(request, images, tmp_path_factory):
    from mirnet_pipeline.model import build_model

    model = build_model(request.param, **SMALL_OPTIONS[request.param])
    model.set_weights([w + np.random.default_rng(0).normal(0, 0.05, w.shape).astype(w.dtype)
                       for w in model.get_weights()])  # not the identity it starts as
    folder = tmp_path_factory.mktemp(request.param) / "export"
    report = write_verified_export(model, folder, images, source=request.param)
    return model, folder, report


def test_every_format_of_every_architecture_matches_keras(exported, images):
    from mirnet_pipeline.model import infer

    model, folder, report = exported
    assert json.loads((folder / REPORT).read_text()) == report
    assert set(report["formats"]) == set(EXPORT_FORMATS) and report["onnx_opset"] == 17
    assert sorted(report["images"]) == sorted(images)
    for name, entry in report["formats"].items():
        path = folder / entry["file"]
        assert entry["passed"] and entry["max_abs_difference"] <= 1e-3, (name, entry)
        assert entry["hash"] == model_hash(path) and entry["runtime"] == runtime_for(path)
        # the runtime alone, on a batch of two images of one odd size
        batch = np.stack([images[k] for k in sorted(images)][:1] * 2)
        got = ExportedModel(path).predict_on_batch(batch)
        assert got.shape == batch.shape
        assert np.abs(got - infer(model, batch, batch_size=2)).max() <= 1e-3, name
    enhanced = infer(model, next(iter(images.values())))
    assert np.abs(enhanced - next(iter(images.values()))).max() > 0.01  # the model does change images


def test_openvino_also_runs_the_onnx_file_and_in_bfloat16(exported, images):
    from mirnet_pipeline.model import infer

    model, folder, _ = exported
    image = next(iter(images.values()))
    expected = infer(model, image)
    via_openvino = infer(ExportedModel(folder / "model.onnx", "openvino"), image)
    assert np.abs(via_openvino - expected).max() <= 1e-3
    bfloat16 = infer(ExportedModel(folder / "openvino/model.xml", precision="bfloat16"), image)
    assert 0 < np.abs(bfloat16 - expected).max() < 0.1  # bfloat16 rounds: close, not equal


@pytest.mark.parametrize("exported", ["mirnet"], indirect=True)
def test_concurrent_requests_keep_each_image_in_its_place(exported, images):
    """A batch runs as concurrent one-image requests: whatever their number,
    the output batch is the Keras model's, image by image, in order."""
    from mirnet_pipeline.model import infer

    model, folder, _ = exported
    pair = [images[k] for k in sorted(images)]
    # five different images of one size: crops of the two odd-size ones, flipped and not
    crops = [pair[0][:37, :45], pair[1][:37, :45], pair[0][-37:, -45:, ::-1], pair[1][1:38, 2:47],
             pair[0][::-1][:37, :45]]
    batch = np.stack(crops)
    expected = infer(model, batch, batch_size=5)
    assert min(np.abs(expected[i] - expected[j]).max() for i in range(5) for j in range(i)) > 0.05
    for path, runtime in [(folder / "model.onnx", "onnxruntime"), (folder / "openvino/model.xml", "openvino")]:
        for streams in (1, 2, 3):
            exported_model = ExportedModel(path, runtime, streams=streams)
            assert exported_model.streams == streams
            got = exported_model.predict_on_batch(batch)
            assert got.shape == batch.shape
            assert np.abs(got - expected).max() <= 1e-3, (runtime, streams)
            # twice in a row: a reused request gives the new batch's outputs
            assert np.abs(exported_model.predict_on_batch(batch[::-1]) - expected[::-1]).max() <= 1e-3


@pytest.mark.parametrize("exported", ["cnn"], indirect=True)
def test_a_failed_verification_leaves_the_previous_export(exported, images):
    model, folder, report = exported
    before = model_hash(folder / "model.onnx")
    with pytest.raises(VerificationError, match="differ from the Keras model by more than"):
        write_verified_export(model, folder, images, formats=("onnx",), tolerance=-1.0)
    assert model_hash(folder / "model.onnx") == before and (folder / "saved_model").is_dir()
    assert [p.name for p in folder.parent.iterdir()] == ["export"]  # no staging folder left


@pytest.mark.parametrize("exported", ["cnn"], indirect=True)
def test_bad_model_files_fail_at_once_naming_the_file(tmp_path, exported):
    _, folder, _ = exported
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not a model" * 10)
    with pytest.raises(ModelFileError, match=f"model {corrupt}: onnxruntime cannot load it"):
        ExportedModel(corrupt)
    with pytest.raises(ModelFileError, match=r"onnxruntime reads \.onnx, not this file"):
        ExportedModel(folder / "openvino/model.xml", "onnxruntime")
    with pytest.raises(ModelFileError, match="not a model file"):
        runtime_for(tmp_path)
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>")
    with pytest.raises(ModelFileError, match=f"model {broken}: openvino cannot load it"):
        ExportedModel(broken)
    with pytest.raises(ModelFileError, match="onnxruntime runs it in float32 only"):
        ExportedModel(folder / "model.onnx", precision="bfloat16")


def test_the_command_reports_mistakes_in_one_line_before_tensorflow(tmp_path):
    code = ("import sys; from mirnet_pipeline.flows.commands.export import main; status = main(sys.argv[1:]); "
            "print(status, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope.keras"), str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"]
    assert done.stderr.strip() == (f"mirnet-export: error: model {tmp_path / 'nope.keras'}: no such file "
                                   "(give a .keras file or models:/<name>@<alias>)")
    assert not (tmp_path / "out").exists()


def test_the_int8_model_is_calibrated_on_training_crops_and_scored_against_ground_truth(tmp_path):
    """ONNX Runtime's static int8 quantization of the ONNX export: the int8 file
    runs on ONNX Runtime and OpenVINO close to float32, and the report's PSNR
    and SSIM are what scikit-image computes on the same outputs."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from mirnet_pipeline.model import build_model, infer
    from mirnet_pipeline.tasks.data.shards import write_shards
    from mirnet_pipeline.tasks.export.quantize import calibration_crops, validation_pairs
    from tests.training.tiny_project import make_pairs

    images = tmp_path / "images"
    images.mkdir()
    write_shards(make_pairs(images, 4, 0), tmp_path / "train", split="train", crop_size=16, crops_per_pair=3,
                 progress=False)
    write_shards(make_pairs(images, 3, 1), tmp_path / "validation", split="validation", kind="full", progress=False)
    crops, pairs = calibration_crops(tmp_path / "train", 10), validation_pairs(tmp_path / "validation")
    assert len(crops) == 10 and crops[0].shape == (1, 16, 16, 3) and len(pairs) == 3
    model = build_model("cnn", channels=8, depth=2)
    model.set_weights([w * 0.5 + np.random.default_rng(3).normal(0, 0.02, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    report = write_verified_export(model, tmp_path / "export", {"pair": pairs[0][0]}, formats=("onnx",),
                                   int8=(crops, pairs))["int8"]
    int8_file = tmp_path / "export" / report["file"]
    assert report["file"] == "model.int8.onnx" and report["hash"] == model_hash(int8_file)
    assert report["calibration_crops"] == 10 and report["validation_images"] == 3

    for runtime in ("onnxruntime", "openvino"):
        quantized = ExportedModel(int8_file, runtime)
        outputs = [infer(quantized, source) for source, _ in pairs]
        floats = [infer(model, source) for source, _ in pairs]
        assert all(peak_signal_noise_ratio(f, q, data_range=1) > 30
                   for f, q in zip(floats, outputs, strict=True)), runtime
        assert any(np.abs(f - q).max() > 0 for f, q in zip(floats, outputs, strict=True))  # really quantized
        if runtime == "onnxruntime":
            psnr = np.mean([peak_signal_noise_ratio(t, o, data_range=1)
                            for (_, t), o in zip(pairs, outputs, strict=True)])
            ssim = np.mean([structural_similarity(t, o, data_range=1, channel_axis=-1, gaussian_weights=True,
                                                  sigma=1.5, use_sample_covariance=False)
                            for (_, t), o in zip(pairs, outputs, strict=True)])
            assert report["int8"]["psnr"] == pytest.approx(psnr, abs=1e-3)
            assert report["int8"]["ssim"] == pytest.approx(ssim, abs=1e-3)
    assert report["psnr_loss_db"] == pytest.approx(report["float32"]["psnr"] - report["int8"]["psnr"])
    assert report["within_goal"] == (report["psnr_loss_db"] <= 0.2)
