"""Nothing lost, nothing overwritten, nothing half-written: the batch job under
colliding keys, overlapping locations, awkward TIFFs, multi-frame files,
names that are not UTF-8, the umask, killed writers and a killed command."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import tifffile
from PIL import Image

from mirnet_pipeline.tasks.batch.engine import ChunkProcessor
from mirnet_pipeline.tasks.batch.job import EnhanceJob, key_text
from mirnet_pipeline.tasks.batch.planning import OverlappingLocations, check_locations, listing, plan
from mirnet_pipeline.tasks.batch.stores import ObjectInfo
from tests.batch.samples import photo, run, save

ROOT = Path(__file__).resolve().parents[2]
NOT_UTF8 = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, as an old camera or archive names them


# --- planning: every key its own output -------------------------------------------

def planned(keys, **job):
    infos = [ObjectInfo(k, 1, "v") for k in keys]
    return plan(EnhanceJob(source="in", destination="out", model="m.keras", **job), infos)


@pytest.mark.parametrize("keys, owner, refused", [
    (["x.png", "x.PNG"], "x.PNG", "x.png"),           # case of the extension
    (["a.jpg", "a.jpeg"], "a.jpeg", "a.jpg"),         # spelling of the extension
    (["dir//a.png", "dir/a.png"], "dir//a.png", "dir/a.png"),  # S3 keys with a doubled slash
    (["./a.png", "a.png"], "./a.png", "a.png"),       # S3 keys with a dot segment
])
def test_keys_that_map_to_one_output_keep_one_and_name_it(keys, owner, refused):
    keep, rows = planned(keys)
    assert [i.key for i in keep] == [owner]
    assert [r["key"] for r in rows] == [refused]
    assert rows[0]["status"] == "error" and f"already the output of {owner}" in rows[0]["error"]


def test_an_output_format_can_make_keys_collide_and_different_formats_do_not():
    assert planned(["c.jpg", "c.png"])[1] == []  # c.jpg and c.png
    keep, rows = planned(["c.jpg", "c.png"], output_format="PNG")  # both would be c.png
    assert [i.key for i in keep] == ["c.jpg"] and [r["key"] for r in rows] == ["c.png"]


def test_key_text_escapes_only_what_a_column_cannot_hold_and_is_reversible():
    assert key_text("sub/ünïcödé ñame.webp") == "sub/ünïcödé ñame.webp"
    assert key_text(NOT_UTF8) == "caf\\xe9.png"
    assert key_text("caf\\xe9.png") == "caf\\\\xe9.png"  # a literal backslash never reads as an escape
    for key in (NOT_UTF8, "caf\\xe9.png", "plain.png"):
        text = key_text(key)
        restored = text.encode("utf-8").decode("unicode_escape").encode("latin-1")
        assert restored == key.encode("utf-8", "surrogateescape")


# --- locations -----------------------------------------------------------------

@pytest.mark.parametrize("source, destination", [
    ("photos", "photos"), ("photos", "photos/"), ("photos/2024", "photos"),
    ("s3://b/photos", "s3://b/photos/"), ("s3://b/photos/2024", "s3://b/photos"), ("s3://b/photos", "s3://b"),
])
def test_a_destination_that_is_or_holds_the_source_is_refused(tmp_path, source, destination):
    if not source.startswith("s3://"):
        source, destination = str(tmp_path / source), str(tmp_path / destination)
    with pytest.raises(OverlappingLocations, match="overwrite or mix with the originals"):
        check_locations(EnhanceJob(source=source, destination=destination, model="m.keras"))


@pytest.mark.parametrize("source, destination", [
    ("photos", "photos-enhanced"), ("s3://b/photos", "s3://b/photos2"), ("s3://b/photos", "s3://c/photos"),
    ("photos", "s3://b/photos"),
])
def test_neighbouring_locations_are_accepted(tmp_path, source, destination):
    if not source.startswith("s3://"):
        source = str(tmp_path / source)
    check_locations(EnhanceJob(source=source, destination=destination, model="m.keras"))


def test_the_command_refuses_overlapping_locations_before_writing_anything(tmp_path, model_file):
    from mirnet_pipeline.flows.commands.enhance import main

    source = tmp_path / "photos"
    source.mkdir()
    photo().save(source / "a.png")
    before = sorted(p.name for p in source.rglob("*"))
    assert main([str(source), str(source), "--model", model_file]) == 2  # a usage error
    assert sorted(p.name for p in source.rglob("*")) == before  # no outputs, no state folder


def test_a_destination_inside_the_source_is_left_out_of_the_listing(tmp_path):
    source = tmp_path / "photos"
    (source / "enhanced").mkdir(parents=True)
    (source / "enhanced2").mkdir()
    for key in ("a.png", "enhanced/a.png", "enhanced2/b.png"):
        photo().save(source / key)
    job = EnhanceJob(source=str(source), destination=str(source / "enhanced"), model="m.keras")
    assert [i.key for i in listing(job)] == ["a.png", "enhanced2/b.png"]


# --- a folder of hostile inputs, enhanced twice into a folder inside it ----------

def tiff(image: Image.Image, **options) -> bytes:
    return save(image, "TIFF", **options)


def hostile_inputs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x010F] = "Pipeline Camera"  # Make
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"  # DateTimeOriginal
    frames = [photo(seed=1), photo(seed=2)]
    return {
        "x.png": save(photo(seed=3), "PNG"),
        "x.PNG": save(photo(seed=4), "PNG"),
        NOT_UTF8: save(photo(seed=5), "PNG"),
        "back\\slash.png": save(photo(seed=6), "PNG"),  # a backslash is just a character in a POSIX name
        "a\\..\\..\\up.png": save(photo(seed=7), "PNG"),  # but not one that climbs out when read as a separator
        "cmyk.tif": tiff(photo().convert("CMYK")),
        "palette.tif": tiff(photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
        "exif.tif": tiff(photo(), exif=exif.tobytes()),
        "exif.jpg": save(photo(), "JPEG", quality=90, exif=exif.tobytes()),
        "float.tif": tiff(Image.fromarray(np.full((48, 64), 0.5, np.float32))),
        "pages.tif": save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "animated.png": save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "animated.webp": save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
    }


def digests(folder: Path) -> dict[bytes, str]:
    return {os.fsencode(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, model_file, prefect_server):
    """The hostile inputs enhanced into ``source/enhanced`` under umask 022, twice:
    (source, destination, originals' digests before, first table, second table)."""
    source = tmp_path_factory.mktemp("hostile") / "photos"
    source.mkdir()
    for key, data in hostile_inputs().items():
        (source / key).write_bytes(data)
    before = digests(source)
    destination = source / "enhanced"
    job = EnhanceJob(source=str(source), destination=str(destination), model=model_file)
    previous = os.umask(0o022)
    try:
        run(job)
        first = pd.read_parquet(destination / "metrics.parquet")
        run(job)
        second = pd.read_parquet(destination / "metrics.parquet")
    finally:
        os.umask(previous)
    return source, destination, before, first.set_index("key"), second.set_index("key")


def test_every_key_gets_one_row_and_ok_rows_have_their_own_output(hostile_run):
    source, destination, _, first, _ = hostile_run
    assert sorted(first.index) == sorted(key_text(k) for k in hostile_inputs())
    ok = first[first.status == "ok"]
    outputs = {os.fsencode(p.relative_to(destination)) for p in destination.rglob("*")
               if p.is_file() and ".enhance" not in p.parts} - {b"metrics.parquet", b"report.html"}
    assert len(ok) == len(outputs) == len(set(ok.output_key))
    assert first.loc["x.png", "status"] == "error" and "already the output of x.PNG" in first.loc["x.png", "error"]


def test_originals_are_untouched_and_the_destination_is_not_enhanced_again(hostile_run):
    source, destination, before, _, second = hostile_run
    after = {k: v for k, v in digests(source).items() if not k.startswith(b"enhanced/")}
    assert after == before
    assert not (destination / "enhanced").exists()
    assert not any(k.startswith("enhanced/") for k in second.index)


def test_tiffs_of_every_colour_model_come_out_as_tiffs_readers_open(hostile_run):
    _, destination, _, first, _ = hostile_run
    for key in ("cmyk.tif", "palette.tif", "exif.tif"):
        assert first.loc[key, "status"] == "ok", first.loc[key, "error"]
        path = destination / key
        with Image.open(path) as image:
            image.load()
            assert image.mode == "RGB" and image.size == (64, 48)
            tags = image.getexif()
            assert tags[277] == 3 and tags[258] == (8, 8, 8)  # samples per pixel, bits per sample: this file's
        assert tifffile.imread(path).shape == (48, 64, 3)


def test_descriptive_exif_is_kept(hostile_run):
    _, destination, _, _, _ = hostile_run
    for key in ("exif.tif", "exif.jpg"):
        with Image.open(destination / key) as image:
            exif = image.getexif()
            assert exif[0x010F] == "Pipeline Camera", key
            assert exif.get_ifd(0x8769)[0x9003] == "2024:05:01 10:00:00", key


def test_multi_frame_and_floating_point_files_are_refused_with_a_reason(hostile_run):
    _, destination, _, first, _ = hostile_run
    for key in ("pages.tif", "animated.png", "animated.webp"):
        assert first.loc[key, "status"] == "error" and "2 frames" in first.loc[key, "error"], key
        assert not (destination / key).exists()
    assert "floating-point" in first.loc["float.tif", "error"]


def test_a_backslash_in_a_name_is_kept_unless_it_would_climb_out(hostile_run):
    _, destination, _, first, _ = hostile_run
    text = key_text("back\\slash.png")
    assert text == "back\\\\slash.png"  # doubled in the metrics
    assert first.loc[text, "status"] == "ok" and (destination / "back\\slash.png").is_file()
    assert "unsafe key" in first.loc[key_text("a\\..\\..\\up.png"), "error"]


def test_a_name_that_is_not_utf8_is_enhanced_and_stored_escaped(hostile_run):
    _, destination, _, first, second = hostile_run
    text = key_text(NOT_UTF8)
    assert text == "caf\\xe9.png"
    assert first.loc[text, "status"] == "ok" and first.loc[text, "output_key"] == text
    assert (destination / NOT_UTF8).is_file()
    assert second.loc[text, "status"] == "skipped"  # the ledger finds it again


def test_the_second_run_skips_every_ok_key_and_repeats_every_refusal(hostile_run):
    _, _, _, first, second = hostile_run
    assert sorted(second.index) == sorted(first.index)
    assert set(second[first.status == "ok"].status) == {"skipped"}
    assert (second[first.status == "error"].error == first[first.status == "error"].error).all()


def test_outputs_and_the_metrics_follow_the_umask(hostile_run):
    _, destination, _, _, _ = hostile_run
    for name in ("x.png", "cmyk.tif", "metrics.parquet"):
        assert (destination / name).stat().st_mode & 0o777 == 0o644, name


# --- memory, half-written folders, a killed command ------------------------------

def test_reads_run_only_a_few_images_ahead_of_the_model(tmp_path, model_file):
    source = tmp_path / "in"
    source.mkdir()
    for i in range(24):
        photo(seed=i).save(source / f"{i:02d}.png")
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file,
                     workers=2, batch_size=1)
    processor = ChunkProcessor(job)
    reads, ahead = [], []
    read, infer = processor.read, processor.infer_batch

    def counted_read(key, size):
        reads.append(key)
        return read(key, size)

    def slow_infer(images):
        time.sleep(0.05)  # a model slower than the reads: without a bound they would all run ahead
        ahead.append(len(reads))
        return infer(images)

    processor.read, processor.infer_batch = counted_read, slow_infer
    rows = processor.run(listing(job), {})
    assert [r["status"] for r in rows] == ["ok"] * 24
    # in memory at most: the read window, the batch at the model, and the image that closed it
    limit = (job.workers + job.batch_size) + job.batch_size + 1
    assert all(started - done <= limit for done, started in enumerate(ahead)), ahead


