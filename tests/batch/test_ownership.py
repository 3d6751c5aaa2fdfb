"""The tools touch only what they own: nothing deleted or replaced that the
project did not write, nothing written through links out of the destination,
signals obeyed, no secret kept, model files checked before they are read,
any name the store holds, one job per destination across machines, a damaged
ledger set aside, faults that end with the truth written down, parameters
checked whatever profile is selected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image

from mirnet_pipeline.flows.commands.enhance import main as enhance_main
from mirnet_pipeline.flows.commands.export import main as export_main
from mirnet_pipeline.tasks.batch.claim import DestinationUnusable, claim_destination
from mirnet_pipeline.tasks.batch.engine import ChunkProcessor
from mirnet_pipeline.tasks.batch.job import EnhanceJob
from mirnet_pipeline.tasks.batch.ledger import ledger
from mirnet_pipeline.tasks.batch.planning import listing, plan
from mirnet_pipeline.tasks.batch.stopping import Stop, stoppable
from mirnet_pipeline.tasks.batch.stores import ObjectInfo
from mirnet_pipeline.tasks.storage import STAGING_MARK, atomic_directory, atomic_write_bytes, name_limit
from tests.batch.samples import photo, run, save

ROOT = Path(__file__).resolve().parents[2]


def folder_of_photos(folder: Path, names, size=(64, 48)) -> Path:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        photo(*size, seed=i).save(folder / name, format="PNG" if name.lower().endswith(".png") else None)
    return folder


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def decodes(path: Path) -> bool:
    with Image.open(path) as image:
        image.load()
    return True


def command_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT), **extra)
    return env


ENHANCE = [sys.executable, "-m", "mirnet_pipeline.flows.commands.enhance"]


@pytest.fixture(scope="module")
def prefect_url(tmp_path_factory):
    """A Prefect server of the project's own for the commands these tests start
    (each would otherwise start one: seconds per command)."""
    from mirnet_pipeline.tasks.services import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect") / "server.log") as url:
        os.environ.pop("PREFECT_API_URL", None)  # for the commands only, not this process's flows
        yield url


# --- 1. nothing deleted or replaced that the project did not write ------------------

def test_a_staging_folder_is_recognised_by_its_mark_not_by_its_name(tmp_path):
    target = tmp_path / "dataset"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    # the user's folders, named as the project's staging folders once were named
    users = [tmp_path / f".dataset.{dead}-abcd1234.tmp", tmp_path / f".dataset.{dead}.old"]
    for folder in users:
        (folder / "thesis").mkdir(parents=True)
    # a staging folder of a killed build, and one of a live build
    abandoned = tmp_path / f".dataset.{dead}-k1ll3d00.tmp"
    (abandoned / "content").mkdir(parents=True)
    (abandoned / STAGING_MARK).write_text(json.dumps({"pid": dead, "target": "dataset"}))
    live = tmp_path / f".dataset.{os.getpid()}-l1ve0000.tmp"
    live.mkdir()
    (live / STAGING_MARK).write_text(json.dumps({"pid": os.getpid(), "target": "dataset"}))
    with atomic_directory(target) as staging:
        (staging / "file").write_text("whole")
    assert (target / "file").read_text() == "whole"
    assert all((folder / "thesis").is_dir() for folder in users)
    assert not abandoned.exists() and live.is_dir()


def test_a_build_killed_between_its_two_renames_gets_the_previous_folder_back(tmp_path):
    target = tmp_path / "exports"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    # killed after moving the previous folder aside, before moving the new one in
    staging = tmp_path / f".exports.{dead}-abcdefgh.tmp"
    (staging / "previous").mkdir(parents=True)
    (staging / "previous" / "model.onnx").write_bytes(b"previous export")
    (staging / STAGING_MARK).write_text(json.dumps({"pid": dead, "target": "exports"}))
    from mirnet_pipeline.tasks.storage import remove_abandoned

    assert remove_abandoned(target) == [staging]
    assert (target / "model.onnx").read_bytes() == b"previous export" and not staging.exists()


@pytest.fixture
def keras_file(tmp_path, model_file):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.keras").write_bytes(Path(model_file).read_bytes())
    return folder / "model.keras"


@pytest.mark.parametrize("case", ["documents", "model's own folder", "export with notes", "a file"])
def test_mirnet_export_refuses_a_folder_it_did_not_write_and_leaves_it_untouched(tmp_path, keras_file, capsys,
                                                                                   case):
    destination = tmp_path / "exported"
    if case == "documents":
        (destination / "photos").mkdir(parents=True)
        (destination / "photos" / "beach.jpg").write_bytes(b"jpeg")
        (destination / "letter.docx").write_bytes(b"docx")
        expected = "is not an export (no export.json)"
    elif case == "model's own folder":
        destination = keras_file.parent
        (destination / "notes.txt").write_text("how this model was trained")
        expected = "holds the model being exported"
    elif case == "export with notes":
        (destination / "openvino").mkdir(parents=True)
        (destination / "export.json").write_text("{}")
        (destination / "model.onnx").write_bytes(b"onnx")
        (destination / "notes.txt").write_text("mine")
        expected = "is an export but also holds notes.txt"
    else:
        destination.write_text("a file")
        expected = "is a file, not a folder"
    before = files_under(destination) if destination.is_dir() else destination.read_bytes()
    assert export_main([str(keras_file), str(destination), "--images", str(keras_file.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(destination) in err[0], err
    assert (files_under(destination) if destination.is_dir() else destination.read_bytes()) == before
    assert keras_file.is_file()


def test_a_previous_export_a_new_and_an_empty_folder_may_take_an_export(tmp_path):
    from mirnet_pipeline.tasks.export.bundle import check_export_folder

    previous = tmp_path / "previous"
    (previous / "openvino").mkdir(parents=True)
    (previous / "saved_model").mkdir()
    for name in ("export.json", "model.onnx", "model.int8.onnx"):
        (previous / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for folder in (previous, tmp_path / "empty", tmp_path / "new"):
        check_export_folder(folder, tmp_path / "elsewhere" / "model.keras")
    (tmp_path / "link").symlink_to(previous)
    with pytest.raises(ValueError, match="is a symbolic link"):
        check_export_folder(tmp_path / "link")


# --- 2. nothing written outside the destination, whatever links it holds -----------

def test_links_in_the_destination_are_never_followed(tmp_path, model_file):
    source = folder_of_photos(tmp_path / "in", ["linked/a.png", "deep/er/b.png", "file_link.png", "plain.png"])
    destination, outside = tmp_path / "out", tmp_path / "elsewhere"
    (outside / "folder").mkdir(parents=True)
    (outside / "deep").mkdir()
    (outside / "victim.png").write_bytes(b"the user's file")
    (destination / "deep").mkdir(parents=True)
    (destination / "linked").symlink_to(outside / "folder")  # a sub-folder that is a link
    (destination / "deep" / "er").symlink_to(outside / "deep")  # a link further down
    (destination / "file_link.png").symlink_to(outside / "victim.png")  # the output itself is a link
    before = files_under(outside)
    job = EnhanceJob(source=str(source), destination=str(destination), model=model_file)
    rows = {r["key"]: r for r in ChunkProcessor(job).run(listing(job), {})}
    assert files_under(outside) == before
    assert rows["plain.png"]["status"] == "ok"
    for key, link in (("linked/a.png", "linked"), ("deep/er/b.png", "deep/er"), ("file_link.png", "file_link.png")):
        assert rows[key]["status"] == "error", rows[key]
        assert f"{destination / link} is a symbolic link" in rows[key]["error"]
    assert (destination / "file_link.png").is_symlink()  # the user's link is not replaced either


def test_a_destination_whose_own_folder_is_a_link_is_refused(tmp_path):
    destination, outside = tmp_path / "out", tmp_path / "elsewhere"
    destination.mkdir()
    outside.mkdir()
    (destination / ".enhance").symlink_to(outside)
    job = EnhanceJob(source=str(tmp_path / "in"), destination=str(destination), model="m.keras")
    with pytest.raises(DestinationUnusable, match=r"\.enhance is a symbolic link"):
        with claim_destination(job):
            pass
    assert list(outside.iterdir()) == []


# --- 3. signals -------------------------------------------------------------------------

def test_a_signal_stops_the_job_and_a_second_one_at_once(tmp_path):
    received = []
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(signum)
        with stoppable(f"run-{signum}") as stop:
            os.kill(os.getpid(), signum)
            time.sleep(0.1)
            received.append((stop.requested, stop.exit_status, stop.reason))
        assert signal.getsignal(signum) is before  # restored
    assert received == [(True, 129, "interrupted by SIGHUP"), (True, 130, "interrupted by SIGINT"),
                        (True, 143, "interrupted by SIGTERM")]
    second = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys, time\n"
         f"sys.path.insert(0, {str(ROOT)!r})\n"
         "from mirnet_pipeline.tasks.batch.stopping import stoppable\n"
         "with stoppable('r'):\n"
         "    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1); os.kill(os.getpid(), signal.SIGINT)\n"
         "    time.sleep(30)\n"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 130 and "again to stop at once" in second.stderr


def test_a_stopped_chunk_reads_no_more_and_returns_the_images_done(tmp_path, model_file):
    source = folder_of_photos(tmp_path / "in", [f"{i:02d}.png" for i in range(30)])
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file, workers=2,
                     batch_size=1)
    stop = Stop()
    processor = ChunkProcessor(job)
    reads, read = [], processor.read

    def counted(key, size):
        reads.append(key)
        if len(reads) == 5:
            stop.request("interrupted by SIGINT", 130)
        return read(key, size)

    processor.read = counted
    rows = processor.run(listing(job), {}, stop=stop)
    assert len(reads) <= 5 + job.workers + job.batch_size  # what was already on its way
    assert len(rows) == len(reads) and {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(r["key"] for r in rows)


def _wait_for_outputs(folder: Path, count: int, process, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.png"))) < count:
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the job wrote no outputs"
        time.sleep(0.1)


def _servers_of(process) -> list:
    try:
        return [p for p in psutil.Process(process.pid).children(recursive=True)
                if "server" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def test_ctrl_c_and_sigterm_stop_the_command_cleanly_and_a_rerun_resumes(tmp_path, model_file, prefect_url):
    source = tmp_path / "in"
    source.mkdir()
    data = [save(photo(32, 24, seed=i), "PNG") for i in range(40)]
    for i in range(1200):
        (source / f"{i:04d}.png").write_bytes(data[i % 40])
    destination = tmp_path / "out"
    command = [*ENHANCE, str(source), str(destination), "--model", model_file, "--chunk-size", "20",
               "--batch-size", "1"]

    def interrupted(signals: list[int], own_server: bool) -> tuple[int, str, float]:
        env = command_env(tmp_path) if own_server else command_env(tmp_path, PREFECT_API_URL=prefect_url)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # a process group of its own, as a shell gives a job
        _wait_for_outputs(destination, len(list(destination.glob("*.png"))) + 30, process)
        servers = _servers_of(process)
        for signum in signals:
            os.killpg(process.pid, signum)
            time.sleep(0.05)
        sent = time.monotonic()
        _, err = process.communicate(timeout=120)
        took = time.monotonic() - sent
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, "the job's Prefect server outlived it"
        if own_server:
            assert servers, "the command started no Prefect server of its own"
        return process.returncode, err, took

    status, err, _ = interrupted([signal.SIGINT], own_server=True)
    assert status == 130, err[-3000:]
    assert "mirnet-enhance: stopped: interrupted by SIGINT" in err.strip().splitlines()[-1]
    table = pd.read_parquet(destination / "metrics.parquet")  # everything done so far
    outputs = sorted(p.name for p in destination.glob("*.png"))
    assert sorted(table.key) == outputs and set(table.status) == {"ok"} and 30 <= len(outputs) < 1200
    assert all(decodes(destination / name) for name in outputs)
    assert set(ledger(EnhanceJob(source=str(source), destination=str(destination), model=model_file))[0]) \
        <= set(outputs)

    status, err, _ = interrupted([signal.SIGTERM], own_server=False)
    assert status == 143 and "interrupted by SIGTERM" in err.strip().splitlines()[-1], err[-3000:]
    status, err, took = interrupted([signal.SIGINT, signal.SIGINT], own_server=False)
    assert status == 130 and took < 20, (took, err[-3000:])

    done = subprocess.run(command, env=command_env(tmp_path, PREFECT_API_URL=prefect_url), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(destination / "metrics.parquet")
    assert len(table) == table.key.nunique() == 1200 and set(table.status) <= {"ok", "skipped"}
    assert sorted(p.name for p in destination.glob("*.png")) == sorted(table.key)
    assert all(decodes(p) for p in destination.glob("*.png"))
    assert list((destination / ".enhance" / "tmp").iterdir()) == []


# --- 4. no secret kept ------------------------------------------------------------------

SECRET = "Pl4ntedS3cret"


@pytest.mark.parametrize("arguments, shown", [
    (["--endpoint-url", f"http://minio:{SECRET}@127.0.0.1:9"], "endpoint_url: http://***@127.0.0.1:9"),
    (["--tracking-uri", f"https://alice:{SECRET}@mlflow.example.com"], "--tracking-uri: https://***@mlflow"),
    (["--dask-address", f"tls://bob:{SECRET}@10.0.0.1:8786"], "--dask-address: tls://***@10.0.0.1:8786"),
    (["--reference", f"s3://bucket/truth?X-Amz-Signature={SECRET}"], "X-Amz-Signature=***"),
    (["--source-s3"], "source: s3://***@bucket/photos"),
])
def test_credentials_in_a_parameter_are_refused_and_never_shown(tmp_path, capsys, arguments, shown):
    (tmp_path / "photos").mkdir()
    source = f"s3://AKIAEXAMPLE:{SECRET}@bucket/photos" if arguments == ["--source-s3"] else str(tmp_path / "photos")
    extra = [] if arguments == ["--source-s3"] else arguments
    assert enhance_main([source, str(tmp_path / "out"), "--model", "m.keras", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and shown in err[0] and "carries credentials" in err[0] and SECRET not in err[0], err
    assert "AWS_ACCESS_KEY_ID" in err[0]  # where credentials go instead
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", [("data", "lol", "source"), ("data", "tid2013", "endpoint_url"),
                                   ("mlflow", "tracking_uri"), ("enhance", "source")])
def test_params_yaml_refuses_credentials_without_echoing_them(where):
    import yaml

    from mirnet_pipeline.tasks.config import ConfigError, parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    section = data
    for key in where[:-1]:
        section = section.setdefault(key, {})
    section[where[-1]] = f"https://user:{SECRET}@example.com/x"
    with pytest.raises(ConfigError) as raised:
        parse_params(data)
    assert f"{'.'.join(where)}: https://***@example.com/x carries credentials" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_credentials_from_the_environment_end_up_in_no_store(tmp_path, s3_bucket, model_file, prefect_url):
    """A whole S3 job, with its credentials where they belong (the environment):
    none of the stores it writes or the services it starts keeps them."""
    endpoint, bucket, client = s3_bucket
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"photos/{i}.png", Body=save(photo(seed=i), "PNG"))
    home = tmp_path / "prefect-home"
    env = command_env(tmp_path, AWS_ACCESS_KEY_ID=f"AKIA{SECRET}", AWS_SECRET_ACCESS_KEY=SECRET)
    done = subprocess.run([*ENHANCE, f"s3://{bucket}/photos", f"s3://{bucket}/out", "--model", model_file,
                           "--endpoint-url", endpoint], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stores = {"stdout": done.stdout.encode(), "stderr": done.stderr.encode()}
    stores.update({str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()})  # Prefect's database, WAL, logs
    assert any(name.endswith(".db") for name in stores), sorted(stores)
    for item in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]:  # outputs, ledger, metrics
        stores[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    assert {k for k in stores if k.endswith(".png")} == {f"out/{i}.png" for i in range(3)}
    assert [name for name, data in stores.items() if SECRET.encode() in data] == []


# --- 5. model files checked before their bytes are read ---------------------------------

@pytest.mark.parametrize("case, message", [
    ("weights linked to a device", "is a link to /dev/zero, outside the model's folder"),
    ("weights linked to a file outside", "outside the model's folder"),
    ("keras file is a named pipe", "is a named pipe, not a regular file"),
    ("saved model file linked out", "is a link to"),
    ("weights missing", "model.bin is missing"),
    ("model far too large", "more than a model file can be"),
])
def test_model_files_that_are_not_what_they_seem_are_refused_in_one_line(tmp_path, capsys, case, message):
    folder = folder_of_photos(tmp_path / "photos", ["a.png"])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 64)
    model = model_dir / "model.xml"
    if case == "keras file is a named pipe":
        model = model_dir / "model.keras"
        os.mkfifo(model)
    elif case == "saved model file linked out":
        model = model_dir / "saved_model"
        (model / "variables").mkdir(parents=True)
        (model / "saved_model.pb").write_bytes(b"pb")
        (model / "variables" / "variables.data-00000-of-00001").symlink_to(outside)
    elif case == "model far too large":
        model = model_dir / "model.onnx"
        with open(model, "wb") as handle:
            handle.truncate(17 << 30)  # sparse: nothing is stored
    else:
        model.write_text("<net/>")
        if case == "weights linked to a device":
            (model_dir / "model.bin").symlink_to("/dev/zero")
        elif case == "weights linked to a file outside":
            (model_dir / "model.bin").symlink_to(outside)
    started = time.monotonic()
    assert enhance_main([str(folder), str(tmp_path / "out"), "--model", str(model)]) == 2
    assert time.monotonic() - started < 60  # nothing hashed or loaded: a device would never end
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(model) in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_registry_version_that_lost_its_files_is_named_before_any_work(tmp_path, model_file, capsys):
    import shutil

    import mlflow

    import mirnet_pipeline.model  # noqa: F401  (custom layers)
    from mirnet_pipeline.tasks.config import MlflowSettings
    from mirnet_pipeline.tasks.training.tracking import configure, log_and_register_model
    from mirnet_pipeline.tasks.training.trained_models import load_model

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    configure(MlflowSettings(tracking_uri=store, artifact_location=str(tmp_path / "artifacts")))
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(Path(model_file).read_bytes())
    with mlflow.start_run():
        log_and_register_model(load_model(keras_file)[0], "tiny", keras_file, {})
    shutil.rmtree(next((tmp_path / "artifacts" / "models").iterdir()) / "artifacts")
    folder = folder_of_photos(tmp_path / "photos", ["a.png"])
    for runtime, missing in (([], "version 1 of tiny has lost its files: neither model.keras nor MLmodel is at"),
                             (["--runtime", "onnxruntime"], "version 1 has no onnxruntime export")):
        assert enhance_main([str(folder), str(tmp_path / "out"), "--model", "models:/tiny@candidate",
                             "--tracking-uri", store, *runtime]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mirnet-enhance")]
        assert len(err) == 1 and f"models:/tiny@candidate: {missing}" in err[0], err
    assert not (tmp_path / "out").exists()


# --- 6. any name the store can hold -------------------------------------------------------

def test_names_at_the_file_systems_limit_and_extensions_in_any_case_are_enhanced(tmp_path, model_file):
    limit = name_limit(tmp_path)
    long_ascii = "a" * (limit - 4) + ".png"
    long_accents = "é" * ((limit - 4) // 2) + ".png"  # two bytes a character
    names = [long_ascii, long_accents, "photo.Jpg", "scan.PnG", "x.TIFF", "y.jpeg"]
    source = tmp_path / "in"
    source.mkdir()
    for i, name in enumerate(names):
        fmt = {"jpg": "JPEG", "png": "PNG", "tiff": "TIFF", "jpeg": "JPEG"}[name.rsplit(".", 1)[1].lower()]
        (source / name).write_bytes(save(photo(seed=i), fmt))
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file)
    rows = {r["key"]: r for r in ChunkProcessor(job).run(listing(job), {})}
    assert sorted(rows) == sorted(names)
    assert {k: r["status"] for k, r in rows.items()} == dict.fromkeys(names, "ok"), rows
    assert all((tmp_path / "out" / r["output_key"]).is_file() for r in rows.values())
    atomic_write_bytes(tmp_path / "other" / long_accents, b"whole")  # a sibling temporary fits too
    assert (tmp_path / "other" / long_accents).read_bytes() == b"whole"


def test_a_key_listed_twice_is_one_key():
    infos = [ObjectInfo(k, 1, "v") for k in ("a.png", "b.png", "a.png", "c.png", "b.png")]
    keep, refused = plan(EnhanceJob(source="in", destination="out", model="m.keras"), infos)
    assert [i.key for i in keep] == ["a.png", "b.png", "c.png"] and refused == []


def test_metadata_of_s3_outputs_is_ascii_and_reads_back(tmp_path, s3_bucket, model_file):
    endpoint, bucket, client = s3_bucket
    model = tmp_path / "modèles été" / "模型.keras"
    model.parent.mkdir()
    model.write_bytes(Path(model_file).read_bytes())
    client.put_object(Bucket=bucket, Key="in/a.png", Body=save(photo(), "PNG"))
    job = EnhanceJob(source=f"s3://{bucket}/in", destination=f"s3://{bucket}/out", model=str(model),
                     endpoint_url=endpoint)
    rows = ChunkProcessor(job).run(listing(job), {})
    assert [r["status"] for r in rows] == ["ok"], rows
    metadata = client.head_object(Bucket=bucket, Key="out/a.png")["Metadata"]
    assert metadata["model"].isascii() and urllib.parse.unquote(metadata["model"]) == str(model)


# --- 7. one job per destination, across machines -------------------------------------------

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from mirnet_pipeline.tasks.batch.claim import DestinationBusy, claim_destination
from mirnet_pipeline.tasks.batch.job import EnhanceJob
job = EnhanceJob(source="in", destination=sys.argv[1], model="m.keras", endpoint_url=sys.argv[2] or None,
                 state_dir=sys.argv[3] or None, lease_seconds=float(sys.argv[4]))
try:
    with claim_destination(job):
        print("holding", flush=True)
        time.sleep(float(sys.argv[5]))
except DestinationBusy as exc:
    print("busy:", exc, flush=True)
"""


