"""Files on local disk: written so that readers never see half of one (write
a temporary file, flush it to disk, then rename it over the target), and
their sha256; and the one S3 client every stage uses.

Clean-ups touch only what the project can prove it wrote: a writer given a
staging folder of its own keeps its temporaries there (the batch job's
``.enhance/tmp``), and a folder built by ``atomic_directory`` carries a mark
file until it is moved into place. Nothing is deleted because its name merely
looks like a temporary's."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting
    and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def name_limit(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _short(name: str, room: int) -> str:
    """``name`` cut to ``room`` bytes of its file-system encoding."""
    return os.fsdecode(os.fsencode(name)[: max(room, 0)])


# what mkstemp/mkdtemp add to a prefix: 8 random characters
_RANDOM = 8


def atomic_write_bytes(path: str | os.PathLike, data: bytes, staging: str | os.PathLike | None = None) -> Path:
    """Write ``data`` to ``path`` whole (readers see the old file or the new
    one), with the permissions a plain ``open`` would give it (0666 less the
    umask; the temporary file starts private). The temporary file is a hidden
    sibling, or lies in ``staging`` (a folder of the caller's own on the same
    file system) where one is given; its name never exceeds the file
    system's limit, however long ``path``'s name is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if staging is not None:
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=staging)
    else:
        prefix = f".{_short(path.name, name_limit(path.parent) - 2 - _RANDOM - 4)}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ""):
    """A temporary sibling of ``path`` (ending in ``suffix``) for a writer that
    needs a file name, such as Keras' ``model.save``; moved over ``path`` when
    the block succeeds, with the permissions a plain ``open`` would give it,
    and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{_short(path.name, name_limit(path.parent) - 2 - _RANDOM - 4 - len(suffix))}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# the mark file of a staging folder of atomic_directory (JSON: pid, target name)
STAGING_MARK = ".mirnet-pipeline-staging"


def _staging_owner(path: Path, target: Path) -> int | None:
    """The pid of the ``atomic_directory(target)`` that built ``path``, or
    None when ``path`` is not such a staging folder (no mark file, or the
    mark of another target)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return None
        mark = json.loads((path / STAGING_MARK).read_text())
        return int(mark["pid"]) if mark.get("target") == target.name else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_abandoned(target: str | os.PathLike) -> list[Path]:
    """Clear what an ``atomic_directory(target)`` killed before it finished
    left beside ``target``: its staging folders, recognised by their mark
    file and a builder that is gone. Where the kill came between moving the
    previous ``target`` aside and moving the new one in, the previous one is
    put back. A live builder's folders, and folders without the mark
    (whatever their names), are left alone; returns what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        pid = _staging_owner(path, target)
        if pid is None or _alive(pid):
            continue
        previous = path / "previous"
        if (previous.exists() or previous.is_symlink()) and not (target.exists() or target.is_symlink()):
            os.replace(previous, target)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Build a directory in a staging folder beside ``target`` and move it into
    place only when the block succeeds: readers see the old directory or the
    new one, whole, never a half-written one. The staging folder carries a
    mark file (``STAGING_MARK``), so a later run can tell it from the user's
    folders; on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    prefix = f".{_short(target.name, name_limit(target.parent) - 2 - 12 - _RANDOM - 4)}.{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    try:
        (staging / STAGING_MARK).write_text(json.dumps({"pid": os.getpid(), "target": target.name}))
        content = staging / "content"
        content.mkdir()  # with the permissions the umask gives (the staging folder itself is private)
        yield content
        if target.exists() or target.is_symlink():
            os.replace(target, staging / "previous")
        os.replace(content, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def s3_client(endpoint_url: str | None = None, region: str | None = None, max_connections: int = 10,
              max_attempts: int = 8, connect_timeout: float = 60):
    """A boto3 S3 client: standard retries (``max_attempts``), a connection
    pool for ``max_connections`` concurrent requests, and checksums only where
    S3 requires them (S3-compatible stores reject the newer default ones).
    ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points it at such a store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), region_name=region,
        config=Config(retries={"mode": "standard", "max_attempts": max_attempts}, max_pool_connections=max_connections,
                      connect_timeout=connect_timeout, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )
