"""Object stores for batch enhancement: a local folder or ``s3://bucket/prefix``
behind one small interface (list, read, read the first bytes, write whole,
exists). Keys are ``/``-separated paths relative to the root; a key that is
absolute or contains ``..`` (with ``/`` or ``\\`` as separator) is refused,
so nothing is ever written outside the destination."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mirnet_pipeline.tasks.storage import atomic_write_bytes, s3_client


BODY_ATTEMPTS = 6  # reads of an object whose body breaks off


class UnsafeKey(ValueError):
    """A key that would escape the store's root."""


def check_key(key: str) -> str:
    """``key`` if it stays inside the store's root read either way: as a POSIX
    path, and with backslashes as separators (as Windows tools would). Any
    other character, a backslash inside a name included, is fine."""
    as_windows = key.replace("\\", "/")
    drive = os.name == "nt" and re.match(r"^[A-Za-z]:", key)  # "C:x" would leave the root there
    if (not key or key.startswith("/") or as_windows.startswith("/") or drive
            or ".." in PurePosixPath(key).parts or ".." in PurePosixPath(as_windows).parts):
        raise UnsafeKey(f"unsafe key {key!r}: absolute, empty or containing '..'")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str  # ETag on S3, size and modification time locally


def selected(key: str, include: list[str], exclude: list[str]) -> bool:
    name_ok = not include or any(fnmatch.fnmatch(key, p) for p in include)
    return name_ok and not any(fnmatch.fnmatch(key, p) for p in exclude)


class LocalStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(self.root)

    def list(self, include=(), exclude=()) -> list[ObjectInfo]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder")
        out = []
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.root).parts):
                key = path.relative_to(self.root).as_posix()
                if selected(key, list(include), list(exclude)):
                    stat = path.stat()
                    out.append(ObjectInfo(key, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}"))
        return out

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_head(self, key: str, length: int) -> bytes:
        """The first ``length`` bytes (fewer when the file is shorter)."""
        with open(self.root / key, "rb") as handle:
            return handle.read(length)

    def write(self, key: str, data: bytes, metadata: dict | None = None) -> None:
        atomic_write_bytes(self.root / check_key(key), data)

    def exists(self, key: str) -> bool:
        return (self.root / check_key(key)).is_file()


class S3Store:
    """``s3://bucket/prefix`` through the pipeline's S3 client
    (``tasks.storage.s3_client``, its pool sized to the concurrency):
    paginated listing, whole-object puts (an object appears complete or not
    at all)."""

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None,
                 max_connections: int = 16):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri}: expected s3://bucket/prefix")
        self.uri, self.bucket, self.prefix = uri, bucket, prefix.strip("/")
        self.client = s3_client(endpoint_url, region, max_connections)

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, include=(), exclude=()) -> list[ObjectInfo]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"][len(start):]
                if key and not key.endswith("/") and selected(key, list(include), list(exclude)):
                    out.append(ObjectInfo(key, int(item["Size"]), item["ETag"].strip('"')))
        return out

    def _get(self, key: str, **options) -> bytes:
        """The body of a GET. botocore retries a failed request (5xx,
        throttling, a refused connection) but not a body cut off half-way;
        such a read starts again here, with backoff."""
        from botocore.exceptions import (ConnectionClosedError, IncompleteReadError, ReadTimeoutError,
                                         ResponseStreamingError)
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        retrying = Retrying(stop=stop_after_attempt(BODY_ATTEMPTS), wait=wait_exponential(multiplier=0.2, max=10),
                            retry=retry_if_exception_type((ResponseStreamingError, IncompleteReadError,
                                                           ReadTimeoutError, ConnectionClosedError)),
                            reraise=True)
        for attempt in retrying:
            with attempt:
                return self.client.get_object(Bucket=self.bucket, Key=self._full(key), **options)["Body"].read()

    def read(self, key: str) -> bytes:
        return self._get(key)

    def read_head(self, key: str, length: int) -> bytes:
        """The first ``length`` bytes (a ranged GET)."""
        return self._get(key, Range=f"bytes=0-{length - 1}") if length > 0 else b""

    def write(self, key: str, data: bytes, metadata: dict | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._full(check_key(key)), Body=data,
                               Metadata=metadata or {})

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(check_key(key)))
            return True
        except ClientError:
            return False


def open_store(uri: str, endpoint_url: str | None = None, region: str | None = None, max_connections: int = 16):
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url, region, max_connections)
    return LocalStore(uri)
