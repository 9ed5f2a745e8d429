"""The report's tables as DataFrames of cell text (``**x**`` for bold), rendered as Markdown or as a rich table.

- results: one row per run, one column per benchmark (avg@N, in %), an average column when there are several
  benchmarks, the best value of each column in bold (the papers' main table);
- setup: the headline settings of each run; differing settings: the config keys whose values differ;
- training time: steps, time per step, summed step and validation time, wall-clock time, throughput.

Each table carries its title in ``attrs["title"]``; the first column is left-aligned and the others right-aligned
unless ``attrs["align"]`` says otherwise (one ``l``/``r`` per column).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from verl_espo.report.runs import Run
from verl_espo.report.settings import HEADLINE_SETTINGS, differing_settings, format_value, headline_settings
from verl_espo.report.validation import Benchmark

__all__ = [
    "AT_CHOICES",
    "format_duration",
    "pick_value",
    "result_values",
    "results_table",
    "settings_table",
    "setup_table",
    "timing_table",
    "to_markdown",
    "to_rich",
]

AT_CHOICES = ("last", "best")
DASH = "–"


def _table(rows: list[list[str]], header: list[str], title: str, align: str = "") -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=header, dtype=object)
    table.attrs.update(title=title, align=align or "l" + "r" * (len(header) - 1))
    return table


# ----------------------------------------------------------------------------- results
def pick_value(run: Run, key: str, at: str) -> tuple[float | None, int | None]:
    """A metric's ``last`` finite value or its ``best`` (highest) one, and its step; ``(None, None)`` if absent."""
    series = run.series(key)
    series = series[series.abs() < math.inf]
    if series.empty:
        return None, None
    step = int(series.idxmax() if at == "best" else series.index[-1])
    return float(series[step]), step


def result_values(runs: Sequence[Run], benchmarks: Sequence[Benchmark], at: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results' numbers as logged and their steps: one row per run, one column per benchmark key (NaN if
    absent)."""
    picked = [[pick_value(run, bench.key, at) for bench in benchmarks] for run in runs]
    names, keys = [run.name for run in runs], [bench.key for bench in benchmarks]
    values = pd.DataFrame([[v for v, _ in row] for row in picked], index=names, columns=keys, dtype="float64")
    steps = pd.DataFrame([[s for _, s in row] for row in picked], index=names, columns=keys, dtype="float64")
    return values, steps


def _bold_best(cells: pd.Series) -> pd.Series:
    """Bold the highest shown value of a column (ties in the printed digits all bold); not with < 2 values."""
    shown = pd.to_numeric(cells, errors="coerce")
    if shown.notna().sum() < 2:
        return cells
    return cells.where(shown != shown.max(), "**" + cells + "**")


def results_table(
    runs: Sequence[Run], benchmarks: Sequence[Benchmark], at: str = "last", digits: int = 1
) -> pd.DataFrame:
    """Accuracy per run and benchmark at the last validation (``at="last"``) or the best one (``"best"``).

    Cells show ``value * 100`` for accuracies (``acc``), the logged value otherwise, with ``digits`` decimals;
    the average column (several benchmarks, all accuracies) is the plain mean over benchmarks, shown only for
    runs that have every benchmark.
    """
    if at not in AT_CHOICES:
        raise ValueError(f"--at must be one of {AT_CHOICES}, got {at!r}")
    values, steps = result_values(runs, benchmarks, at)
    shown = values.mul([b.scale for b in benchmarks], axis=1).set_axis([b.label for b in benchmarks], axis=1)
    if len(benchmarks) > 1 and all(b.var == "acc" for b in benchmarks):
        shown["average"] = 100 * values.mean(axis=1, skipna=False)
    cells = shown.map(lambda v: DASH if pd.isna(v) else f"{v:.{digits}f}").apply(_bold_best)
    cells.insert(0, "run", values.index)
    if at == "last":
        cells["step"] = steps.max(axis=1).map(lambda s: DASH if pd.isna(s) else str(int(s)))
    table = cells.reset_index(drop=True).astype(object)
    table.attrs.update(title=f"Validation accuracy ({at} validation)", align="l" + "r" * (table.shape[1] - 1))
    return table


# ----------------------------------------------------------------------------- settings
def setup_table(runs: Sequence[Run]) -> pd.DataFrame:
    """The headline settings (:data:`HEADLINE_SETTINGS`) of the runs that have a config."""
    header = ["run", *(label for label, _ in HEADLINE_SETTINGS)]
    rows = [[run.name, *headline_settings(run).values()] for run in runs if run.config is not None]
    return _table(rows, header, "Setup", align="l" * len(header))


def settings_table(runs: Sequence[Run], ignore: Sequence[str], max_rows: int = 80) -> tuple[pd.DataFrame, int]:
    """Config keys that differ between runs (one column per run with a config); also the number of rows cut."""
    diff = differing_settings(runs, ignore)
    names = [run.name for run in runs if run.config is not None]
    rows = [[f"`{key}`", *(format_value(v) for v in values)] for key, values in diff.head(max_rows).iterrows()]
    table = _table(rows, ["setting", *names], "Settings that differ", align="l" * (1 + len(names)))
    return table, max(0, len(diff) - max_rows)


# ----------------------------------------------------------------------------- time
def format_duration(seconds: float | None) -> str:
    """``41.2 s``, ``9 min 12 s``, ``3 h 02 min``."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _wall_seconds(run: Run) -> tuple[float | None, str]:
    if run.summary and isinstance(run.summary.get("wall_s"), (int, float)):
        return float(run.summary["wall_s"]), "summary.json"
    if len(run.wall_times) > 1:
        return float(run.wall_times.max() - run.wall_times.min()), "TensorBoard"
    return None, ""


def timing_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Per run: training steps, mean ``timing_s/step`` and its sum, the summed validation time
    (``timing_s/testing``; veRL times it outside the step), wall-clock time, mean ``perf/throughput``."""
    header = ["run", "steps", "time / step", "training time", "validation time", "wall clock", "throughput (tokens/s)"]
    rows = []
    for run in runs:
        step_s, test_s, throughput = (run.series(k) for k in ("timing_s/step", "timing_s/testing", "perf/throughput"))
        wall, source = _wall_seconds(run)
        rows.append(
            [
                run.name,
                str(step_s.size),
                format_duration(step_s.mean()) if step_s.size else DASH,
                format_duration(step_s.sum()) if step_s.size else DASH,
                format_duration(test_s.sum()) if test_s.size else DASH,
                f"{format_duration(wall)} ({source})" if wall is not None else DASH,
                f"{throughput.mean():,.0f}" if throughput.size else DASH,
            ]
        )
    return _table(rows, header, "Training time")


# ----------------------------------------------------------------------------- rendering
def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (``DataFrame.to_markdown``, tabulate's ``pipe`` format)."""
    align = table.attrs.get("align") or "l" + "r" * (table.shape[1] - 1)
    escaped = table.astype(str).apply(lambda column: column.str.replace("|", "\\|", regex=False))
    escaped.columns = [str(c).replace("|", "\\|") for c in table.columns]
    colalign = ["left" if a == "l" else "right" for a in align]
    return escaped.to_markdown(index=False, tablefmt="pipe", colalign=colalign, disable_numparse=True)


def to_rich(table: pd.DataFrame):
    """The same table as a ``rich.table.Table`` for the console (``**x**`` cells in bold)."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    align = table.attrs.get("align") or "l" + "r" * (table.shape[1] - 1)
    out = RichTable(title=table.attrs.get("title"), title_justify="left")
    for header, a in zip(table.columns, align, strict=True):
        out.add_column(str(header), justify="left" if a == "l" else "right")
    for row in table.astype(str).itertuples(index=False):
        out.add_row(
            *(f"[bold]{escape(c[2:-2])}[/bold]" if c.startswith("**") and c.endswith("**") else escape(c) for c in row)
        )
    return out
