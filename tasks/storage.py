"""Files on local disk: written so that readers never see half of one (write
a temporary sibling, flush it to disk, then rename it over the target), and
their sha256; and the one S3 client every stage uses."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
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


# the temporary sibling of atomic_write_bytes: ".<name>.<8 random characters>.tmp"
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left under ``folder`` (call it only
    while no writer is at work there); returns what was removed."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file() and TEMPORARY.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole (readers see the old file or the new
    one), with the permissions a plain ``open`` would give it (0666 less the
    umask; the temporary file starts private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_abandoned(target: str | os.PathLike) -> list[Path]:
    """Delete what an ``atomic_directory(target)`` killed before it finished
    left beside ``target`` (its ``.<name>.<pid>-<random>.tmp`` staging folder
    or ``.<name>.<pid>.old``), when that process is gone; returns what was
    removed. A live builder's folders are left alone."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)(-[A-Za-z0-9_]+\.tmp|\.old)$")
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(1))):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Build a directory in a temporary sibling and move it into place only when
    the block succeeds: readers see the old directory or the new one, whole,
    never a half-written one. On failure the temporary sibling is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~umask())  # as mkdir would make it (mkdtemp makes it private)
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def s3_client(endpoint_url: str | None = None, region: str | None = None, max_connections: int = 10):
    """A boto3 S3 client: standard retries (8 attempts), a connection pool for
    ``max_connections`` concurrent requests, and checksums only where S3
    requires them (S3-compatible stores reject the newer default ones).
    ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points it at such a store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), region_name=region,
        config=Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=max_connections,
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )
