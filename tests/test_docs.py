"""The documentation: the site builds offline without a broken link, the
README stays a front door, every figure is what its source gives, and every
shell block says what it needs; those that need nothing run here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTE = re.compile(r"^<!-- commands: (.+?) -->$")
RUN_HERE = "run by tests/test_docs.py"


def mkdocs_build(folder: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=folder,
                          capture_output=True, text=True, timeout=600, env=env)


def test_the_site_builds_offline_with_every_page_and_link(tmp_path):
    done = mkdocs_build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-4000:]
    pages = {p.stem for p in (tmp_path / "site").glob("*.html")}
    assert {p.stem for p in (ROOT / "docs").glob("*.md")} <= pages
    assert not re.search(r"https?://fonts\.(googleapis|gstatic)", (tmp_path / "site" / "index.html").read_text())


def test_a_broken_link_fails_the_build(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("results", "*.py"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    page = tmp_path / "docs" / "batch.md"
    page.write_text(page.read_text() + "\nSee [the old page](no-such-page.md).\n")
    done = mkdocs_build(tmp_path, tmp_path / "site")
    assert done.returncode == 1 and "no-such-page.md" in done.stderr, done.stderr[-3000:]


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in re.findall(r"\]\((docs/[\w.]+\.md)\)", readme):
        assert (ROOT / page).is_file(), page
    assert "./pipeline demo" in readme and "./pipeline test" in readme


def test_every_rendered_figure_is_what_its_source_gives():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "figures.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def shell_blocks(document: Path) -> list[tuple[int, str | None, list[str]]]:
    """(line, the ``commands:`` note before it or None, its commands with
    continuation lines joined and comments dropped) of every bash block."""
    lines = document.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh"):
            start = i
            note = next((NOTE.match(lines[j].strip()) for j in range(i - 1, -1, -1) if lines[j].strip()), None)
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            text = "\n".join(body).replace("\\\n", " ")
            commands = [c.split(" # ")[0].strip() for c in text.splitlines()]
            found.append((start + 1, note.group(1) if note else None, [c for c in commands if c and c[0] != "#"]))
        i += 1
    return found


BLOCKS = [(document, line, note, commands) for document in DOCUMENTS
          for line, note, commands in shell_blocks(document)]


def test_every_shell_block_says_what_it_needs():
    assert len(BLOCKS) >= 8
    missing = [f"{document.relative_to(ROOT)}:{line}" for document, line, note, _ in BLOCKS if note is None]
    assert missing == [], "a shell block without a <!-- commands: ... --> note saying what it needs"
    for document, line, note, _ in BLOCKS:  # a note that names a test names one that exists
        for test in re.findall(r"tests/[\w/]+\.py", note):
            assert (ROOT / test).is_file(), f"{document.relative_to(ROOT)}:{line}: {test}"


@pytest.mark.parametrize("document, line, commands", [(d, line, c) for d, line, note, c in BLOCKS if note == RUN_HERE],
                         ids=lambda value: f"{value.name}" if isinstance(value, Path) else str(value))
def test_the_commands_that_need_nothing_run_as_written(document, line, commands, tmp_path):
    env = {**os.environ, "PIPELINE_VENV": sys.prefix}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and done.stdout.strip(), f"{command}\n{done.stderr[-3000:]}"
