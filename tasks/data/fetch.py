"""Getting a dataset onto disk: download (HTTP with resume, or S3), verify,
extract safely, validate, and move into place whole.

A source is ``sample`` (the offline sample), an ``http(s)://`` URL, an
``s3://bucket/key`` URI, or a local archive or folder. Archives may be ZIP,
tar (optionally gzip/bzip2/xz compressed) or RAR (read with the UnRAR library
through ``unrar2-cffi``, installed with the project).

Checksums: an expected sha256 can be given; when none is, the first fetch of a
source records its sha256 in the checked-in lock file (``sources.lock.json``)
and later fetches verify against it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm

from tasks.storage import atomic_directory, atomic_write_json, file_sha256, s3_client

LOCK_FILE = Path("sources.lock.json")
CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A source could not be fetched; the message names the source or file."""


class _Incomplete(IOError):
    """A transfer ended early or the server failed: worth another try."""


# --- checksums and the lock file ------------------------------------------------


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def record_checksum(source: str, digest: str, path: Path = LOCK_FILE) -> None:
    lock = read_lock(path)
    lock[source] = digest
    atomic_write_json(path, lock)


def verify(path: Path, expected: str | None, source: str) -> str:
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise FetchError(
            f"checksum mismatch for {source} ({path}): expected sha256 {expected}, got {actual}"
        )
    return actual


