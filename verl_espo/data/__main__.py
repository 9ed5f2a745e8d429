"""``python -m verl_espo.data all --out DIR [--only a,b] [--template T]``, or ``python -m verl_espo.data NAME ...``.

``all`` prepares every data set (or those in ``--only``) with its default options; ``NAME`` forwards the remaining
arguments to that data set's own command, ``python -m verl_espo.data.NAME``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from verl_espo.data import DATASETS, get_spec
from verl_espo.data.common import TEMPLATES, run_cli


def prepare_all(out: str, only: Sequence[str] = DATASETS, template: str | None = None) -> dict[str, dict[str, Path]]:
    """Prepare the data sets ``only`` with default options (``template`` overrides each one's default)."""
    argv = ["--out", out] + (["--template", template] if template else [])
    return {name: run_cli(get_spec(name), argv) for name in only}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DATASETS:
        run_cli(get_spec(argv[0]), argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m verl_espo.data", description=__doc__)
    parser.add_argument("command", choices=["all", *DATASETS], help="'all' or one data set")
    parser.add_argument("--out", required=True, help="output root: OUT/<name>/<split>.parquet")
    parser.add_argument("--only", default=",".join(DATASETS), help="comma-separated data sets for 'all'")
    parser.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        default=None,
        help="prompt template for every set (default: each set's own)",
    )
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in DATASETS]
    if unknown:
        parser.error(f"--only: unknown data sets {unknown}; choose from {', '.join(DATASETS)}")
    prepare_all(args.out, only, args.template)


if __name__ == "__main__":
    main()
