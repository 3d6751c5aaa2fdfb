"""Object stores for batch enhancement: a local folder or ``s3://bucket/prefix``
behind one small interface (list, or scan as the listing comes, read, read the first bytes, write whole,
exists, move, delete). Keys are ``/``-separated paths relative to the root; a key
that is absolute or contains ``..`` (with ``/`` or ``\\`` as separator) is
refused, and so is a local key whose way down from the root passes a symbolic
link, so nothing is ever written outside the destination. Include and exclude
globs match in any case (``*.jpg`` takes ``photo.Jpg``). S3 metadata values
are ASCII, as S3 requires: other characters are percent-encoded."""

from __future__ import annotations

import fnmatch
import os
import re
import urllib.parse
from collections.abc import Iterator
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
    """Whether ``key`` matches an include glob (or there are none) and no exclude glob, in any case."""
    folded = key.casefold()
    name_ok = not include or any(fnmatch.fnmatchcase(folded, p.casefold()) for p in include)
    return name_ok and not any(fnmatch.fnmatchcase(folded, p.casefold()) for p in exclude)


# printable ASCII that S3 keeps as it is in a metadata value ('%' is the escape)
_METADATA_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


def metadata_value(value: str) -> str:
    """``value`` as S3 metadata can hold it: ASCII, anything else (and '%')
    percent-encoded as UTF-8; ``urllib.parse.unquote`` gives it back."""
    return urllib.parse.quote(value, safe=_METADATA_SAFE)


class LocalStore:
    """A folder. ``staging``: a folder of the writer's own (on the same file
    system) where temporaries are kept until they are renamed into place."""

    def __init__(self, root: str | os.PathLike, staging: str | os.PathLike | None = None):
        self.root = Path(root)
        self.uri = str(self.root)
        self.staging = Path(staging) if staging is not None else None

    def _path(self, key: str) -> Path:
        """The path of ``key``; ``UnsafeKey`` naming the link when a folder on
        the way down from the root, or the file itself, is a symbolic link."""
        path = self.root
        for part in PurePosixPath(check_key(key)).parts:
            path = path / part
            if path.is_symlink():
                raise UnsafeKey(f"{path} is a symbolic link (to {os.readlink(path)}): "
                                "nothing is written through links")
        return path

    def list(self, include=(), exclude=()) -> list[ObjectInfo]:
        return list(self.scan(include, exclude))

    def scan(self, include=(), exclude=()) -> Iterator[ObjectInfo]:
        """The files in key order, folder by folder as they are read (hidden
        names and links to folders left out), so a caller can start on the
        first before the last is listed."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder")
        return self._scan(self.root, "", list(include), list(exclude))

    def _scan(self, folder: Path, prefix: str, include: list[str], exclude: list[str]) -> Iterator[ObjectInfo]:
        with os.scandir(folder) as entries:
            # a folder sorts as its name with a slash: the order of the keys as a whole
            names = sorted((entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
                           for entry in entries if not entry.name.startswith("."))
        for name, entry in names:
            if name.endswith("/"):
                yield from self._scan(Path(entry.path), prefix + name, include, exclude)
            elif entry.is_file() and selected(prefix + name, include, exclude):
                stat = entry.stat()
                yield ObjectInfo(prefix + name, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}")

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_head(self, key: str, length: int) -> bytes:
        """The first ``length`` bytes (fewer when the file is shorter)."""
        with open(self.root / key, "rb") as handle:
            return handle.read(length)

    def write(self, key: str, data: bytes, metadata: dict | None = None) -> None:
        atomic_write_bytes(self._path(key), data, self._staging())

    def _staging(self) -> Path | None:
        """The staging folder, made on first use (not through a link, when it is inside the root)."""
        if self.staging is not None and not self.staging.is_dir():
            inside = self.staging.is_relative_to(self.root)
            (self._path(self.staging.relative_to(self.root).as_posix()) if inside else self.staging).mkdir(
                parents=True, exist_ok=True)
        return self.staging

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except UnsafeKey:
            return False

    def move(self, key: str, new_key: str) -> None:
        target = self._path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(key), target)

    def delete(self, key: str) -> None:
        """Remove ``key`` (gone already is fine); never through a link."""
        self._path(key).unlink(missing_ok=True)


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
        return list(self.scan(include, exclude))

    def scan(self, include=(), exclude=()) -> Iterator[ObjectInfo]:
        """The objects in key order (S3's), page by page as they are listed."""
        paginator = self.client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        include, exclude = list(include), list(exclude)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"][len(start):]
                if key and not key.endswith("/") and selected(key, include, exclude):
                    yield ObjectInfo(key, int(item["Size"]), item["ETag"].strip('"'))

    def _get(self, key: str, **options) -> bytes:
        """The body of a GET. botocore retries a failed request (5xx,
        throttling, a refused connection) but not a body cut off half-way;
        such a read starts again here, with backoff."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
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
                               Metadata={k: metadata_value(str(v)) for k, v in (metadata or {}).items()})

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(check_key(key)))
            return True
        except ClientError:
            return False

    def move(self, key: str, new_key: str) -> None:
        self.client.copy_object(Bucket=self.bucket, Key=self._full(check_key(new_key)),
                                CopySource={"Bucket": self.bucket, "Key": self._full(check_key(key))})
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(check_key(key)))


def check_reachable(uri: str, endpoint_url: str | None = None, region: str | None = None) -> None:
    """The bucket of ``uri`` answers with the credentials at hand; otherwise
    ``ValueError`` saying in one line what is wrong (no credentials, the
    endpoint unreachable, no such bucket, access denied). Asked twice at most,
    so a wrong endpoint costs seconds, not the minutes of the job's retries."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from mirnet_pipeline.tasks.credentials import S3_CREDENTIALS

    bucket = uri.removeprefix("s3://").partition("/")[0]
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    try:
        s3_client(endpoint_url, region, max_attempts=2, connect_timeout=10).head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise ValueError(f"{uri}: no S3 credentials were found (set {S3_CREDENTIALS})") from None
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            raise ValueError(f"{uri}: there is no bucket {bucket!r} at {endpoint}") from None
        if status == 403:
            raise ValueError(f"{uri}: access to bucket {bucket!r} at {endpoint} is denied with these "
                             "credentials") from None
        code = exc.response.get("Error", {}).get("Code", "")
        raise ValueError(f"{uri}: {endpoint} answered {status} {code}") from None
    except BotoCoreError as exc:  # unreachable endpoint, timeouts, a malformed URL
        raise ValueError(f"{uri}: cannot reach {endpoint} ({exc})") from None


def open_store(uri: str, endpoint_url: str | None = None, region: str | None = None, max_connections: int = 16,
               staging: str | os.PathLike | None = None):
    """The store at ``uri``; ``staging`` (local folders only): where its writes keep their temporaries."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url, region, max_connections)
    return LocalStore(uri, staging)
