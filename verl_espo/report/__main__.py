"""``python -m verl_espo.report RUN_DIR [RUN_DIR ...] --out DIR``: the paper-style report of veRL runs.

RUN_DIR is a run's output folder (veRL file-logger ``*.jsonl``, optional ``summary.json``, TensorBoard events,
Hydra config) or a single file-logger ``.jsonl``. Writes ``DIR/report.md``, ``DIR/results.json`` and PNG figures,
and prints the tables. See docs/report.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from verl_espo.report.runs import load_runs
from verl_espo.report.settings import DEFAULT_IGNORED
from verl_espo.report.smoothing import METHODS, SmoothingConfig
from verl_espo.report.table import AT_CHOICES, to_rich
from verl_espo.report.writer import ReportOptions, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m verl_espo.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or file-logger .jsonl files")
    parser.add_argument("--out", required=True, help="output folder for report.md and the figures")
    parser.add_argument("--label", action="append", help="a name per run, in order (default: the folder names)")
    parser.add_argument("--at", choices=AT_CHOICES, default="last",
                        help="table values from each run's last validation (default) or its best one")  # fmt: skip
    parser.add_argument("--digits", type=int, default=1, help="decimals in the results table (default 1)")
    parser.add_argument(
        "--smoothing", type=float, default=0.6, help="EMA weight in [0, 1) (default 0.6, as TensorBoard)"
    )
    parser.add_argument("--smoothing-method", choices=METHODS, default="ema", help="ema (default), rolling or none")
    parser.add_argument("--smoothing-window", type=int, default=10, help="points of the rolling mean (default 10)")
    parser.add_argument("--ignore-setting", action="append", default=None, metavar="PATTERN",
                        help="config keys (fnmatch) left out of 'settings that differ', "
                        f"added to {' '.join(DEFAULT_IGNORED)}")  # fmt: skip
    parser.add_argument("--title", default="Training report", help="heading of report.md")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console()
    try:
        smoothing = SmoothingConfig(args.smoothing_method, args.smoothing, args.smoothing_window)
        options = ReportOptions(
            at=args.at,
            digits=args.digits,
            smoothing=smoothing,
            ignore=DEFAULT_IGNORED + tuple(args.ignore_setting or ()),
            title=args.title,
        )
        runs = load_runs(args.runs, args.label, progress=True)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    with console.status("drawing figures"):
        report = write_report(runs, args.out, options)
    for name in ("results", "timing"):
        if not report.tables[name].empty:
            console.print(to_rich(report.tables[name]))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote {report.path} and {len(report.figures)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
