"""Paper-style PNG figures of one or several runs: training curves (:func:`~verl_espo.report.figures.plot_rows`)
and validation accuracy per benchmark.

Drawn with matplotlib's object API on an Agg canvas: headless, and no pyplot, so the global backend of the
calling process is left alone. One colour per run across every
figure, one line style per curve of a panel; training curves are smoothed (raw values faint behind), validation
points are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from verl_espo.report.figures import PlotRow, losses_run, plot_rows
from verl_espo.report.runs import Run
from verl_espo.report.smoothing import SmoothingConfig, smooth
from verl_espo.report.validation import Benchmark

__all__ = ["PlotResult", "plot_training_curves", "plot_validation", "run_colors"]

PANEL_SIZE = (3.6, 2.7)  # inches per panel
DPI = 200
LINE_STYLES = ("-", "--", ":", "-.")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "legend.frameon": False,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
}


@dataclass
class PlotResult:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures skipped, runs missing from a figure


def run_colors(runs: Sequence[Run]) -> dict[str, str]:
    """A fixed colour per run name (matplotlib's tab10 cycle), the same in every figure."""
    cycle = matplotlib.colormaps["tab10"].colors
    return {run.name: matplotlib.colors.to_hex(cycle[i % len(cycle)]) for i, run in enumerate(runs)}


def _new_figure(panels: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(PANEL_SIZE[0] * panels, PANEL_SIZE[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, list(axes)


def _legend(ax, runs: list[str], colors: dict[str, str], labels: list[str]) -> None:
    """Runs by colour; when a panel has several curves, their line styles too (one entry each, not runs x curves)."""
    handles = [Line2D([], [], color=colors[name], label=name) for name in runs]
    if len(labels) > 1:
        handles += [
            Line2D([], [], color="0.35", linestyle=LINE_STYLES[i % len(LINE_STYLES)], label=label)
            for i, label in enumerate(labels)
        ]
    ax.legend(handles=handles, loc="best")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def plot_training_curves(
    runs: Sequence[Run], out_dir: str | Path, smoothing: SmoothingConfig = SmoothingConfig()
) -> PlotResult:
    """One PNG per ``file`` of :func:`~verl_espo.report.figures.plot_rows` that any run logged; skipped figures
    and absent runs become notes. Only the plots of the losses the runs ran
    (:func:`~verl_espo.report.figures.losses_run`) are considered: a figure of a loss no run used is not noted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = run_colors(runs)
    result = PlotResult()
    by_file: dict[str, list[PlotRow]] = {}
    for row in plot_rows(losses_run(runs)):
        by_file.setdefault(row.file, []).append(row)

    for file, rows in by_file.items():
        panels: dict[str, list[PlotRow]] = {}
        for row in rows:
            if any(run.has(row.key) for run in runs):
                panels.setdefault(row.panel, []).append(row)
        if not panels:
            keys = ", ".join(dict.fromkeys(row.key for row in rows))
            result.notes.append(f"`{file}.png` not drawn: no run logged {keys}")
            continue
        absent = [run.name for run in runs if not any(run.has(row.key) for row in rows)]
        if absent:
            result.notes.append(f"`{file}.png`: nothing logged by {', '.join(absent)}")

        with matplotlib.rc_context(STYLE):
            fig, axes = _new_figure(len(panels))
            for ax, (title, panel_rows) in zip(axes, panels.items(), strict=True):
                drawn = []
                labels = [row.label for row in panel_rows]
                for run in runs:
                    for i, row in enumerate(panel_rows):
                        values = run.series(row.key)
                        if values.empty:
                            continue
                        style = LINE_STYLES[i % len(LINE_STYLES)]
                        if smoothing.active and values.size > 1:
                            ax.plot(values.index, values, color=colors[run.name], linestyle=style, alpha=0.25, lw=0.8)
                        ax.plot(values.index, smooth(values, smoothing), color=colors[run.name], linestyle=style,
                                marker="o" if values.size == 1 else None, ms=3)  # fmt: skip
                        if run.name not in drawn:
                            drawn.append(run.name)
                ax.set_title(title)
                ax.set_ylabel(panel_rows[0].ylabel)
                _legend(ax, drawn, colors, labels)
            result.files.append(_save(fig, out_dir / f"{file}.png"))
    return result


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")


def plot_validation(runs: Sequence[Run], benchmarks: Sequence[Benchmark], out_dir: str | Path) -> PlotResult:
    """``val_<data_source>.png`` per benchmark: accuracy (%) against the step, one marked line per run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = run_colors(runs)
    result = PlotResult()
    if not benchmarks:
        result.notes.append("no validation figure: no run logged `val-core/<data_source>/<var>/mean@N`")
    for bench in benchmarks:
        with matplotlib.rc_context(STYLE):
            fig, (ax,) = _new_figure(1)
            drawn = []
            for run in runs:
                values = run.series(bench.key)
                if values.size:
                    ax.plot(values.index, bench.scale * values, color=colors[run.name], marker="o", ms=3.5)
                    drawn.append(run.name)
            ax.set_title(f"Validation accuracy: {bench.source}")
            ax.set_ylabel(bench.axis_label)
            _legend(ax, drawn, colors, [])
            result.files.append(_save(fig, out_dir / f"val_{_slug(bench.source)}.png"))
        missing = [run.name for run in runs if not run.has(bench.key)]
        if missing:
            result.notes.append(f"`{bench.key}` not logged by {', '.join(missing)}")
    return result
