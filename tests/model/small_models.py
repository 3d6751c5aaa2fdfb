"""Small models of every architecture, for tests that run them."""

from __future__ import annotations

from mirnet_pipeline.model import build_model

SMALL = {
    "mirnet": dict(num_rrg=1, num_mrb=1, channels=16),
    "mirnet_nonlocal": dict(num_rrg=1, num_mrb=1, channels=16, non_local=True, skff_softmax="streams"),
    "mirnet_v2": dict(channels=16, num_rrg=2, num_mrb=1),
    "cnn": dict(channels=8, depth=2),
}


def small_model(key):
    arch = "mirnet" if key.startswith("mirnet_nonlocal") else key
    return build_model(arch, **SMALL[key])
