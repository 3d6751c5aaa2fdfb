"""Which keys the job processes, read as the listing comes.

The source is listed page by page (S3) or folder by folder (a local source),
in key order either way, and consumed as it comes: chunks are cut and
submitted while the listing goes on. Nothing is overwritten that the job did
not write itself: every key gets its own output key, and a key whose output
would be another's (``x.png`` and ``x.PNG``, ``a.jpg`` and ``a.jpeg``,
``dir//a.png`` and ``dir/a.png``, far apart in the listing) gets an error row
naming the key that keeps the output (the first in key order). The planner
remembers a 128-bit hash of each output key, not the key, so its memory is a
small fixed cost a key. A destination equal to the source, or holding it, is
refused; a destination inside the source is left out of the listing.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from mirnet_pipeline.tasks.batch.job import STATUS_ERROR, EnhanceJob, key_text, output_of
from mirnet_pipeline.tasks.batch.stores import ObjectInfo, open_store
from mirnet_pipeline.tasks.errors import UsageError


class OverlappingLocations(UsageError):
    """Source and destination where outputs would overwrite or mix with the originals."""


def _location(uri: str) -> tuple[str, str]:
    """(store, normalised path with a trailing slash) for comparing locations."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = "/".join(part for part in prefix.split("/") if part not in ("", "."))
        return f"s3://{bucket}", f"{prefix}/" if prefix else ""
    return "local", str(Path(uri).resolve()).rstrip("/") + "/"


def check_locations(job: EnhanceJob) -> None:
    """Refuse a destination that is the source or holds it (before anything is
    written there)."""
    (src_store, src), (dst_store, dst) = _location(job.source), _location(job.destination)
    if src_store == dst_store and src.startswith(dst):
        where = "is" if src == dst else "holds"
        raise OverlappingLocations(f"destination {job.destination} {where} the source {job.source}: outputs would "
                                   "overwrite or mix with the originals; choose a destination outside it")


def listing(job: EnhanceJob) -> Iterator[ObjectInfo]:
    """The source's objects for ``job`` in key order, as they are listed, less a destination inside the source."""
    check_locations(job)
    (src_store, src), (dst_store, dst) = _location(job.source), _location(job.destination)
    infos = open_store(job.source, job.endpoint_url, job.region).scan(job.include, job.exclude)
    if src_store == dst_store and dst.startswith(src):
        inner = dst[len(src):]  # the destination's folder, relative to the source
        return (info for info in infos if not info.key.startswith(inner))
    return infos


def _digest(target: str) -> int:
    return int.from_bytes(hashlib.blake2b(target.encode("utf-8", "surrogateescape"), digest_size=16).digest())


class Planner:
    """Streams a listing (in key order) into the keys to process, each with
    an output key of its own; remembers those refused for ``refused_rows``."""

    def __init__(self, job: EnhanceJob):
        self.job = job
        self.targets: set[int] = set()  # hashes of the output keys taken
        self.collided: list[tuple[ObjectInfo, str]] = []  # (a refused key, its output key)
        self.listed = 0  # distinct keys listed so far
        self._last: str | None = None

    def keep(self, infos: Iterable[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in infos:
            # listings come in key order: a key not after the last one was listed already (a repeated page)
            if self._last is not None and info.key <= self._last:
                continue
            self._last = info.key
            self.listed += 1
            target = output_of(self.job, info.key)
            digest = _digest(target)
            if digest in self.targets:
                self.collided.append((info, target))
            else:
                self.targets.add(digest)
                yield info

    def refused_rows(self, infos: Iterable[ObjectInfo]) -> list[dict]:
        """Error rows for the keys refused, each naming the key that keeps
        its output, found in ``infos`` (the listing again: read only when a
        key was refused, and only until every owner is found)."""
        if not self.collided:
            return []
        refused = {info.key for info, _ in self.collided}
        wanted = {target for _, target in self.collided}
        owners: dict[str, str] = {}
        for info in infos:
            target = output_of(self.job, info.key)
            if info.key not in refused and target in wanted:
                owners.setdefault(target, info.key)
                if len(owners) == len(wanted):
                    break
        return [{"key": key_text(info.key), "status": STATUS_ERROR, "bytes_in": info.size,
                 "source_version": info.version, "model_uri": self.job.model, "precision": self.job.precision,
                 "error": f"output {key_text(target)} is already the output of "
                          f"{key_text(owners[target]) if target in owners else 'another key'} "
                          "(keys that differ only in case, extension spelling or slashes): rename one of them"}
                for info, target in self.collided]


def plan(job: EnhanceJob, infos: list[ObjectInfo]) -> tuple[list[ObjectInfo], list[dict]]:
    """(the objects to process, error rows for those whose output another key
    already has) of a listing held in memory, in any order."""
    ordered = sorted(infos, key=lambda info: info.key)
    planner = Planner(job)
    keep = list(planner.keep(ordered))
    return keep, planner.refused_rows(ordered)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last may be shorter), as they come."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
