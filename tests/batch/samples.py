"""Pictures made here for the batch tests, and the enhance flow called directly."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(width=64, height=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def run(job):
    """The flow's summary, also when images failed (the run then ends Failed)."""
    from mirnet_pipeline.flows.enhance import ImagesFailed
    from mirnet_pipeline.flows.enhance import enhance_folder as flow

    try:
        return flow(job)
    except ImagesFailed as failed:
        assert failed.summary["failures"]
        return failed.summary