def test_a_killed_command_takes_its_prefect_server_with_it(tmp_path, model_file):
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        photo(seed=i).save(source / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT))
    command = subprocess.Popen([sys.executable, "-m", "mirnet_pipeline.flows.commands.enhance", str(source),
                                str(tmp_path / "out"), "--model", model_file],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(command.pid)
    deadline = time.monotonic() + 180
    servers = []
    while not servers and time.monotonic() < deadline and command.poll() is None:
        servers = [p for p in parent.children(recursive=True) if "server" in " ".join(_cmdline(p))]
        time.sleep(0.5)
    assert servers, "the command started no Prefect server of its own"
    os.kill(command.pid, signal.SIGKILL)
    command.wait(timeout=30)
    _, alive = psutil.wait_procs(servers, timeout=60)
    for process in alive:
        process.kill()
    assert not alive, [_cmdline(p) for p in alive]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


# --- resume state with the destination ---------------------------------------------

def test_an_s3_job_resumes_from_another_directory_on_dask_workers_in_their_own_directories(
        s3_bucket, tmp_path, model_file, prefect_server, monkeypatch):
    from distributed import Client, LocalCluster

    from mirnet_pipeline.flows.enhance import enhance_folder, task_runner
    from mirnet_pipeline.tasks.batch.engine import process_chunk
    from mirnet_pipeline.tasks.batch.ledger import ledger, new_run_id

    endpoint, bucket, client = s3_bucket
    for i in range(6):
        client.put_object(Bucket=bucket, Key=f"photos/{i}.png", Body=save(photo(seed=i), "PNG"))
    job = EnhanceJob(source=f"s3://{bucket}/photos", destination=f"s3://{bucket}/enhanced", model=model_file,
                     endpoint_url=endpoint, chunk_size=2)
    # a first run, from one directory, gets through one chunk and stops
    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    infos = list(listing(job))
    first = process_chunk(job, infos[:2], new_run_id(), 0, ledger(job)[0])
    assert [r["status"] for r in first] == ["ok", "ok"]
    assert list((tmp_path / "first").iterdir()) == []  # no local state
    # the rest from another directory, on workers that each work in a folder of their own
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "second")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as dask:
        for n, worker in enumerate(dask.scheduler_info()["workers"]):
            folder = tmp_path / f"worker{n}"
            folder.mkdir()
            dask.run(os.chdir, str(folder), workers=[worker])
        summary = enhance_folder.with_options(task_runner=task_runner(cluster.scheduler_address, 1))(job)
    assert (summary["skipped"], summary["ok"], summary["error"]) == (2, 4, 0)
    table = pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key="enhanced/metrics.parquet")["Body"].read()))
    assert sorted(table.key) == [f"{i}.png" for i in range(6)]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="enhanced/")["Contents"]]
    assert sorted(k for k in keys if k.endswith(".png")) == [f"enhanced/{i}.png" for i in range(6)]
    # the first chunk's part folded into a snapshot at the start; the skipped chunk wrote none
    assert len([k for k in keys if k.startswith("enhanced/.enhance/part-")]) == 2
    assert "enhanced/.enhance/snapshot-000000000001.parquet" in keys
    for n in range(2):
        assert list((tmp_path / f"worker{n}").iterdir()) == []


