"""dvc.yaml can be trusted: every stage depends on every project module its
command imports (so editing one re-runs the stage), outputs are where
``tasks.artifacts`` says, and git tracks no pipeline output."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from mirnet_pipeline.tasks import artifacts

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mirnet_pipeline"


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (package -> its __init__.py)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path) -> set[str]:
    """Project modules a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules
    return {n for n in names if module_file(n) is not None}


def closure(module: str) -> set[str]:
    """Files (relative to the root) run when ``python -m <module>`` starts,
    following imports transitively, package __init__ files included."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            file = module_file(".".join(parts[:i]))
            if file is not None and file not in seen:
                seen.add(file)
                todo.extend(imported_modules(file))
    return {f.relative_to(ROOT).as_posix() for f in seen}


def stages() -> dict:
    """{name: (cmd, deps, outs)} with DVC's own templating and foreach expansion."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: (s.cmd, [d.def_path for d in s.deps], [o.def_path for o in s.outs])
                for s in repo.index.stages}


@pytest.fixture(scope="module")
def pipeline():
    return stages()


def test_every_stage_depends_on_the_modules_its_command_imports(pipeline):
    missing = {}
    for name, (cmd, deps, _) in pipeline.items():
        module = re.search(r"python -m ([\w.]+)", cmd)
        assert module, f"{name}: command {cmd!r} is not 'python -m <module>'"
        needed = closure(module.group(1))
        uncovered = sorted(f for f in needed if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"modules imported by a stage's command but not among its deps: {missing}"


def test_the_import_scan_follows_lazy_and_package_imports():
    files = closure("mirnet_pipeline.flows.evaluate")
    assert {f"mirnet_pipeline/{f}" for f in (
        "__init__.py", "flows/__init__.py", "tasks/__init__.py", "tasks/artifacts.py", "model/__init__.py",
        "model/mirnet.py", "tasks/training/trained_models.py")} <= files  # the last is imported inside a task
    assert "mirnet_pipeline/tasks/batch/job.py" not in files


def test_data_stages_do_not_import_the_model_zoo(pipeline):
    for name in ("fetch@tid2013", "fetch@lol", "index"):
        module = re.search(r"python -m ([\w.]+)", pipeline[name][0]).group(1)
        assert not any(f.startswith("mirnet_pipeline/model/") for f in closure(module)), name


def test_outputs_are_where_the_artifacts_module_says(pipeline):
    outs = {name: set(o) for name, (_, _, o) in pipeline.items()}
    for dataset in ("tid2013", "lol"):
        assert outs[f"fetch@{dataset}"] == {str(artifacts.raw_dataset(dataset))}
    assert outs["params"] == {str(artifacts.PARAMS_CHECKED)}
    assert outs["index"] == {str(artifacts.PREPARED)}
    assert outs["shards"] == {str(artifacts.SHARDS)}
    for name, paths in outs.items():
        if name.startswith("train@"):
            variant = name.removeprefix("train@")
            assert str(artifacts.model_file(variant)) in paths
            assert all(p == str(artifacts.model_file(variant)) or p.startswith(f"{artifacts.variant_reports(variant)}/")
                       for p in paths), paths
    for name, paths in outs.items():
        if name.startswith("evaluate@"):
            assert paths == {str(artifacts.variant_evaluation(name.removeprefix("evaluate@")))}
    assert all(p.startswith(f"{artifacts.EVALUATION}/") or p in (str(artifacts.COMPARISON), str(artifacts.HEADLINE))
               for p in outs["compare"])
    assert all(p.startswith(f"{artifacts.MODEL_ZOO}/") for p in outs["model_zoo"])


def test_every_stage_waits_for_the_params_check():
    """DVC deletes a stage's outputs before running it: the params check, which
    every stage runs after, stops `dvc repro` on a mistake before that."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # an edge goes from a stage to a stage it depends on
        check = next(s for s in graph if s.addressing == "params")
        late = [s.addressing for s in graph if s is not check and check not in nx.descendants(graph, s)]
        assert check.params and not late, late


def test_git_tracks_no_pipeline_output(pipeline):
    ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert ignored == [], f"tracked although .gitignore ignores them: {ignored}"
    outs = sorted({o for _, _, paths in pipeline.values() for o in paths})
    tracked = subprocess.run(["git", "ls-files", "--", *outs], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked == [], f"DVC outputs tracked by git: {tracked}"
