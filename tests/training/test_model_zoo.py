"""The one-screen summary command and the model-zoo flow."""

from __future__ import annotations

import json

import pytest

from mirnet_pipeline.flows.commands.summary import main
from mirnet_pipeline.tasks.artifacts import MODEL_ZOO
from mirnet_pipeline.tasks.config import load_params, parse_params


def test_summary_command_prints_one_screen(capsys):
    assert main(["cnn", "channels=256"]) == 0
    text = capsys.readouterr().out
    assert "parameters     2,964,483" in text
    assert "GMACs / MP     2,962.9" in text
    assert len(text.splitlines()) <= 24


def test_summary_command_json_and_bad_option(capsys):
    assert main(["mirnet", "num_rrg=1", "num_mrb=1", "channels=16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["options"]["num_rrg"] == 1 and info["options"]["skff_softmax"] == "channels"
    assert info["size_multiple"] == 4
    with pytest.raises(SystemExit):
        main(["mirnet", "chanels=3"])
    assert "chanels" in capsys.readouterr().err


def test_model_zoo_flow_writes_metrics(prefect_server, tmp_path, monkeypatch):
    from mirnet_pipeline.flows.model_zoo import model_zoo

    assert load_params().models  # the checked-in file still parses
    monkeypatch.chdir(tmp_path)  # artefact paths are relative to the project root

    params = parse_params(
        {
            "models": {
                "cnn128": {"arch": "cnn", "options": {"channels": 128}},
                "tiny": {"arch": "mirnet", "options": {"num_rrg": 1, "num_mrb": 1, "channels": 8}},
            },
            "model_zoo": {"height": 64, "width": 64},
        }
    )
    metrics = model_zoo(params)
    written = json.loads((tmp_path / MODEL_ZOO / "summary.json").read_text())
    assert written == metrics
    assert written["cnn128"]["parameters"] == 744_963
    assert written["cnn128"]["gmacs_per_megapixel"] == pytest.approx(744.192)
    assert "| cnn128 | cnn |" in (tmp_path / MODEL_ZOO / "summary.md").read_text()
