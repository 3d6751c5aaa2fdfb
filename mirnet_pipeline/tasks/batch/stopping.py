"""Stopping a batch job early and cleanly.

A job stops early when it is asked to (SIGINT, which Ctrl-C sends, SIGTERM
or SIGHUP) or when its destination cannot take more (a full disk, a quota,
a read-only file system, a lost claim). Its ``Stop`` is then set: the chunks
read no more images, finish the ones already read (each output is written
whole or not at all), and record what they did in the ledger; the flow then
writes the metrics of everything done and ends with the reason. A second
signal ends the process at once (what it wrote is still whole: outputs
appear by rename). A re-run resumes where the job stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

# errors of a write that no other image can avoid: the job stops on the first
DESTINATION_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Stop:
    """A job's request to stop: the first reason wins, with the exit status
    the command gives for it (128 + the signal's number for a signal)."""

    reason: str | None = None
    exit_status: int = 1
    _event: threading.Event = field(default_factory=threading.Event)

    def request(self, reason: str, exit_status: int = 1) -> None:
        if not self._event.is_set():
            self.reason, self.exit_status = reason, exit_status
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


def destination_fault(exc: BaseException) -> bool:
    """Whether ``exc`` says the destination takes no more writes at all."""
    return isinstance(exc, OSError) and exc.errno in DESTINATION_FAULTS


# run id -> the Stop of a job whose flow runs in this process (its chunks on
# threads find it here; chunks on Dask workers run to their end)
RUNNING: dict[str, Stop] = {}


def stop_of(run_id: str) -> Stop | None:
    return RUNNING.get(run_id)


@contextlib.contextmanager
def stoppable(run_id: str):
    """The ``Stop`` of the job ``run_id`` for the block. In the main thread,
    SIGINT, SIGTERM and SIGHUP set it meanwhile (the first one; a second ends
    the process at once with 128 + its number); their handlers are restored
    afterwards."""
    stop = Stop()
    RUNNING[run_id] = stop
    received: list[int] = []

    def handler(signum, frame):
        if received:
            os._exit(128 + received[0])
        received.append(signum)
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping after the images in progress (again to stop at once)", file=sys.stderr, flush=True)
        stop.request(f"interrupted by {name}", 128 + signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        RUNNING.pop(run_id, None)
