"""Packaging: every third-party module the project imports is a declared
dependency, plain pip resolves the install, and the wheel claims one name."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"mirnet_pipeline", "tests", "benchmarks"}
# the other Keras backends: imported only where KERAS_BACKEND names them
# (tasks/training/fit.py, benchmarks), installed by whoever chooses them
OPTIONAL_BACKENDS = {"jax", "torch"}


def imported(folder: str) -> dict[str, str]:
    """{top-level third-party module: a file importing it} under ``folder``."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root not in sys.stdlib_module_names and root not in PROJECT:
                    found.setdefault(root, str(path.relative_to(ROOT)))
    return found


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def undeclared(folders, allowed: set[str]) -> dict[str, str]:
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for folder in folders:
        for module, where in imported(folder).items():
            if module in OPTIONAL_BACKENDS:
                continue
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & allowed:
                missing[module] = where
    return missing


def test_the_package_imports_only_declared_dependencies():
    # TensorFlow comes from the cpu or gpu extra, Dask from the dask extra
    assert undeclared(["mirnet_pipeline"], declared("cpu", "gpu", "dask")) == {}


def test_benchmarks_and_tests_import_only_declared_dependencies():
    assert undeclared(["benchmarks", "tests"], declared("cpu", "gpu", "dask", "test")) == {}


def test_the_check_finds_an_undeclared_import():
    assert imported("mirnet_pipeline/model").keys() == {"keras", "numpy"}
    # the flows import prefect_dask, which only the dask extra declares
    assert undeclared(["mirnet_pipeline/flows"], declared("cpu")) == {
        "prefect_dask": "mirnet_pipeline/flows/enhance.py"}


def test_plain_pip_resolves_the_cpu_install_without_backtracking(tmp_path):
    """`pip install '.[cpu]'` as many users run it, resolved against the package
    index without installing (--dry-run). It must succeed without backtracking
    through many releases of a package: the resolution that took 20 minutes
    fetched 65 aiobotocore releases, before boto3 and botocore were bounded to
    what aiobotocore allows (now about a minute, a few packages fetched twice or,
    databricks-sdk under mlflow, 7 times). Needs the package index."""
    import re
    import subprocess
    from collections import defaultdict

    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                           "--disable-pip-version-check", "--report", str(report), f"{ROOT}[cpu]"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    fetched = defaultdict(set)  # package: the versions pip downloaded or read while resolving
    for name, version in re.findall(r"(?:Downloading|Processing) \S*?([A-Za-z0-9_.]+?)-(\d[^-/\s]*?)(?:-py|-cp|\.tar)",
                                    done.stdout):
        fetched[canonicalize_name(name)].add(version)
    tried = max(fetched.items(), key=lambda item: len(item[1]))
    assert len(fetched) > 100 and len(tried[1]) <= 10, tried
    chosen = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert {"tensorflow-cpu", "keras", "prefect", "dvc-s3", "mlflow", "boto3", "aiobotocore"} <= set(chosen)


def test_the_wheel_installs_one_package_and_no_generic_top_level_names(tmp_path):
    """The wheel holds the package mirnet_pipeline (every module of it) and
    nothing else at its top level, not the top-level links model/, tasks/ and
    flows/; installed into a folder of its own, it imports from there."""
    import shutil
    import subprocess
    import zipfile

    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "mirnet_pipeline", source / "mirnet_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("model", "tasks", "flows"):  # the links, as a checkout has them
        (source / folder).symlink_to(os.readlink(ROOT / folder))
    built = subprocess.run([sys.executable, "-c", "import setuptools.build_meta as b, sys; "
                            "print(b.build_wheel(sys.argv[1]))", str(tmp_path / "dist")],
                           cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = tmp_path / "dist" / built.stdout.split()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"mirnet_pipeline"}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mirnet_pipeline").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == modules
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mirnet-enhance = mirnet_pipeline.flows.commands.enhance:main" in scripts

    target = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:  # what pip install --target does with a pure wheel
        archive.extractall(target)
    code = ("import importlib.util, json, mirnet_pipeline.tasks.config as c; "
            "print(json.dumps([c.__file__, [n for n in ('model', 'tasks', 'flows') if importlib.util.find_spec(n)],"
            " sorted(c.declared_architectures())]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    imported = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    file, generic, architectures = json.loads(imported.stdout)
    assert file == str(target / "mirnet_pipeline" / "tasks" / "config.py")
    assert generic == [] and architectures == ["cnn", "mirnet", "mirnet_v2"]
