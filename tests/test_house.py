"""The house rules that a tool can check (docs/design.md): the code is clean
under ruff, the import contracts hold, and every project import resolves for
a static type checker, with the checkout as it is (no path set up)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str, *arguments: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *arguments], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_code_is_clean_under_ruff():
    done = tool("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_refuses_the_top_level_links_as_import_names(tmp_path):
    """model/, tasks/ and flows/ are links into the package: importing them by
    those names would load a second copy of every module."""
    bad = ROOT / "tests" / f"_house_probe_{tmp_path.name}.py"
    bad.write_text("import tasks.artifacts\nfrom model import build_model\n\nprint(tasks.artifacts, build_model)\n")
    try:
        done = tool("ruff", "check", "--no-cache", "--select", "TID", str(bad))
    finally:
        bad.unlink()
    assert done.returncode == 1 and done.stdout.count("TID251") == 2, done.stdout


def test_the_import_contracts_hold():
    done = tool("lint-imports", "--no-cache")
    assert done.returncode == 0, done.stdout[-4000:]
    assert "3 kept, 0 broken" in done.stdout


def test_an_import_against_the_rooms_breaks_a_contract(tmp_path):
    shutil.copytree(ROOT / "mirnet_pipeline", tmp_path / "mirnet_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    cnn = tmp_path / "mirnet_pipeline" / "model" / "cnn.py"
    cnn.write_text(cnn.read_text() + "\nfrom mirnet_pipeline.tasks import artifacts  # noqa: E402,F401\n")
    done = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})
    assert done.returncode == 1 and "flows -> tasks -> model BROKEN" in done.stdout, done.stdout[-3000:]
    assert "mirnet_pipeline.model.cnn -> mirnet_pipeline.tasks.artifacts" in done.stdout


def unresolved_imports(folder: Path) -> tuple[dict, list[str]]:
    """(basedpyright's summary, its unresolved-import diagnostics) for ``folder``."""
    done = tool("basedpyright", "--outputjson", cwd=folder, timeout=900)
    report = json.loads(done.stdout)
    missing = [f"{Path(d['file']).relative_to(folder)}:{d['range']['start']['line'] + 1}: {d['message']}"
               for d in report["generalDiagnostics"] if d.get("rule") == "reportMissingImports"]
    return report["summary"], missing


def test_every_import_resolves_for_a_type_checker_in_the_checkout():
    summary, missing = unresolved_imports(ROOT)
    assert missing == []
    package = len(list((ROOT / "mirnet_pipeline").rglob("*.py")))
    assert summary["filesAnalyzed"] >= package + len(list((ROOT / "tests").rglob("test_*.py")))


def test_an_unresolved_project_import_is_found(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "mirnet_pipeline").symlink_to(ROOT / "mirnet_pipeline")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_probe.py").write_text(
        "from mirnet_pipeline.model import build_model\nfrom mirnet_pipeline.tasks.no_such_room import x\n")
    _, missing = unresolved_imports(tmp_path)
    assert missing == ['tests/test_probe.py:2: Import "mirnet_pipeline.tasks.no_such_room" could not be resolved']
