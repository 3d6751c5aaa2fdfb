"""The model-zoo report: size and cost of each configured variant, and a
one-screen summary for any architecture and option set (the command
``mirnet-summary``, ``flows/commands/summary.py``)."""

from __future__ import annotations

from mirnet_pipeline.model import get_architecture
from mirnet_pipeline.model.complexity import describe


def describe_variant(arch: str, options: dict, height: int = 1000, width: int = 1000) -> dict:
    """``model.complexity.describe`` with every option filled in (defaults shown)."""
    defaults = {
        name: p.default
        for name, p in get_architecture(arch).options().items()
        if name != "input_shape"
    }
    info = describe(arch, height=height, width=width, **options)
    info["options"] = {**defaults, **options}
    return info


def format_summary(info: dict) -> str:
    """One screen of text describing one model."""
    arch = get_architecture(info["architecture"])
    options = ", ".join(f"{k}={v!r}" for k, v in info["options"].items())
    lines = [
        f"{info['architecture']}: {arch.summary}",
        f"  options        {options}",
        f"  parameters     {info['parameters']:,}",
        f"  layers         {info['layers']:,}",
        f"  GMACs / MP     {info['gmacs_per_megapixel']:,.1f}"
        f"  (measured at {info['measured_at'][0]}x{info['measured_at'][1]})",
        f"  size multiple  {info['size_multiple']} (inputs are padded to it)",
        "  layer types    "
        + ", ".join(f"{name} x{count}" for name, count in list(info["layer_types"].items())[:8]),
    ]
    return "\n".join(lines)


def markdown_table(rows: dict[str, dict]) -> str:
    """A Markdown table of variants (name -> ``describe_variant`` result)."""
    out = [
        "| variant | architecture | options | parameters | layers | GMACs / MP |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, info in rows.items():
        options = ", ".join(f"{k}={v}" for k, v in info["options"].items())
        out.append(
            f"| {name} | {info['architecture']} | {options} | {info['parameters']:,} | "
            f"{info['layers']:,} | {info['gmacs_per_megapixel']:,.1f} |"
        )
    return "\n".join(out)
