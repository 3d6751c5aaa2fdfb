"""Regenerate the README's figures from what produced them.

    ./pipeline demo
    ./pipeline run python docs/readme_figures.py          # then review `git diff`

Rewrites, in README.md, the blocks between ``<!-- figures:NAME -->`` and
``<!-- /figures:NAME -->``:

- ``demo-summary``: the summary the last ``./pipeline demo`` printed (it keeps
  a copy in ``reports/demo_summary.txt``);
- ``model-zoo``: size and cost of the research's variants (``profile:
  research`` of params.yaml, whatever the selected profile), computed by
  ``tasks.training.model_zoo.describe_variant`` as ``flows/model_zoo.py`` does;

and copies ``reports/evaluation/before_after.png`` to ``docs/before_after.png``.
``--project DIR`` reads the reports of another checkout (a fresh clone that
ran the demo) and still writes this repository's README. Exits 1, naming the
file, when the demo has not run there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run as a script: the project's packages come from this checkout

from mirnet_pipeline.tasks import artifacts  # noqa: E402
from mirnet_pipeline.tasks.config import parse_params, variant_options  # noqa: E402

SUMMARY = artifacts.REPORTS / "demo_summary.txt"
FIGURE = artifacts.EVALUATION / "before_after.png"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the markers of block ``name`` replaced by ``body``."""
    pattern = re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(<!-- /figures:{name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md: no block <!-- figures:{name} --> ... <!-- /figures:{name} -->")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text, count=1)


def research_model_zoo(params_file: Path) -> str:
    """The research's variants as the README's Markdown table."""
    from mirnet_pipeline.tasks.training.model_zoo import describe_variant

    data = yaml.safe_load(params_file.read_text())
    params = parse_params({**data, "profile": "research"}, source=str(params_file))
    settings = params.model_zoo
    lines = ["| variant | options | parameters | GMACs / megapixel |", "|---|---|---:|---:|"]
    for name, spec in params.models.items():
        info = describe_variant(spec.arch, variant_options(spec), settings.height, settings.width)
        options = ", ".join(f"{k}={v}" for k, v in spec.options.model_dump(exclude_unset=True).items())
        lines.append(f"| {name} | {spec.arch}: {options} | {info['parameters']:,} | "
                     f"{info['gmacs_per_megapixel']:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=REPOSITORY,
                        help="the checkout whose demo reports to read (default: this one)")
    args = parser.parse_args(argv)
    summary, figure = args.project / SUMMARY, args.project / FIGURE
    for needed in (summary, figure):
        if not needed.is_file():
            print(f"readme_figures: {needed}: not found; run ./pipeline demo there first", file=sys.stderr)
            return 1
    readme = REPOSITORY / "README.md"
    text = replace_block(readme.read_text(), "demo-summary", "```\n" + summary.read_text().rstrip("\n") + "\n```")
    text = replace_block(text, "model-zoo", research_model_zoo(REPOSITORY / "params.yaml"))
    readme.write_text(text)
    shutil.copyfile(figure, REPOSITORY / "docs" / "before_after.png")
    print(f"updated {readme} and docs/before_after.png from {args.project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