def test_an_s3_job_through_a_faulty_network_ends_with_every_key_ok_once(s3_bucket, model_file, prefect_server):
    from tests.batch.fault_proxy import FaultProxy

    endpoint, bucket, client = s3_bucket
    for i in range(6):
        client.put_object(Bucket=bucket, Key=f"photos/{i}.png", Body=save(photo(seed=i), "PNG"))
    with FaultProxy(endpoint) as proxy:
        job = EnhanceJob(source=f"s3://{bucket}/photos", destination=f"s3://{bucket}/enhanced", model=model_file,
                         endpoint_url=proxy.url, chunk_size=3)
        summary = run(job)
    assert (summary["ok"], summary["error"]) == (6, 0), summary["failures"]
    # every kind of fault was met: throttled and failed requests, object bodies cut off half-way
    assert proxy.faults["slow-down"] >= 6 and proxy.faults["internal"] >= 6 and proxy.faults["cut-body"] >= 6, \
        proxy.faults
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="enhanced/")["Contents"]]
    assert sorted(k for k in keys if k.endswith(".png")) == [f"enhanced/{i}.png" for i in range(6)]
    assert len([k for k in keys if k.startswith("enhanced/.enhance/part-")]) == 2  # one per chunk, none twice
    table = pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key="enhanced/metrics.parquet")["Body"].read()))
    assert sorted(table.key) == [f"{i}.png" for i in range(6)] and set(table.status) == {"ok"}
    for i in range(6):
        body = client.get_object(Bucket=bucket, Key=f"enhanced/{i}.png")["Body"].read()
        assert Image.open(io.BytesIO(body)).size == (64, 48)  # whole images, not half bodies


