"""model/ stays Keras-only, so the same code runs under TensorFlow, JAX and PyTorch."""

from __future__ import annotations

import ast
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "model"
FORBIDDEN = {"tensorflow", "jax", "torch", "prefect", "mlflow", "boto3", "PIL", "dvc"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_model_code_imports_no_backend_and_no_io_library():
    files = sorted(MODEL.glob("*.py"))
    assert len(files) >= 8
    offenders = {f.name: imported_roots(f) & FORBIDDEN for f in files}
    assert {name: found for name, found in offenders.items() if found} == {}
