"""``mirnet-enhance`` as a command-line tool: a user's mistake ends in one line
and exit status 2 before anything heavy is imported; paths are the user's; the
registry is the project's wherever the command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirnet_pipeline.flows.commands.enhance import main
from mirnet_pipeline.tasks.config import PROJECT_ROOT, absolute_tracking_uri, project_tracking_uri

ROOT = Path(__file__).resolve().parents[2]

# main() in a fresh interpreter, then which heavy modules it imported
FRESH = """
import sys
sys.path.insert(0, {root!r})
from mirnet_pipeline.flows.commands.enhance import main
status = main(sys.argv[1:])
print(status, sorted(m for m in ("tensorflow", "keras", "prefect", "mlflow") if m in sys.modules))
"""


def test_a_missing_folder_is_one_line_and_exit_2_without_heavy_imports(tmp_path):
    done = subprocess.run([sys.executable, "-c", FRESH.format(root=str(ROOT)), "no-such-folder", "out",
                           "--model", "m.keras"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.stdout.split("\n")[0] == "2 []"
    assert done.stderr.strip().splitlines() == [
        "mirnet-enhance: error: source no-such-folder: no such folder (give a folder or an s3://bucket/prefix)"]


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are read from the user's working directory
    (tmp_path / "photos").mkdir()
    (tmp_path / "m.keras").write_bytes(b"not checked before loading")
    return tmp_path


@pytest.mark.parametrize("arguments, message", [
    (["--overlap", "300"], "overlap: must be at least 0 and less than half the tile (512), got 300"),
    (["--batch-size", "0"], "batch_size: must be at least 1, got 0"),
    (["--model", "missing.keras"],
     "model missing.keras: no such file (give a .keras file, an exported model or models:/<name>@<alias>)"),
    (["--model", "models:/mirnet"],
     "model models:/mirnet: expected models:/<name>@<alias> or models:/<name>/<version>"),
    (["--model", "models:/mirnet@"],
     "model models:/mirnet@: expected models:/<name>@<alias> or models:/<name>/<version>"),
    (["--reference", "truth"], "reference truth: no such folder (give a folder or an s3://bucket/prefix)"),
    (["--destination-is-source"], "is the source"),
])
def test_mistakes_are_named_in_one_line(photos, capsys, arguments, message):
    if arguments == ["--destination-is-source"]:
        argv = ["photos", "photos", "--model", "m.keras"]
    else:
        argv = ["photos", "out", "--model", "m.keras", *arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mirnet-enhance: error: ") and message in err[0], err
    assert not (photos / "out").exists()


def test_registry_mistakes_name_the_store(photos, capsys):
    store = photos / "mlflow.db"
    assert main(["photos", "out", "--model", "models:/mirnet@champion", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert f"there is no MLflow store at sqlite:///{store}" in capsys.readouterr().err
    assert not store.exists()  # not created by asking

    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{store}").create_registered_model("mirnet")
    assert main(["photos", "out", "--model", "models:/mirnet@champion", "--tracking-uri", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err
    assert f"model models:/mirnet@champion: not in the MLflow registry at sqlite:///{store}" in err
    assert main(["photos", "out", "--model", "models:/mirnet/3", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert "model models:/mirnet/3: not in the MLflow registry" in capsys.readouterr().err


def test_the_project_store_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert PROJECT_ROOT == ROOT
    assert project_tracking_uri() == f"sqlite:///{ROOT / 'mlflow.db'}"  # params.yaml: sqlite:///mlflow.db
    assert absolute_tracking_uri("sqlite:////srv/m.db", ROOT) == "sqlite:////srv/m.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000", ROOT) == "http://127.0.0.1:5000"


def test_precision_names_are_the_model_packages():
    from mirnet_pipeline.model import PRECISIONS
    from mirnet_pipeline.tasks.batch.job import PRECISION_NAMES

    assert list(PRECISION_NAMES) == list(PRECISIONS)


def test_pipeline_run_runs_in_the_callers_directory(tmp_path):
    env = {**os.environ, "PIPELINE_VENV": sys.prefix}
    done = subprocess.run([str(ROOT / "pipeline"), "run", "pwd"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path)


def test_failed_images_fail_the_flow_run_as_they_fail_the_command(tmp_path, model_file, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogWorker

    from tests.batch.samples import photo

    source = tmp_path / "in"
    source.mkdir()
    photo().save(source / "a.png")
    (source / "b.png").write_bytes(b"not an image")
    assert main([str(source), str(tmp_path / "out"), "--model", model_file]) == 1
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "metrics.parquet").is_file()
    with get_client(sync_client=True) as client:
        newest = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
    assert newest.state.is_failed(), newest.state
    assert "1 of 2 images failed" in newest.state.message
    # an expected outcome: one line in the run's log, no traceback
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        logs = [log.message for log in client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[newest.id])))]
    assert [m for m in logs if m.startswith("1 of 2 images failed")] == [
        "1 of 2 images failed (see the enhance-failures artifact, the report and the metrics Parquet)"], logs
    assert not [m for m in logs if "Traceback" in m], logs


def test_a_chunk_reports_progress_per_image(tmp_path, model_file):
    """The progress bar moves per image: every row of a chunk, new, skipped or
    failed, reaches the callback of its run as it is done."""
    from mirnet_pipeline.tasks.batch.engine import PROGRESS, process_chunk
    from mirnet_pipeline.tasks.batch.job import EnhanceJob
    from mirnet_pipeline.tasks.batch.ledger import ledger
    from mirnet_pipeline.tasks.batch.stores import open_store
    from tests.batch.samples import photo

    source = tmp_path / "in"
    source.mkdir()
    for i in range(4):
        photo(64, 48, seed=i).save(source / f"img{i}.png")
    (source / "broken.png").write_bytes(b"not an image")
    job = EnhanceJob(source=str(source), destination=str(tmp_path / "out"), model=model_file)
    infos = open_store(str(source)).list(EnhanceJob.include, ())
    for attempt in range(2):  # the second run skips the four done before
        calls = []
        PROGRESS[f"run{attempt}"] = calls.append
        try:
            rows = process_chunk(job, infos, f"run{attempt}", 7, ledger(job)[0])
        finally:
            PROGRESS.pop(f"run{attempt}")
        assert calls == [7] * 5 and len(rows) == 5
    assert sorted(r["status"] for r in rows) == ["error", "skipped", "skipped", "skipped", "skipped"]
