"""The tiny project (``tiny_project.py``) as a fixture, in its own folder as the working directory."""

from __future__ import annotations

import pytest

from tests.training.tiny_project import build_tiny_project


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    build_tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path
