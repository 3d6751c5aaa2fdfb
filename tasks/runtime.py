"""Process-wide settings for running models here."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def tune_for_this_machine() -> int:
    """Turn Grappler's graph rewrites off when there is no GPU; returns the GPU count.

    On GPUs the rewrites pay off; on CPUs they cost more than they save for
    these deep graphs (tiny MIRNet on 2 cores: first training epoch 33 s ->
    19 s, later epochs 3.9 s -> 2.0 s; see README)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return len(gpus)
