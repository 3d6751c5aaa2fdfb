"""Architectures registered by name, so that a configuration string selects one.

Each entry records the builder function and the multiple that input heights and
widths must have (the product of the architecture's down-sampling strides), which
the inference helper pads to.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import keras

# the package name under which every custom layer, loss and metric is registered
# with keras.saving (".keras" files name them "mirnet_pipeline>ClassName")
PACKAGE = "mirnet_pipeline"


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[..., keras.Model]
    size_multiple: int
    summary: str

    def options(self) -> dict[str, inspect.Parameter]:
        """The builder's keyword options with their defaults (the paper's)."""
        return {
            name: p
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
        }


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, *, size_multiple: int, summary: str):
    """Decorator: make ``builder`` available as ``build_model(name, ...)``."""

    def decorate(builder):
        ARCHITECTURES[name] = Architecture(name, builder, size_multiple, summary)
        return builder

    return decorate


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; known: {known}") from None


def build_model(name: str, **options: Any) -> keras.Model:
    """Build a registered architecture by name.

    >>> build_model("mirnet", num_rrg=3, num_mrb=2, channels=64)
    >>> build_model("cnn", channels=128)
    >>> build_model("mirnet_v2")

    Unknown options raise ``TypeError`` naming the option and the known ones.
    """
    arch = get_architecture(name)
    known = arch.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for architecture {name!r}; "
            f"known: {', '.join(known)}"
        )
    return arch.builder(**options)


def size_multiple(model: keras.Model) -> int:
    """The multiple that input sides must have for ``model``: from its
    architecture's name, or what the model says of itself (an exported model
    that pads inside its graph says 1)."""
    own = getattr(model, "size_multiple", None)
    if isinstance(own, int):
        return own
    arch = ARCHITECTURES.get(model.name)
    if arch is None:
        raise ValueError(
            f"model {model.name!r} is not a registered architecture; "
            "pass the size multiple explicitly"
        )
    return arch.size_multiple
