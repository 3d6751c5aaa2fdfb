"""Batch enhancement against local folders and a real S3-compatible server,
with a corpus of awkward and broken inputs built here."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image, ImageCms

from mirnet_pipeline.tasks.batch.claim import DestinationBusy, claim_destination
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from tests.batch.samples import photo, run, save


def deep_colour(channels: int) -> np.ndarray:
    """64x48 16-bit samples whose low bytes matter (an 8-bit round trip would show)."""
    ramp = np.linspace(0, 65535, 64 * 48 * channels).reshape(48, 64, channels)
    return (ramp + np.random.default_rng(channels).integers(0, 200, ramp.shape)).clip(0, 65535).astype(np.uint16)


def tiff16(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb", **options)
    return buffer.getvalue()


def corpus() -> dict[str, bytes]:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rotated = photo(64, 48)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    good_jpeg = save(photo(), "JPEG", quality=90)
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    rgba = photo().convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    return {
        "plain.png": save(photo(), "PNG"),
        "icc.jpg": save(photo(), "JPEG", quality=90, icc_profile=srgb),
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "tiny.png": save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "deep.png": save(Image.fromarray((np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)), "PNG"),
        "deep rgba.png": imagecodecs.png_encode(deep_colour(4)),
        "deep.tif": tiff16(deep_colour(3), iccprofile=srgb),
        "rgba.png": save(rgba, "PNG"),
        "palette.png": save(palette, "PNG", transparency=0),
        "cmyk.jpg": save(photo().convert("CMYK"), "JPEG", quality=90),
        "rotated.jpg": save(rotated, "JPEG", quality=90, exif=exif),
        "grey.png": save(photo().convert("L"), "PNG"),
        "odd size.png": save(photo(601, 337), "PNG"),
        "sub/ünïcödé ñame.webp": save(photo(), "WEBP", quality=90),
        "huge.png": save(Image.new("RGB", (3000, 2000)), "PNG"),
        "scan.bmp": save(photo(), "BMP"),
        "scan.tif": save(photo(), "TIFF"),
    }


def write_corpus(folder):
    for key, data in corpus().items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)


EXPECTED_ERRORS = {"truncated.jpg", "empty.png", "text.png", "huge.png"}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, model_file, prefect_server):
    """The corpus of awkward files enhanced once: (source, destination, job, summary, metrics table)."""
    root = tmp_path_factory.mktemp("corpus")
    source, destination = root / "in", root / "out"
    write_corpus(source)
    job = EnhanceJob(source=str(source), destination=str(destination), model=model_file,
                     max_pixels=5_000_000, chunk_size=5, tile=256, overlap=16)
    summary = run(job)
    return source, destination, job, summary, pd.read_parquet(destination / "metrics.parquet")


def test_every_input_gets_one_row_and_bad_files_name_their_problem(corpus_run):
    _, _, _, summary, table = corpus_run
    assert sorted(table.key) == sorted(corpus())
    statuses = dict(zip(table.key, table.status, strict=True))
    assert {k for k, s in statuses.items() if s == "error"} == EXPECTED_ERRORS
    assert summary["ok"] == len(corpus()) - len(EXPECTED_ERRORS) and summary["error"] == 4
    errors = dict(zip(table.key, table.error, strict=True))
    assert "0 bytes" in errors["empty.png"]
    assert "over the limit of 5,000,000" in errors["huge.png"]
    assert "not an image" in errors["text.png"]


def test_deep_images_stay_deep_with_their_alpha_and_profile(corpus_run):
    source, destination, _, _, table = corpus_run
    deep = Image.open(destination / "deep.png")
    assert deep.mode.startswith("I;16") or deep.mode == "I"
    assert np.asarray(deep).max() > 255  # still 16-bit data
    deep_rgba = imagecodecs.png_decode((destination / "deep rgba.png").read_bytes())
    assert deep_rgba.dtype == np.uint16 and deep_rgba.shape == (48, 64, 4)
    np.testing.assert_array_equal(deep_rgba[..., 3], deep_colour(4)[..., 3])  # 16-bit alpha untouched
    assert (deep_rgba[..., :3] % 257 != 0).any()  # not 8-bit values scaled up
    with tifffile.TiffFile(destination / "deep.tif") as tiff, tifffile.TiffFile(source / "deep.tif") as original:
        assert tiff.pages[0].dtype == np.uint16 and tiff.pages[0].shape == (48, 64, 3)
        assert tiff.pages[0].iccprofile == original.pages[0].iccprofile
    modes, depths = dict(zip(table.key, table["mode"], strict=True)), dict(zip(table.key, table.bit_depth, strict=True))
    assert (modes["deep rgba.png"], depths["deep rgba.png"]) == ("RGBA;16", 16)
    assert (modes["deep.tif"], depths["deep.tif"]) == ("RGB;16", 16)


def test_grey_alpha_palette_and_cmyk_come_out_as_they_should(corpus_run):
    source, destination, _, _, _ = corpus_run
    assert Image.open(destination / "grey.png").mode == "L"
    rgba_in, rgba_out = Image.open(source / "rgba.png"), Image.open(destination / "rgba.png")
    assert rgba_out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba_out.getchannel("A")), np.asarray(rgba_in.getchannel("A")))
    assert Image.open(destination / "palette.png").mode == "RGBA"
    assert Image.open(destination / "cmyk.jpg").mode == "RGB"


def test_orientation_profiles_sizes_names_and_formats_are_kept(corpus_run):
    source, destination, _, _, _ = corpus_run

    def out(key):
        return Image.open(destination / key)

    rotated = out("rotated.jpg")
    assert rotated.size == (48, 64)  # upright: the orientation was applied
    assert rotated.getexif().get(0x0112) in (None, 1)
    assert out("icc.jpg").info.get("icc_profile") == Image.open(source / "icc.jpg").info["icc_profile"]
    assert out("odd size.png").size == (601, 337)
    assert out("tiny.png").size == (1, 1)
    assert out("sub/ünïcödé ñame.webp").format == "WEBP"
    assert out("scan.tif").format == "TIFF" and out("scan.bmp").format == "BMP"


def test_the_metrics_rows_of_enhanced_images_are_filled_in(corpus_run):
    table = corpus_run[4]
    ok = table[table.status == "ok"]
    assert ok.width.notna().all() and (ok.bytes_out > 0).all() and (ok.seconds > 0).all()
    assert ok.before_mean_luminance.between(0, 1).all() and ok.after_sharpness.notna().all()
    assert set(table.columns) >= {"model_uri", "model_version", "mode", "bit_depth", "bytes_in"}


def test_a_second_run_skips_everything_and_changes_nothing(corpus_run):
    _, destination, job, summary, _ = corpus_run
    def outputs():  # the metrics and the report are written again: they describe the new run
        return {p: p.read_bytes() for p in destination.rglob("*")
                if p.is_file() and p.suffix != ".parquet" and p.name != "report.html"}

    before = outputs()
    again = run(job)
    assert again["skipped"] == summary["ok"] and again["ok"] == 0 and again["error"] == 4
    after = outputs()
    assert before == after
    table = pd.read_parquet(destination / "metrics.parquet")
    assert len(table) == len(corpus()) and table.key.is_unique


def test_reference_metrics_and_output_format(tmp_path, model_file, prefect_server):
    source, reference, destination = tmp_path / "in", tmp_path / "ref", tmp_path / "out"
    source.mkdir()
    reference.mkdir()
    clean = photo(40, 32, seed=1)
    clean.save(reference / "a.png")
    noisy = np.clip(np.asarray(clean, np.float32) + np.random.default_rng(2).normal(0, 25, (32, 40, 3)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(source / "a.png")
    run(EnhanceJob(source=str(source), destination=str(destination), model=model_file,
                   reference=str(reference), output_format="JPEG", suffix="_enhanced"))
    table = pd.read_parquet(destination / "metrics.parquet")
    row = table.iloc[0]
    assert row.output_key == "a_enhanced.jpg" and (destination / "a_enhanced.jpg").exists()
    output = np.asarray(Image.open(destination / "a_enhanced.jpg").convert("RGB"), np.float64) / 255
    expected = 10 * np.log10(1 / np.mean((output - np.asarray(clean, np.float64) / 255) ** 2))
    assert row.psnr == pytest.approx(expected, abs=0.5)  # JPEG re-encoding moves it a little
    assert 0 < row.ssim < 1 and row.mae > 0


def test_s3_to_s3_with_an_escaping_key(s3_bucket, tmp_path, model_file, prefect_server):
    endpoint, bucket, client = s3_bucket
    for key in ("photos/a.png", "photos/deep/b.jpg", "photos/../evil.png"):
        fmt = "JPEG" if key.endswith(".jpg") else "PNG"
        client.put_object(Bucket=bucket, Key=key, Body=save(photo(), fmt))
    job = EnhanceJob(source=f"s3://{bucket}/photos", destination=f"s3://{bucket}/enhanced", model=model_file,
                     endpoint_url=endpoint, state_dir=str(tmp_path / "state"))
    summary = run(job)
    assert summary["ok"] == 2 and summary["error"] == 1
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"enhanced/a.png", "enhanced/deep/b.jpg", "enhanced/metrics.parquet", "enhanced/report.html"} <= keys
    page = client.get_object(Bucket=bucket, Key="enhanced/report.html")["Body"].read().decode()
    assert '<span data-count="ok">2</span>' in page and "data:image/jpeg;base64," in page  # pairs read from S3
    assert not any(k.startswith("evil") or k == "enhanced/../evil.png" for k in keys - {"photos/../evil.png"})
    table = pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key="enhanced/metrics.parquet")["Body"].read()))
    assert "unsafe key" in table.set_index("key").loc["../evil.png", "error"]
    head = client.head_object(Bucket=bucket, Key="enhanced/a.png")
    assert head["Metadata"]["model"] == model_file


# The batch job in a child process that kills itself (SIGKILL, no clean-up) right
# after writing its KILL_AFTER-th output image: deterministic, whatever the timing.
KILLED_BATCH = """
import os, signal, sys
sys.path.insert(0, {root!r})
from mirnet_pipeline.tasks.batch.stores import LocalStore
from mirnet_pipeline.flows.commands.enhance import main

