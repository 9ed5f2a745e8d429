"""Paper-style reports of veRL runs: ``python -m verl_espo.report RUN_DIR [RUN_DIR ...] --out DIR``.

Modules, one job each: :mod:`~verl_espo.report.runs` reads runs (veRL's file-logger JSON lines, TensorBoard events,
the Hydra config), :mod:`~verl_espo.report.validation` finds each benchmark's accuracy metric,
:mod:`~verl_espo.report.table` builds the tables, :mod:`~verl_espo.report.figures` lists the curves and
:mod:`~verl_espo.report.plots` draws them, :mod:`~verl_espo.report.writer` writes ``report.md``. See docs/report.md.
Importing this package imports neither veRL nor matplotlib.
"""

from verl_espo.report.runs import Run, load_run, load_runs, merge_by_step, metrics_frame, read_file_logger
from verl_espo.report.smoothing import SmoothingConfig, smooth
from verl_espo.report.writer import Report, ReportOptions, write_report

__all__ = [
    "Report",
    "ReportOptions",
    "Run",
    "SmoothingConfig",
    "load_run",
    "load_runs",
    "merge_by_step",
    "metrics_frame",
    "read_file_logger",
    "smooth",
    "write_report",
]
