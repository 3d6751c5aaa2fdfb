"""Getting a dataset onto disk: download (HTTP with resume, or S3), verify,
extract safely, validate, and move into place whole.

A source is ``sample`` (the offline sample), an ``http(s)://`` URL, an
``s3://bucket/key`` URI, or a local archive or folder. Archives may be ZIP,
tar (optionally gzip/bzip2/xz compressed) or RAR (read with the UnRAR library
through ``unrar2-cffi``, installed with the project).

Checksums: an expected sha256 can be given; when none is, the first fetch of a
source records its sha256 in the checked-in lock file (``sources.lock.json``)
once the archive has been extracted and its layout validated (a truncated
download is never locked in), and later fetches verify against it.

Downloads resume with HTTP Range requests and keep going, within one run, as
long as each attempt brings more bytes; they give up after ``attempts`` tries
in a row that bring none. Extraction is bounded while it runs: at most
``MAX_EXTRACTED_BYTES`` in all and ``MAX_RATIO`` times the archive's size (a
small archive that inflates to gigabytes is refused before it fills the disk),
and two entries whose paths differ only in case are refused (on a
case-insensitive file system one would replace the other).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import requests
from tenacity import Retrying, retry_if_exception_type, wait_exponential
from tqdm.auto import tqdm

from mirnet_pipeline.tasks.storage import atomic_directory, atomic_write_json, file_sha256, s3_client

LOCK_FILE = Path("sources.lock.json")
CHUNK = 1 << 20
MAX_EXTRACTED_BYTES = 64 << 30  # 64 GiB: TID2013 extracts to about 1 GiB
MAX_RATIO = 200  # extracted bytes per archive byte; images compress a few times, not hundreds


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
    Range request, then verifying sha256. Failed attempts are retried with
    exponential backoff as long as they make progress: the download gives up
    after ``attempts`` tries in a row that brought no new byte.

    ``dest`` appears only when the whole file has arrived and verified."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    stalled = {"tries": 0, "size": -1}  # tries in a row without new bytes, and the size before the last

    def attempt():
        offset = part.stat().st_size if part.exists() else 0
        stalled["tries"] = stalled["tries"] + 1 if offset <= stalled["size"] else 1
        stalled["size"] = offset
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

    def no_progress(_state) -> bool:
        stalled["grew"] = (part.stat().st_size if part.exists() else 0) > stalled["size"]
        return not stalled["grew"] and stalled["tries"] >= attempts

    backoff = wait_exponential(multiplier=0.5, max=30)

    def pause(state) -> float:
        """At once after an attempt that brought bytes, else backing off."""
        return 0.0 if stalled.get("grew") else backoff(state)

    retrying = Retrying(
        stop=no_progress,
        wait=pause,
        retry=retry_if_exception_type((_Incomplete, requests.ConnectionError, requests.Timeout)),
        reraise=True,
    )
    try:
        retrying(attempt)
    except (_Incomplete, requests.RequestException) as exc:
        raise FetchError(f"{url}: download failed, {attempts} attempts in a row brought no new bytes: {exc}") from exc
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


def _check_names(names: list[tuple[PurePosixPath, bool]], archive: Path) -> None:
    """Refuse two file entries whose paths differ only in case."""
    seen: dict[str, PurePosixPath] = {}
    for name, is_dir in names:
        if is_dir:
            continue
        other = seen.setdefault(str(name).casefold(), name)
        if other != name:
            raise FetchError(f"{archive}: entries {str(other)!r} and {str(name)!r} differ only in case; "
                             "refusing to extract (one would replace the other on many file systems)")


def _copy_bounded(source, out, budget: dict, archive: Path) -> None:
    """Copy an entry, stopping as soon as the archive's extracted total passes its limit."""
    while block := source.read(CHUNK):
        budget["written"] += len(block)
        if budget["written"] > budget["limit"]:
            raise FetchError(f"{archive}: extracts to more than {budget['limit']:,} bytes "
                             f"({budget['why']}); refusing to extract (a compression bomb?)")
        out.write(block)


def extract(archive: str | os.PathLike, target: str | os.PathLike, progress: bool = True, *,
            max_bytes: int = MAX_EXTRACTED_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract ``archive`` into the empty folder ``target``.

    Every entry is checked before anything is written (absolute paths, ``..``,
    links and names that differ only in case are refused); while writing, the
    extracted total is held under ``max_bytes`` and ``max_ratio`` times the
    archive's size. A corrupt or truncated archive raises ``FetchError``
    naming it. The caller owns ``target`` and removes it on failure."""
    archive, target = Path(archive), Path(target)
    kind = archive_kind(archive)
    by_ratio = int(max_ratio * archive.stat().st_size)
    budget = {"written": 0, "limit": min(max_bytes, by_ratio),
              "why": f"{max_ratio:g} times the archive's size" if by_ratio < max_bytes else "the size limit"}
    try:
        names = [(safe_member_path(name, archive), is_dir) for name, is_dir, _ in ENTRIES[kind](archive)]
        if not names:
            raise FetchError(f"{archive}: archive is empty")
        _check_names(names, archive)
        with tqdm(total=len(names), unit="file", desc=f"extract {archive.name}", disable=not progress,
                  leave=False) as bar:
            for name, is_dir, opener in ENTRIES[kind](archive):
                relative = safe_member_path(name, archive)
                destination = target.joinpath(*relative.parts)
                if is_dir:
                    destination.mkdir(parents=True, exist_ok=True)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with opener() as source, open(destination, "wb") as out:
                        _copy_bounded(source, out, budget, archive)
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


REMOTE = ("http://", "https://", "s3://")


def obtain(source: str, downloads: Path, sha256: str | None, lock_path: Path,
           endpoint_url: str | None = None, progress: bool = True) -> tuple[Path, str | None]:
    """A local file or folder for ``source``, verified against the given or
    locked checksum, and the sha256 to lock in once the dataset has proved
    whole (None when a checksum was given or is locked already)."""
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
    to_lock = None
    if path.is_file():
        actual = verify(path, expected, source)
        if expected is None:
            to_lock = actual
    return path, to_lock


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
    to_lock = None
    with atomic_directory(out_dir) as staging:
        if source == "sample":
            make_sample(staging / "dataset")
        else:
            local, to_lock = obtain(source, Path(downloads), sha256, Path(lock_path), endpoint_url, progress)
            if local.is_dir():
                shutil.copytree(local, staging / "dataset")
            else:
                try:
                    extract(local, staging / "dataset", progress=progress)
                except FetchError:
                    if to_lock is not None and source.startswith(REMOTE):
                        local.unlink(missing_ok=True)  # unverified and broken: download it again next time
                    raise
        root = validate(staging / "dataset")
        if to_lock is not None:  # the archive is whole: it extracted and its layout is valid
            record_checksum(source, to_lock, Path(lock_path))
        # keep only the dataset itself, at the top of out_dir
        for child in root.iterdir():
            os.replace(child, staging / child.name)
        shutil.rmtree(staging / "dataset", ignore_errors=True)
    return out_dir