write, written = LocalStore.write, []

def write_then_die(self, key, data, metadata=None):
    write(self, key, data, metadata)
    if key.endswith(".png"):
        written.append(key)
        if len(written) == int(os.environ["KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)

LocalStore.write = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_batch_resumes_without_losing_or_duplicating(tmp_path, model_file, prefect_server):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parents[2]
    source, destination = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(12):
        photo(64, 48, seed=i).save(source / f"img{i:02d}.png")
    arguments = [str(source), str(destination), "--model", model_file, "--chunk-size", "2"]
    # the session's Prefect server: a flow that started its own temporary server
    # would leave it running when SIGKILL takes the flow away
    env = {**os.environ, "PYTHONPATH": str(root), "KILL_AFTER": "5", "PREFECT_API_URL": PREFECT_API_URL.value()}
    # chunks run one after another: two whole chunks (4 rows) are saved, and the
    # third dies after writing an output, before its rows are saved
    with open(tmp_path / "killed.log", "w+") as log:  # a file, not a pipe no survivor could hold open
        first = subprocess.run([sys.executable, "-c", KILLED_BATCH.format(root=str(root)), *arguments], cwd=root,
                               env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        log.seek(0)
        assert first.returncode == -9, log.read()[-3000:]
    state = destination / ".enhance"
    assert sum(len(pd.read_parquet(p)) for p in state.glob("part-*.parquet")) == 4
    # the third chunk's outputs are written side by side: the kill comes after
    # one of them, and the other may have landed too; nothing of a later chunk
    written = sorted(p.name for p in destination.glob("*.png"))
    assert written[:4] == [f"img{i:02d}.png" for i in range(4)], written
    assert 1 <= len(written[4:]) <= 2 and set(written[4:]) <= {"img04.png", "img05.png"}, written
    assert not (destination / "metrics.parquet").exists()

    second = subprocess.run([sys.executable, "-m", "mirnet_pipeline.flows.commands.enhance", *arguments], cwd=root,
                            env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    table = pd.read_parquet(destination / "metrics.parquet")
    assert table.key.tolist() == [f"img{i:02d}.png" for i in range(12)]
    assert table.set_index("key").status.to_dict() == {
        f"img{i:02d}.png": "skipped" if i < 4 else "ok" for i in range(12)}
    outputs = sorted(p.name for p in destination.iterdir() if p.is_file())
    assert outputs == sorted([f"img{i:02d}.png" for i in range(12)] + ["metrics.parquet", "report.html"])
    assert not [p for p in destination.rglob("*.tmp")]


def test_one_job_at_a_time_per_destination_and_only_its_own_temporaries_are_cleared(tmp_path):
    destination = tmp_path / "out"
    (destination / "sub").mkdir(parents=True)
    (destination / ".enhance" / "tmp").mkdir(parents=True)
    killed_writers = [destination / ".enhance" / "tmp" / "tmpk2zi6p6b.tmp"]
    # the user's files, whatever their names look like: the shapes of temporaries included
    users = [destination / "img04.png", destination / ".notes.tmp", destination / "sub" / "draft.tmp",
             destination / ".img05.png.kjzi6p6b.tmp", destination / "sub" / ".a.jpg.x_1y2z3w.tmp"]
    for path in killed_writers + users:
        path.write_bytes(b"x")
    job = EnhanceJob(source=str(tmp_path / "in"), destination=str(destination), model="m.keras")
    with claim_destination(job):
        assert [p for p in killed_writers if p.exists()] == []
        assert [p for p in users if not p.exists()] == []
        with pytest.raises(DestinationBusy, match=str(destination)):
            with claim_destination(job):
                pass
    with claim_destination(job):  # released when the first job ends
        pass


def test_chunks_run_on_a_local_dask_cluster(tmp_path, model_file, prefect_server):
    from distributed import Client, LocalCluster

    from mirnet_pipeline.flows.enhance import enhance_folder as flow
    from mirnet_pipeline.flows.enhance import task_runner

    source, destination = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(6):
        photo(64, 48, seed=i).save(source / f"img{i}.png")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        job = EnhanceJob(source=str(source), destination=str(destination), model=model_file, chunk_size=2)
        summary = flow.with_options(task_runner=task_runner(cluster.scheduler_address, 1))(job)
        with Client(cluster) as client:
            # which worker processes loaded the model, i.e. ran chunks
            loaded = client.run(_models_loaded_here)
    assert summary["ok"] == 6
    assert len(pd.read_parquet(destination / "metrics.parquet")) == 6
    assert len(list((destination / ".enhance").glob("part-*.parquet"))) == 3
    assert sum(loaded.values()) >= 1, loaded  # chunks ran in the workers' processes


def _models_loaded_here() -> int:
    import sys

    module = sys.modules.get("mirnet_pipeline.tasks.batch.engine")
    return 0 if module is None else module.load_job_model.cache_info().currsize


def test_a_lower_precision_is_a_different_result_for_resume(tmp_path, model_file):
    """Outputs of a bfloat16 run are not taken for float32 ones (or back): a run
    skips only what the destination holds now."""
    from mirnet_pipeline.tasks.batch.engine import process_chunk
    from mirnet_pipeline.tasks.batch.ledger import ledger
    from mirnet_pipeline.tasks.batch.stores import open_store

    source, destination = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(3):
        photo(64, 48, seed=i).save(source / f"img{i}.png")
    infos = open_store(str(source)).list(EnhanceJob.include, ())
    statuses = {}
    for attempt, precision in enumerate(["float32", "bfloat16", "bfloat16", "float32"]):
        job = EnhanceJob(source=str(source), destination=str(destination), model=model_file, precision=precision)
        rows = process_chunk(job, infos, f"run{attempt}", 0, ledger(job)[0])
        statuses[attempt] = ({r["status"] for r in rows}, {r["precision"] for r in rows})
    assert statuses == {0: ({"ok"}, {"float32"}), 1: ({"ok"}, {"bfloat16"}),
                        2: ({"skipped"}, {"bfloat16"}), 3: ({"ok"}, {"float32"})}


@pytest.mark.parametrize("field, value, message", [
    ("precision", "int8", "precision: expected one of float32, bfloat16, float16, got 'int8'"),
    ("output_format", "gif", "output_format: expected one of PNG, JPEG, WEBP, TIFF, BMP, got 'gif'"),
    ("overlap", 300, r"overlap: must be at least 0 and less than half the tile \(512\), got 300"),
    ("chunk_size", 0, "chunk_size: must be at least 1, got 0"),
])
def test_bad_job_parameters_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        EnhanceJob(source="in", destination="out", model="m.keras", **{field: value})


def test_chunks_share_one_model_and_its_lock_and_run_one_at_a_time_by_default(tmp_path, model_file):
    from mirnet_pipeline.flows.enhance import CHUNK_WORKERS, enhance_folder
    from mirnet_pipeline.tasks.batch.engine import ChunkProcessor

    (tmp_path / "in").mkdir()
    job = EnhanceJob(source=str(tmp_path / "in"), destination=str(tmp_path / "out"), model=model_file)
    first, second = ChunkProcessor(job), ChunkProcessor(job)
    assert first.model is second.model and first.lock is second.lock
    assert enhance_folder.task_runner._max_workers == CHUNK_WORKERS == 1


def test_the_chunks_in_flight_are_bounded(tmp_path, model_file, prefect_server, monkeypatch):
    """The flow submits a chunk only when fewer than chunks_in_flight are
    waiting to be collected: its memory and Prefect's task runs in flight do
    not grow with the bucket."""
    import mirnet_pipeline.flows.enhance as module

    source = tmp_path / "in"
    source.mkdir()
    for i in range(7):
        photo(32, 24, seed=i).save(source / f"img{i}.png")
    outstanding, peak = [0], [0]
    submit = module.enhance_chunk.submit

    class Counted:
        def __init__(self, future):
            self.future = future

        def result(self):
            rows = self.future.result()
            outstanding[0] -= 1
            return rows

    def counted_submit(*args, **kwargs):
        outstanding[0] += 1
        peak[0] = max(peak[0], outstanding[0])
        return Counted(submit(*args, **kwargs))

    monkeypatch.setattr(module.enhance_chunk, "submit", counted_submit)
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file, chunk_size=1,
                     chunks_in_flight=2)
    summary = run(job)
    assert summary["ok"] == 7 and (peak[0], outstanding[0]) == (2, 0)
