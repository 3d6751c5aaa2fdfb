"""The batch job on exported models (ONNX Runtime, OpenVINO): the same outputs
as on Keras, tiled or whole, 16-bit and alpha included; the runtime and the
model file's hash in every row; another runtime or model file is another
model for resume; a bad model file is named before any work."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from mirnet_pipeline.flows.commands.enhance import main
from mirnet_pipeline.tasks.batch.engine import process_chunk
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.ledger import ledger
from mirnet_pipeline.tasks.batch.stores import open_store
from mirnet_pipeline.tasks.export.runtimes import model_hash
from tests.batch.samples import photo
from tests.batch.test_enhance import deep_colour


@pytest.fixture(scope="module")
def exports(tmp_path_factory, model_file):
    import keras

    from mirnet_pipeline.tasks.export.bundle import write_verified_export

    model = keras.saving.load_model(model_file)
    images = {"photo": np.asarray(photo(45, 37), np.float32) / 255}
    folder = tmp_path_factory.mktemp("exports") / "tiny"
    write_verified_export(model, folder, images, formats=("onnx", "openvino"))
    return {"keras": model_file, "onnxruntime": str(folder / "model.onnx"),
            "openvino": str(folder / "openvino/model.xml")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    photo(61, 43, seed=1).save(folder / "small.png")
    photo(150, 90, seed=2).save(folder / "large.png")  # tiled: larger than the 64-pixel tiles
    tifffile.imwrite(folder / "deep.tif", deep_colour(4), photometric="rgb", extrasamples=[2])  # 16-bit with alpha
    return folder


def enhance(source, destination, model, runtime=None):
    job = EnhanceJob(source=str(source), destination=str(destination), model=model, runtime=runtime,
                     tile=64, overlap=8)
    infos = open_store(str(source)).list(EnhanceJob.include, ())
    return {r["key"]: r for r in process_chunk(job, infos, "run", 0, ledger(job)[0])}


def read(path):
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))


def test_exports_enhance_as_keras_does(exports, source, tmp_path):
    keras_rows = enhance(source, tmp_path / "keras", exports["keras"])
    for runtime in ("onnxruntime", "openvino"):
        rows = enhance(source, tmp_path / runtime, exports[runtime])
        assert {r["status"] for r in rows.values()} == {"ok"}, rows
        for key, row in rows.items():
            assert row["runtime"] == runtime and row["model_hash"] == model_hash(exports[runtime])
            assert row["model_version"] == "sha256:" + row["model_hash"].removeprefix("sha256:")[:12]
            got, expected = read(tmp_path / runtime / key), read(tmp_path / "keras" / key)
            assert got.shape == expected.shape and got.dtype == expected.dtype, key
            level = 1 if got.dtype == np.uint8 else 257  # one 8-bit level
            assert np.abs(got.astype(np.int64) - expected.astype(np.int64)).max() <= level, (runtime, key)
            assert row["after_sharpness"] == pytest.approx(keras_rows[key]["after_sharpness"], rel=0.02)
        if runtime == "openvino":
            assert np.array_equal(read(tmp_path / runtime / "deep.tif")[..., 3],
                                  tifffile.imread(source / "deep.tif")[..., 3])
    assert {r["runtime"] for r in keras_rows.values()} == {"keras"}
    assert {r["model_hash"] for r in keras_rows.values()} == {model_hash(exports["keras"])}


def test_another_runtime_or_model_file_is_another_model_for_resume(exports, source, tmp_path):
    destination = tmp_path / "out"
    statuses = []
    for model in (exports["onnxruntime"], exports["onnxruntime"], exports["openvino"], exports["keras"],
                  exports["onnxruntime"]):
        statuses.append({r["status"] for r in enhance(source, destination, model).values()})
    assert statuses == [{"ok"}, {"skipped"}, {"ok"}, {"ok"}, {"ok"}]
    # the same file run by another runtime (OpenVINO reads ONNX) is another result too
    assert {r["status"] for r in enhance(source, destination, exports["onnxruntime"], "openvino").values()} == {"ok"}


def test_a_bad_model_file_is_named_before_any_work(exports, source, tmp_path, capsys):
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    cases = [
        (["--model", str(corrupt)], f"model {corrupt}: onnxruntime cannot load it"),
        (["--model", exports["openvino"], "--runtime", "onnxruntime"],
         f"model {exports['openvino']}: onnxruntime reads .onnx, not this file"),
        (["--model", exports["onnxruntime"], "--precision", "bfloat16"], "onnxruntime runs it in float32 only"),
    ]
    for arguments, message in cases:
        assert main([str(source), str(tmp_path / "out"), *arguments]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mirnet-enhance: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()