# --- downloads ------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    attempts: int = 6,
    timeout: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Path:
    """Stream ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP
    Range request, retrying with exponential backoff, then verifying sha256.

    ``dest`` appears only when the whole file has arrived and verified."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()

    def attempt():
        offset = part.stat().st_size if part.exists() else 0
        # identity encoding: byte offsets must be offsets into the file itself
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with session.get(url, stream=True, headers=headers, timeout=timeout) as response:
            if response.status_code == 416 and offset:  # nothing left to send
                return
            if response.status_code >= 500 or response.status_code == 429:
                raise _Incomplete(f"{url}: HTTP {response.status_code}")
            if response.status_code not in (200, 206):
                raise FetchError(f"{url}: HTTP {response.status_code} {response.reason}")
            if response.status_code == 200:
                offset = 0  # the server ignored the Range header: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            mode = "ab" if offset else "wb"
            with open(part, mode) as handle, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True,
                desc=dest.name, disable=not progress, leave=False,
            ) as bar:
                try:
                    # read1 hands over whatever arrived, so an interrupted transfer
                    # keeps every byte it received and resumes right after it
                    while block := response.raw.read1(CHUNK):
                        handle.write(block)
                        bar.update(len(block))
                except Exception as exc:  # noqa: BLE001  (urllib3/http.client errors)
                    handle.flush()
                    raise _Incomplete(f"{url}: transfer interrupted ({exc})") from exc
            if total is not None and part.stat().st_size < total:
                raise _Incomplete(f"{url}: got {part.stat().st_size} of {total} bytes")

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=30),
        retry=retry_if_exception_type((_Incomplete, requests.ConnectionError, requests.Timeout)),
        reraise=True,
    )
    try:
        retrying(attempt)
    except (_Incomplete, requests.RequestException) as exc:
        raise FetchError(f"{url}: download failed after {attempts} attempts: {exc}") from exc
    try:
        verify(part, expected_sha256, url)
    except FetchError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def download_s3(uri: str, dest: Path, *, endpoint_url: str | None = None, progress: bool = True) -> Path:
    """Download ``s3://bucket/key`` with boto3 (its own retries and multipart)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise FetchError(f"{uri}: expected s3://bucket/key")
    client = s3_client(endpoint_url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        with tqdm(total=size, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False) as bar:
            client.download_file(bucket, key, str(part), Callback=bar.update)
    except Exception as exc:  # noqa: BLE001  (botocore raises many types)
        part.unlink(missing_ok=True)
        raise FetchError(f"{uri}: download failed: {exc}") from exc
    os.replace(part, dest)
    return dest


# --- safe extraction --------------------------------------------------------------


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """The relative path an archive entry may be written to; refuse absolute
    paths and anything that climbs out of the target."""
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise FetchError(f"{archive}: entry {name!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise FetchError(f"{archive}: entry {name!r} escapes the target folder; refusing to extract")
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


Entry = tuple[str, bool, Callable[[], "object"]]  # name, is_dir, opener


def _zip_entries(archive: Path) -> Iterator[Entry]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise FetchError(f"{archive}: entry {info.filename!r} is a link; refusing to extract")
            yield info.filename, info.is_dir(), (lambda i=info: zf.open(i))


def _tar_entries(archive: Path) -> Iterator[Entry]:
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.issym() or member.islnk():
                raise FetchError(f"{archive}: entry {member.name!r} is a link; refusing to extract")
            if not (member.isfile() or member.isdir()):
                raise FetchError(f"{archive}: entry {member.name!r} is not a regular file; refusing to extract")
            yield member.name, member.isdir(), (lambda m=member: tf.extractfile(m))


def _rar_entries(archive: Path) -> Iterator[Entry]:
    from unrar.cffi import rarfile

    rf = rarfile.RarFile(str(archive))
    for info in rf.infolist():
        header = info._header.headerDataEx  # UnRAR's RARHeaderDataEx
        unix_link = header.HostOS == 3 and stat.S_ISLNK(header.FileAttr)
        if header.RedirType != 0 or unix_link:  # symlink, junction, hard link or file copy
            raise FetchError(f"{archive}: entry {info.filename!r} is a link; refusing to extract")
        yield info.filename, info.is_dir(), (lambda i=info: rf.open(i))


def archive_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    raise FetchError(f"{path}: not a ZIP, tar or RAR archive")


ENTRIES = {"zip": _zip_entries, "tar": _tar_entries, "rar": _rar_entries}


def extract(archive: str | os.PathLike, target: str | os.PathLike, progress: bool = True) -> Path:
    """Extract ``archive`` into the empty folder ``target``.

    Every entry is checked before anything is written (absolute paths, ``..``
    and links are refused); a corrupt or truncated archive raises ``FetchError``
    naming it. The caller owns ``target`` and removes it on failure."""
    archive, target = Path(archive), Path(target)
    kind = archive_kind(archive)
    try:
        names = [(safe_member_path(name, archive), is_dir) for name, is_dir, _ in ENTRIES[kind](archive)]
        if not names:
            raise FetchError(f"{archive}: archive is empty")
        with tqdm(total=len(names), unit="file", desc=f"extract {archive.name}", disable=not progress, leave=False) as bar:
            for name, is_dir, opener in ENTRIES[kind](archive):
                relative = safe_member_path(name, archive)
                destination = target.joinpath(*relative.parts)
                if is_dir:
                    destination.mkdir(parents=True, exist_ok=True)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with opener() as source, open(destination, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                bar.update()
    except FetchError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, RuntimeError) as exc:
        raise FetchError(f"{archive}: corrupt or truncated {kind} archive ({exc})") from exc
    except Exception as exc:  # noqa: BLE001  (the UnRAR binding raises its own types)
        raise FetchError(f"{archive}: corrupt or truncated {kind} archive ({exc})") from exc
    return target


# --- a whole dataset ----------------------------------------------------------------


def _archive_name(source: str) -> str:
    return PurePosixPath(source.split("?")[0].rstrip("/")).name or "archive"


def obtain(source: str, downloads: Path, sha256: str | None, lock_path: Path,
           endpoint_url: str | None = None, progress: bool = True) -> Path:
    """A local file or folder for ``source``, verified against the given or
    locked checksum; a first remote fetch without one records it."""
    expected = sha256 or read_lock(lock_path).get(source)
    if source.startswith(("http://", "https://")):
        path = downloads / _archive_name(source)
        if not (path.exists() and (expected is None or file_sha256(path) == expected)):
            path.unlink(missing_ok=True)
            download(source, path, expected_sha256=expected, progress=progress)
    elif source.startswith("s3://"):
        path = download_s3(source, downloads / _archive_name(source), endpoint_url=endpoint_url, progress=progress)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FetchError(f"{source}: no such file or folder")
    if path.is_file():
        actual = verify(path, expected, source)
        if expected is None and sha256 is None:
            record_checksum(source, actual, lock_path)
    return path


def fetch_dataset(
    source: str,
    out_dir: str | os.PathLike,
    *,
    validate: Callable[[Path], Path],
    make_sample: Callable[[Path], object],
    sha256: str | None = None,
    downloads: str | os.PathLike = "data/downloads",
    lock_path: str | os.PathLike = LOCK_FILE,
    endpoint_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Put the dataset from ``source`` at ``out_dir``, validated, whole or not at all.

    The dataset is assembled in a temporary sibling of ``out_dir`` and renamed
    into place only after ``validate`` accepted it; any failure leaves
    ``out_dir`` as it was."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        if source == "sample":
            make_sample(staging / "dataset")
        else:
            local = obtain(source, Path(downloads), sha256, Path(lock_path), endpoint_url, progress)
            if local.is_dir():
                shutil.copytree(local, staging / "dataset")
            else:
                extract(local, staging / "dataset", progress=progress)
        root = validate(staging / "dataset")
        # keep only the dataset itself, at the top of out_dir
        for child in root.iterdir():
            os.replace(child, staging / child.name)
        shutil.rmtree(staging / "dataset", ignore_errors=True)
    return out_dir
