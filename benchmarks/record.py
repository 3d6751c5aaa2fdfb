"""A benchmark's result, kept for the docs.

``--record FILE`` (every benchmark has it) writes the run's JSON result to
FILE together with the command that produced it, the date and the machine.
The results the docs show live in ``docs/results/``; ``docs/figures.py``
renders the docs' tables from them, so each figure is stated once, where it
was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help=f"also write the result, with the command, date and machine, to FILE "
                             f"(the docs read {RESULTS.relative_to(RESULTS.parents[1])}/)")


def machine() -> dict:
    """The processor, the cores this process may use, the memory and the Keras backend."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": cores, "memory_gib": round(memory, 1),
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow")}


def command(argv: list[str]) -> str:
    """The command as the docs show it: the script and its arguments, without
    ``--record``, run by ``./pipeline run python`` in the project's environment
    (else by ``python3``), with the Keras backend where it is not TensorFlow."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--record":
            skip = True
        elif not arg.startswith("--record="):
            kept.append(arg)
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(RESULTS.parents[1])
    except ValueError:
        pass
    project = Path(sys.prefix).resolve() == (RESULTS.parents[1] / ".venv").resolve()
    words = shlex.join([*(["./pipeline", "run", "python"] if project else ["python3"]), str(script), *kept])
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return words if backend == "tensorflow" else f"KERAS_BACKEND={backend} {words}"


def record(path: Path | None, result: dict, argv: list[str] | None = None) -> None:
    """Write ``result`` with its provenance to ``path`` (nothing when it is None)."""
    if path is None:
        return
    entry = {"command": command(sys.argv[1:] if argv is None else argv), "date": date.today().isoformat(),
             "machine": machine(), "result": result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=1) + "\n")
