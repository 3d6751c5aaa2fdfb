"""One job per destination, on one machine or many.

The claim protects the destination itself, wherever the resume ledger lives
(``--state-dir``):

- a local folder: an operating-system lock on ``DESTINATION/.enhance/job.lock``,
  released by the kernel when the holder dies (and held across machines where
  the file system shares locks, as NFSv4 does);
- an S3 prefix: a lease object, ``PREFIX/.enhance/lease.json``, kept with what
  S3 itself guarantees: it is created only where none exists
  (``If-None-Match: *``), and renewed, taken over or deleted only while it is
  the version its holder last wrote (``If-Match: <ETag>``). It names its holder
  and lapses ``lease_seconds`` after its last renewal, by the S3 server's
  clock; a holder renews it every third of that, and a killed job's successor
  takes it over once it has lapsed.

The destination's ``.enhance`` folder is the job's own: a local job keeps its
temporaries in ``.enhance/tmp`` and empties it, and only it, when it starts.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from mirnet_pipeline.tasks.errors import UsageError

OWN_FOLDER = ".enhance"  # the job's own folder in the destination
LEASE = f"{OWN_FOLDER}/lease.json"
CONFLICTS = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class DestinationBusy(RuntimeError):
    """Another job holds the destination."""


class DestinationUnusable(UsageError):
    """The destination cannot hold the job's own folder (a link, a read-only file system)."""


def staging_folder(destination: str) -> Path | None:
    """Where a local job keeps its temporaries: ``DESTINATION/.enhance/tmp``."""
    return None if destination.startswith("s3://") else Path(destination) / OWN_FOLDER / "tmp"


def own_folder(destination: str) -> Path:
    """``DESTINATION/.enhance`` with its ``tmp``, made if missing; refused when
    either is a link or cannot be made."""
    folder = Path(destination) / OWN_FOLDER
    for path in (folder, folder / "tmp"):
        if path.is_symlink():
            raise DestinationUnusable(f"{path} is a symbolic link: the job keeps its own files there and "
                                      "does not follow links; remove the link")
    try:
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationUnusable(f"destination {destination}: cannot write there ({exc.strerror}); "
                                  "nothing was written") from None
    return folder


@contextlib.contextmanager
def local_claim(destination: str):
    """Hold a local destination: its lock, then its staging folder emptied."""
    folder = own_folder(destination)
    path = folder / "job.lock"
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DestinationBusy(f"{destination}: another enhancement job is writing there (it holds {path})") from None
    except OSError as exc:
        raise DestinationUnusable(f"destination {destination}: cannot write there ({exc.strerror}); "
                                  "nothing was written") from None
    try:
        staging = folder / "tmp"
        shutil.rmtree(staging, ignore_errors=True)  # a killed job's temporaries: the folder is the job's own
        staging.mkdir(exist_ok=True)
        yield
    finally:
        lock.release()


def _code(exc) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code", ""))


class S3Lease:
    """The lease on an S3 destination (see the module's text)."""

    def __init__(self, client, bucket: str, key: str, seconds: float, on_lost=None):
        self.client, self.bucket, self.key, self.seconds = client, bucket, key, seconds
        self.on_lost = on_lost
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "seconds": self.seconds}).encode()

    def _put(self, **condition) -> str:
        return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                      ContentType="application/json", **condition)["ETag"]

    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.etag = self._put(IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in CONFLICTS:
                raise
            self._take_over()
        self._thread = threading.Thread(target=self._renew, name="enhance-lease", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        """Take the lease over if it has lapsed (else ``DestinationBusy``)."""
        from botocore.exceptions import ClientError

        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):  # released meanwhile
                self.etag = self._put(IfNoneMatch="*")
                return
            raise
        try:
            holder = json.loads(found["Body"].read())
            lapse = float(holder.get("seconds", self.seconds))
        except (ValueError, AttributeError, TypeError):
            holder, lapse = {}, self.seconds
        server_now = email.utils.parsedate_to_datetime(found["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - found["LastModified"]).total_seconds()
        if age < lapse:
            raise DestinationBusy(
                f"s3://{self.bucket}/{self.key.rpartition(LEASE)[0]}: another enhancement job is writing there "
                f"(host {holder.get('host', '?')}, pid {holder.get('pid', '?')}; its lease {self.uri} lapses "
                f"in {lapse - age:.0f} s unless renewed)")
        try:
            self.etag = self._put(IfMatch=found["ETag"])
        except ClientError as exc:
            if _code(exc) in CONFLICTS:
                raise DestinationBusy(f"{self.uri}: another job took the lapsed lease over just now") from None
            raise

    def _renew(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        renewed = time.monotonic()
        while not self._stopped.wait(self.seconds / 3):
            try:
                self.etag = self._put(IfMatch=self.etag)
                renewed = time.monotonic()
            except ClientError as exc:
                if _code(exc) in CONFLICTS + ("NoSuchKey", "404"):
                    return self._lost("another job took it over")
            except BotoCoreError:
                pass  # the store is unreachable for now: the lease holds until it lapses
            if time.monotonic() - renewed > self.seconds:
                return self._lost(f"it could not be renewed for {self.seconds:.0f} s")

    def _lost(self, why: str) -> None:
        self.etag = None
        if self.on_lost is not None:
            self.on_lost(f"lost the lease on the destination ({self.uri}): {why}")

    def release(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is not None:
            with contextlib.suppress(ClientError, BotoCoreError):  # lapsed or taken over: not ours to delete
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)


@contextlib.contextmanager
def s3_claim(destination: str, endpoint_url, region, seconds: float, on_lost=None):
    from mirnet_pipeline.tasks.batch.stores import S3Store

    store = S3Store(destination, endpoint_url, region)
    lease = S3Lease(store.client, store.bucket, store._full(LEASE), seconds, on_lost)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def claim_destination(job, on_lost=None):
    """Hold ``job``'s destination for the block: ``DestinationBusy`` when
    another job holds it; ``on_lost(reason)`` if an S3 lease is lost meanwhile."""
    if job.destination.startswith("s3://"):
        with s3_claim(job.destination, job.endpoint_url, job.region, job.lease_seconds, on_lost):
            yield
    else:
        with local_claim(job.destination):
            yield
