"""Every third-party module the project imports is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"model", "tasks", "flows", "tests", *(p.stem for p in (ROOT / "benchmarks").glob("*.py"))}
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
    assert undeclared(["model", "tasks", "flows"], declared("cpu", "gpu", "dask")) == {}


def test_benchmarks_and_tests_import_only_declared_dependencies():
    assert undeclared(["benchmarks", "tests"], declared("cpu", "gpu", "dask", "test")) == {}


def test_the_check_finds_an_undeclared_import():
    assert imported("model").keys() == {"keras", "numpy"}
    # flows/ imports prefect_dask, which only the dask extra declares
    assert undeclared(["flows"], declared("cpu")) == {"prefect_dask": "flows/enhance.py"}


def test_plain_pip_resolves_the_cpu_install_without_backtracking(tmp_path):
    """`pip install '.[cpu]'` as many users run it, resolved against the package
    index without installing (--dry-run). It must succeed without backtracking
    through many releases of a package: the resolution that took 20 minutes
    fetched 65 aiobotocore releases, before boto3 and botocore were bounded to
    what aiobotocore allows (now about a minute, a few packages fetched twice or,
    databricks-sdk under mlflow, 7 times). Needs the package index."""
    import json
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