def test_files_are_judged_by_their_size_and_first_bytes_before_being_read_whole(tmp_path, model_file, monkeypatch):
    from mirnet_pipeline.tasks.batch.stores import LocalStore

    source = tmp_path / "in"
    source.mkdir()
    with open(source / "zeros.png", "wb") as handle:
        handle.truncate(70 << 20)  # 70 MiB (sparse): far more than 1000 pixels can take
    (source / "notes.jpg").write_bytes(b"minutes of the meeting\n" * 50_000)  # 1.1 MB of text
    save_png = save(Image.new("RGB", (3000, 2000)), "PNG")  # announces 6 MP in its header
    (source / "large.png").write_bytes(save_png)
    photo(20, 10).save(source / "small.png")
    whole_reads = []
    read = LocalStore.read

    def recorded(self, key):
        whole_reads.append(key)
        return read(self, key)

    monkeypatch.setattr(LocalStore, "read", recorded)
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file, max_pixels=1000)
    rows = {r["key"]: r for r in ChunkProcessor(job).run(listing(job), {})}
    assert "more than an image of 1,000 pixels can take" in rows["zeros.png"]["error"]
    assert rows["notes.jpg"]["error"] == "not an image Pillow can read"
    assert "3000x2000 = 6,000,000 pixels is over the limit" in rows["large.png"]["error"]
    assert rows["small.png"]["status"] == "ok"
    assert whole_reads == ["small.png"]