def _claimer(tmp_path: Path, name: str, destination: str, endpoint: str = "", state_dir: str = "",
             lease: float = 60, hold: float = 300):
    """A process of its own, in a folder and temporary folder of its own (another machine, as far as local
    state goes), that claims ``destination``; returns it once it has said whether it holds it."""
    home = tmp_path / name
    (home / "tmp").mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT)), destination, endpoint, state_dir,
                                str(lease), str(hold)], cwd=home, env={**os.environ, "TMPDIR": str(home / "tmp")},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    return process, line


def test_two_jobs_with_different_state_dirs_cannot_share_a_local_destination(tmp_path):
    destination = str(tmp_path / "out")
    first, line = _claimer(tmp_path, "a", destination, state_dir=str(tmp_path / "state-a"))
    try:
        assert line.startswith("holding"), first.stderr.read()
        second, line = _claimer(tmp_path, "b", destination, state_dir=str(tmp_path / "state-b"), hold=0)
        second.wait(timeout=60)
        assert line.startswith("busy:") and destination in line, line
    finally:
        first.kill()
        first.wait(timeout=30)


def test_an_s3_destination_is_held_across_machines_and_a_killed_holder_is_succeeded(tmp_path, s3_bucket):
    endpoint, bucket, client = s3_bucket
    destination, lease = f"s3://{bucket}/out", 2.0
    first, line = _claimer(tmp_path, "machine-a", destination, endpoint, lease=lease)
    try:
        assert line.startswith("holding"), first.stderr.read()
        time.sleep(3 * lease)  # renewed meanwhile: still held
        second, line = _claimer(tmp_path, "machine-b", destination, endpoint, lease=lease, hold=0)
        second.wait(timeout=60)
        assert line.startswith("busy:") and "pid" in line and ".enhance/lease.json" in line, line
    finally:
        first.kill()  # killed: its lease is not released, it lapses
        first.wait(timeout=30)
    held = json.loads(client.get_object(Bucket=bucket, Key="out/.enhance/lease.json")["Body"].read())
    assert held["pid"] == first.pid
    time.sleep(lease + 1.5)
    third, line = _claimer(tmp_path, "machine-c", destination, endpoint, lease=lease, hold=0)
    third.wait(timeout=60)
    assert line.startswith("holding"), (line, third.stderr.read())
    listed = client.list_objects_v2(Bucket=bucket, Prefix="out/.enhance/").get("Contents", [])
    assert listed == []  # released by the successor when its job ended


