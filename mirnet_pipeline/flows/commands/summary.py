"""The ``mirnet-summary`` command: parameters, layers and MACs per megapixel
of any architecture with any options.

    mirnet-summary cnn channels=256
    mirnet-summary mirnet num_rrg=3 num_mrb=2 channels=32 --json
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

PROG = "mirnet-summary"


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"options are key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    from mirnet_pipeline.model import ARCHITECTURES
    from mirnet_pipeline.tasks.training.model_zoo import describe_variant, format_summary

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", choices=sorted(ARCHITECTURES))
    parser.add_argument("options", nargs="*", type=_parse_option, metavar="key=value")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        info = describe_variant(args.arch, dict(args.options))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
