"""The report's tables as plain data (text cells, bold flags), rendered as Markdown or as a rich table.

- results: one row per run, one column per benchmark (avg@N, in %), an average column when there are several
  benchmarks, the best value of each column in bold (the papers' main table);
- setup: the headline settings of each run; differing settings: the config keys whose values differ;
- training time: steps, time per step, summed step and validation time, wall-clock time, throughput.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from verl_espo.report.runs import Run
from verl_espo.report.settings import HEADLINE_SETTINGS, differing_settings, format_value, headline_settings
from verl_espo.report.validation import Benchmark

__all__ = [
    "AT_CHOICES",
    "Cell",
    "Table",
    "format_duration",
    "pick_value",
    "results_table",
    "settings_table",
    "setup_table",
    "timing_table",
    "to_markdown",
    "to_rich",
]

AT_CHOICES = ("last", "best")
DASH = "–"


@dataclass
class Cell:
    text: str
    bold: bool = False
    value: float | None = None  # the number behind the text (as logged), for callers and tests


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    align: str = ""  # one of l/r per column; default: first column left, the rest right

    def column(self, name: str) -> list[Cell]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]


# ----------------------------------------------------------------------------- results
def pick_value(run: Run, key: str, at: str) -> tuple[float | None, int | None]:
    """A metric's ``last`` finite value or its ``best`` (highest) one, and its step; ``(None, None)`` if absent."""
    steps, values = run.series(key)
    finite = np.isfinite(values)
    if not finite.any():
        return None, None
    steps, values = steps[finite], values[finite]
    i = int(np.argmax(values)) if at == "best" else len(values) - 1
    return float(values[i]), int(steps[i])


def _bold_best(cells: list[Cell]) -> None:
    """Bold the highest shown value of a column (ties in the printed digits all bold); not with < 2 values."""
    shown = [(float(c.text), c) for c in cells if c.value is not None]
    if len(shown) < 2:
        return
    best = max(v for v, _ in shown)
    for v, cell in shown:
        cell.bold = v == best


def results_table(runs: Sequence[Run], benchmarks: Sequence[Benchmark], at: str = "last", digits: int = 1) -> Table:
    """Accuracy per run and benchmark at the last validation (``at="last"``) or the best one (``"best"``).

    Cells show ``value * 100`` for accuracies (``acc``), the logged value otherwise, with ``digits`` decimals;
    the average column (several benchmarks, all accuracies) is the plain mean over benchmarks, shown only for
    runs that have every benchmark.
    """
    if at not in AT_CHOICES:
        raise ValueError(f"--at must be one of {AT_CHOICES}, got {at!r}")
    with_avg = len(benchmarks) > 1 and all(b.var == "acc" for b in benchmarks)
    header = ["run", *(b.label for b in benchmarks), *(["average"] if with_avg else []), "step" if at == "last" else ""]
    header = [h for h in header if h]
    table = Table(f"Validation accuracy ({at} validation)", header)
    for run in runs:
        row = [Cell(run.name)]
        values, steps = [], []
        for bench in benchmarks:
            value, step = pick_value(run, bench.key, at)
            if value is None:
                row.append(Cell(DASH))
            else:
                row.append(Cell(f"{bench.scale * value:.{digits}f}", value=value))
                steps.append(step)
            values.append(value)
        if with_avg:
            complete = all(v is not None for v in values)
            avg = float(np.mean(values)) if complete else None
            row.append(Cell(f"{100 * avg:.{digits}f}", value=avg) if complete else Cell(DASH))
        if at == "last":
            row.append(Cell(str(max(steps)) if steps else DASH))
        table.rows.append(row)
    for j in range(1, len(header) - (1 if at == "last" else 0)):
        _bold_best([row[j] for row in table.rows])
    return table


# ----------------------------------------------------------------------------- settings
def setup_table(runs: Sequence[Run]) -> Table:
    """The headline settings (:data:`HEADLINE_SETTINGS`) of the runs that have a config."""
    header = ["run", *(label for label, _ in HEADLINE_SETTINGS)]
    table = Table("Setup", header, align="l" * len(header))
    for run in runs:
        settings = headline_settings(run)
        if settings:
            table.rows.append([Cell(run.name), *(Cell(settings[label]) for label, _ in HEADLINE_SETTINGS)])
    return table


def settings_table(runs: Sequence[Run], ignore: Sequence[str], max_rows: int = 80) -> tuple[Table, int]:
    """Config keys that differ between runs (one column per run with a config); also the number of rows cut."""
    diff = differing_settings(runs, ignore)
    names = [run.name for run in runs if run.config is not None]
    table = Table("Settings that differ", ["setting", *names], align="l" * (1 + len(names)))
    for key, values in list(diff.items())[:max_rows]:
        table.rows.append([Cell(f"`{key}`"), *(Cell(format_value(v)) for v in values)])
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
        times = list(run.wall_times.values())
        return max(times) - min(times), "TensorBoard"
    return None, ""


def timing_table(runs: Sequence[Run]) -> Table:
    """Per run: training steps, mean ``timing_s/step`` and its sum, the summed validation time
    (``timing_s/testing``; veRL times it outside the step), wall-clock time, mean ``perf/throughput``."""
    table = Table(
        "Training time",
        ["run", "steps", "time / step", "training time", "validation time", "wall clock", "throughput (tokens/s)"],
    )
    for run in runs:
        _, step_s = run.series("timing_s/step")
        _, test_s = run.series("timing_s/testing")
        _, throughput = run.series("perf/throughput")
        wall, source = _wall_seconds(run)
        table.rows.append(
            [
                Cell(run.name),
                Cell(str(step_s.size), value=float(step_s.size)),
                Cell(format_duration(step_s.mean()) if step_s.size else DASH),
                Cell(format_duration(step_s.sum()) if step_s.size else DASH, value=float(step_s.sum())),
                Cell(format_duration(test_s.sum()) if test_s.size else DASH, value=float(test_s.sum())),
                Cell(f"{format_duration(wall)} ({source})" if wall is not None else DASH, value=wall),
                Cell(f"{throughput.mean():,.0f}" if throughput.size else DASH),
            ]
        )
    return table


# ----------------------------------------------------------------------------- rendering
def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table; bold cells as ``**x**``."""
    align = table.align or "l" + "r" * (len(table.header) - 1)
    lines = [
        "| " + " | ".join(_escape(h) for h in table.header) + " |",
        "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|",
    ]
    for row in table.rows:
        cells = [f"**{_escape(c.text)}**" if c.bold else _escape(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_rich(table: Table):
    """The same table as a ``rich.table.Table`` for the console."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    align = table.align or "l" + "r" * (len(table.header) - 1)
    out = RichTable(title=table.title, title_justify="left")
    for header, a in zip(table.header, align, strict=True):
        out.add_column(header, justify="left" if a == "l" else "right")
    for row in table.rows:
        out.add_row(*(f"[bold]{escape(c.text)}[/bold]" if c.bold else escape(c.text) for c in row))
    return out