# --- 8. a damaged ledger part is named and set aside ---------------------------------------

def test_damaged_ledger_parts_are_set_aside_and_what_they_described_is_done_again(tmp_path, model_file,
                                                                                   prefect_server):
    source = folder_of_photos(tmp_path / "in", [f"{i}.png" for i in range(6)])
    destination = tmp_path / "out"
    job = EnhanceJob(source=str(source), destination=str(destination), model=model_file, chunk_size=2)
    run(job)
    parts = sorted((destination / ".enhance").glob("part-*.parquet"))
    assert len(parts) == 3
    good = parts[0].read_bytes()
    parts[0].write_bytes(good[: len(good) // 2])  # cut off
    parts[1].write_bytes(b"\0" * 200)  # overwritten
    pd.DataFrame({"x": [1]}).to_parquet(parts[2])  # a Parquet file, but not a ledger part
    summary = run(job)
    assert (summary["ok"], summary["skipped"], summary["error"]) == (6, 0, 0)
    assert len(summary["ledger_set_aside"]) == 3
    for part in parts:
        assert any(part.name in line for line in summary["ledger_set_aside"])
        assert (destination / ".enhance" / "damaged" / part.name).is_file() and not part.exists()
    assert sorted(pd.read_parquet(destination / "metrics.parquet").key) == [f"{i}.png" for i in range(6)]
    again = run(job)
    assert (again["skipped"], again["ledger_set_aside"]) == (6, [])


# --- 9. faults end with the truth written down ----------------------------------------------

def _on_a_small_disk(tmp_path: Path, mount: Path, arguments: list[str], read_only: bool = False, env=None):
    """The command with ``mount`` a 128 KiB file system of its own (a mount
    namespace of the command's: no privilege needed), read-only if asked."""
    mount.mkdir(parents=True)
    script = 'mount -t tmpfs -o size=128k tmpfs "$0" && mkdir "$0/out"'
    if read_only:
        script += ' && mount -o remount,ro "$0"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script + ' && exec "$@"', str(mount), *ENHANCE, *arguments],
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_stops_the_job_with_a_reason_and_the_metrics_of_what_was_done(tmp_path, model_file,
                                                                                    prefect_url):
    source = tmp_path / "in"
    source.mkdir()
    for i in range(80):
        (source / f"{i:02d}.png").write_bytes(save(photo(96, 72, seed=i), "PNG"))
    env = command_env(tmp_path, PREFECT_API_URL=prefect_url)
    mount = tmp_path / "small"
    done = _on_a_small_disk(tmp_path, mount, [str(source), str(mount / "out"), "--model", model_file,
                                              "--metrics", str(tmp_path / "metrics.parquet")], env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert "stopped: destination" in lines[-1] and "No space left on device" in lines[-1], lines[-3:]
    assert "Traceback" not in "\n".join(lines[-3:])
    table = pd.read_parquet(tmp_path / "metrics.parquet")
    assert 1 <= (table.status == "ok").sum() < 80
    assert "No space left on device" in " ".join(table.error.dropna())
    # the metrics on the full disk itself: the message says they could not be written
    done = _on_a_small_disk(tmp_path, tmp_path / "small2", [str(source), str(tmp_path / "small2" / "out"),
                                                            "--model", model_file], env=env)
    assert done.returncode == 1
    assert "the metrics could not be written to" in done.stderr and "metrics.parquet" in done.stderr


def test_a_read_only_destination_is_one_line(tmp_path, model_file, prefect_url):
    source = folder_of_photos(tmp_path / "in", ["a.png"])
    mount = tmp_path / "ro"
    done = _on_a_small_disk(tmp_path, mount, [str(source), str(mount / "out"), "--model", model_file],
                            read_only=True, env=command_env(tmp_path, PREFECT_API_URL=prefect_url))
    assert done.returncode == 2
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("mirnet-enhance")]
    assert lines == [f"mirnet-enhance: error: destination {mount / 'out'}: cannot write there (Read-only file "
                     "system); nothing was written"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


# main() in a fresh interpreter, then which heavy modules it imported
FRESH = """
import sys
sys.path.insert(0, {root!r})
from mirnet_pipeline.flows.commands.enhance import main
status = main(sys.argv[1:])
print(status, sorted(m for m in ("tensorflow", "keras", "prefect") if m in sys.modules))
"""


@pytest.mark.parametrize("fault", ["no credentials", "unreachable endpoint", "no such bucket"])
def test_s3_faults_are_one_line_before_prefect_and_tensorflow(tmp_path, s3_server, fault):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    endpoint, bucket = s3_server, "no-such-bucket"
    if fault != "no credentials":
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    if fault == "unreachable endpoint":
        from mirnet_pipeline.tasks.services import free_port

        endpoint = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "m.keras").write_bytes(b"not read")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", FRESH.format(root=str(ROOT)), f"s3://{bucket}/photos",
                           str(tmp_path / "out"), "--model", "m.keras", "--endpoint-url", endpoint],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 60
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    expected = {"no credentials": "no S3 credentials were found (set AWS_ACCESS_KEY_ID",
                "unreachable endpoint": f"cannot reach {endpoint}",
                "no such bucket": f"there is no bucket 'no-such-bucket' at {endpoint}"}[fault]
    assert len(err) == 1 and err[0].startswith(f"mirnet-enhance: error: source s3://{bucket}/photos: ") \
        and expected in err[0], err


# --- 10. parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: d["train"].update(learning_rate=float("inf")),
     "params.yaml: train.learning_rate: Input should be a finite number"),
    (lambda d: d["train"].update(learning_rate=-0.001),
     "params.yaml: train.learning_rate: Input should be greater than 0"),
    (lambda d: d["profiles"]["demo"]["train"].update(learning_rate=float("nan")),
     "params.yaml (profile demo): train.learning_rate: Input should be a finite number"),
    (lambda d: d["profiles"].update(spare={"train": {"batch_size": 0}}),
     "params.yaml (profile spare): train.batch_size: Input should be greater than or equal to 1"),
    (lambda d: d["variants"]["mirnet"].setdefault("train", {}).update(clip_norm=float("inf")),
     "variants.mirnet.train.clip_norm: Input should be a finite number"),
    (lambda d: d["evaluate"].setdefault("research_psnr", {}).update(mirnet=[float("-inf"), 30.0]),
     "evaluate.research_psnr.mirnet.0: Input should be a finite number"),
])
def test_every_value_is_checked_whatever_profile_is_selected(change, message):
    import yaml

    from mirnet_pipeline.tasks.config import ConfigError, parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert data["profile"] == "demo" and "learning_rate" in data["profiles"]["demo"]["train"]
    change(data)
    with pytest.raises(ConfigError) as raised:
        parse_params(data)
    assert message in str(raised.value)


def test_a_job_field_that_is_not_finite_is_refused():
    with pytest.raises(ValueError, match="lease_seconds: must be a positive number"):
        EnhanceJob(source="in", destination="out", model="m.keras", lease_seconds=float("nan"))
    assert np.isfinite(EnhanceJob(source="in", destination="out", model="m.keras").lease_seconds)


def test_the_default_include_takes_every_case_of_every_extension(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.png", "b.PNG", "c.Jpg", "d.JPEG", "e.tIf", "f.webP", "g.Bmp", "notes.txt", "h.gif"):
        (source / name).write_bytes(b"x")
    keys = [i.key for i in listing(EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model="m"))]
    assert keys == ["a.png", "b.PNG", "c.Jpg", "d.JPEG", "e.tIf", "f.webP", "g.Bmp"]
    (source / "sub").mkdir()
    (source / "sub" / "x.PNG").write_bytes(b"x")
    only = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model="m", include=("sub/*.png",))
    assert [i.key for i in listing(only)] == ["sub/x.PNG"]
