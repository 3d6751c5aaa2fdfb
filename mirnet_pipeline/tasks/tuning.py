"""Tuning this process for running models: TensorFlow's graph rewrites on CPUs, glibc's
malloc arenas and the return of freed memory."""

from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=1)
def tune_for_this_machine() -> int:
    """Turn Grappler's graph rewrites off when there is no GPU; returns the GPU count.

    On GPUs the rewrites pay off; on CPUs they cost more time than they save
    for these deep graphs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return len(gpus)


M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.lru_cache(maxsize=1)
def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc keep at most ``arenas`` malloc arenas in this process (for
    threads started from now on): the batch job's I/O threads each allocate
    and free full-size image buffers, and with an arena per thread freed
    memory stays with the thread that freed it, and the process's peak memory
    grows (``benchmarks/enhance_memory.py`` measures it). Returns whether it
    took effect (only on glibc)."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> None:
    """Hand the heap memory that is free again back to the system (glibc's
    ``malloc_trim``; nothing elsewhere): after a large photo, its buffers
    would otherwise keep the process's resident memory up."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
