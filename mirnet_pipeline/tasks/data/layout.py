"""Shared checks for dataset folders: case-insensitive file lookup, and image
files that exist, are not empty and have the expected size."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mirnet_pipeline.tasks.errors import UsageError


class LayoutError(UsageError):
    """A dataset folder is not laid out as expected; the message lists what is wrong."""


def index_folder(folder: Path) -> dict[str, Path]:
    """Files directly inside ``folder`` keyed by lower-case name ({} if missing)."""
    if not folder.is_dir():
        return {}
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file()}


def find_child(folder: Path, name: str) -> Path | None:
    """The entry of ``folder`` called ``name``, ignoring case."""
    if not folder.is_dir():
        return None
    for p in folder.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None


def find_dataset_root(folder: Path, marker: str) -> Path:
    """``folder`` itself or the single sub-folder chain below it that contains
    ``marker`` (archives often wrap a dataset in one top-level folder)."""
    current = folder
    for _ in range(3):
        if find_child(current, marker) is not None:
            return current
        children = [p for p in current.iterdir() if not p.name.startswith(".")]
        if len(children) != 1 or not children[0].is_dir():
            break
        current = children[0]
    return folder


def check_images(paths: list[Path], size: tuple[int, int] | None) -> list[str]:
    """Problems with image files: empty, unreadable, or not ``size`` (width, height)."""
    problems = []
    for path in paths:
        if os.path.getsize(path) == 0:
            problems.append(f"{path}: empty file (0 bytes)")
            continue
        try:
            with Image.open(path) as image:
                actual = image.size
        except (UnidentifiedImageError, OSError) as exc:
            problems.append(f"{path}: not a readable image ({exc})")
            continue
        if size is not None and actual != size:
            problems.append(f"{path}: size {actual[0]}x{actual[1]}, expected {size[0]}x{size[1]}")
    return problems


def raise_if(problems: list[str], what: str, limit: int = 20) -> None:
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise LayoutError(f"{what}: {len(problems)} problem(s)\n  {shown}{more}")
