"""Writes ``report.md`` and the figures of a set of runs into one folder."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verl_espo.report.runs import Run
from verl_espo.report.settings import DEFAULT_IGNORED
from verl_espo.report.smoothing import SmoothingConfig
from verl_espo.report.table import (
    Table,
    pick_value,
    results_table,
    settings_table,
    setup_table,
    timing_table,
    to_markdown,
)
from verl_espo.report.validation import benchmarks as find_benchmarks

__all__ = ["ReportOptions", "Report", "write_report"]


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows.

    Args:
        at: table values from the ``last`` validation of each run, or the ``best`` one per benchmark.
        digits: decimals in the results table.
        smoothing: how training curves are smoothed.
        ignore: ``fnmatch`` patterns of config keys left out of "settings that differ".
        title: the report's heading.
    """

    at: str = "last"
    digits: int = 1
    smoothing: SmoothingConfig = SmoothingConfig()
    ignore: tuple[str, ...] = DEFAULT_IGNORED
    title: str = "Training report"

    def __post_init__(self) -> None:
        if self.at not in ("last", "best"):
            raise ValueError(f"--at must be 'last' or 'best', got {self.at!r}")
        if not 0 <= self.digits <= 6:
            raise ValueError(f"--digits must be in [0, 6], got {self.digits}")


@dataclass
class Report:
    path: Path  # report.md
    figures: list[Path]
    tables: dict[str, Table]
    notes: list[str] = field(default_factory=list)


def _figure_markdown(files: Sequence[Path], out_dir: Path) -> list[str]:
    return [f"![{f.stem}]({f.relative_to(out_dir).as_posix()})" for f in files]


def _results_json(runs: Sequence[Run], benches, at: str) -> dict:
    """The results table's numbers exactly as logged: ``{run: {metric key: {"value", "step"}}}``."""
    out: dict[str, dict] = {}
    for run in runs:
        out[run.name] = {}
        for bench in benches:
            value, step = pick_value(run, bench.key, at)
            if value is not None:
                out[run.name][bench.key] = {"value": value, "step": step}
    return out


def write_report(runs: Sequence[Run], out_dir: str | Path, options: ReportOptions = ReportOptions()) -> Report:
    """Tables, figures and notes for ``runs`` in ``out_dir`` (``report.md`` + PNGs); nothing missing is an error."""
    from verl_espo.report.plots import plot_training_curves, plot_validation  # matplotlib only when drawing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benches = find_benchmarks(runs)
    tables = {
        "results": results_table(runs, benches, options.at, options.digits),
        "setup": setup_table(runs),
        "timing": timing_table(runs),
    }
    diff, cut = settings_table(runs, options.ignore)
    tables["settings"] = diff
    val = plot_validation(runs, benches, out_dir)
    curves = plot_training_curves(runs, out_dir, options.smoothing)

    md = [f"# {options.title}", ""]
    md.append(f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python -m verl_espo.report` from {len(runs)} run(s):")
    md.append("")
    for run in runs:
        sources = ", ".join(f"`{s}`" for s in run.sources[:3]) or "no metrics"
        more = f" (+{len(run.sources) - 3} more)" if len(run.sources) > 3 else ""
        md.append(f"- **{run.name}**: `{run.path}` ({len(run.steps)} logged steps; {sources}{more})")
    md += ["", "## Results", ""]
    if benches:
        which = "the last validation of each run" if options.at == "last" else "the best validation per benchmark"
        md.append(
            f"Validation accuracy (%) at {which}: avg@N = veRL's `val-core/<data_source>/acc/mean@N`, the mean "
            "correctness of N sampled responses per problem, averaged over problems. Best per column in bold."
        )
        md += ["", to_markdown(tables["results"]), ""]
    else:
        md += ["No validation metrics (`val-core/<data_source>/<var>/mean@N`) in any run.", ""]

    md += ["## Setup", ""]
    if tables["setup"].rows:
        md += [to_markdown(tables["setup"]), ""]
    no_config = [run.name for run in runs if run.config is None]
    if no_config:
        md += [f"No Hydra config (`.hydra/config.yaml` or `config.yaml`) for: {', '.join(no_config)}.", ""]
    if len(runs) > 1:
        md += ["### Settings that differ", ""]
        if diff.rows:
            md += [to_markdown(diff), ""]
            if cut:
                md += [f"({cut} more differing keys not shown.)", ""]
            md += [f"Left out: keys matching {', '.join(f'`{p}`' for p in options.ignore)}.", ""]
        elif len(runs) - len(no_config) >= 2:
            md += ["The runs with a config have identical settings.", ""]
        else:
            md += ["Fewer than two runs have a config: nothing to compare.", ""]

    md += ["## Training time", "", to_markdown(tables["timing"]), ""]
    md += [
        "`time / step` is the mean of veRL's `timing_s/step` (rollout, log-probs, advantages, update, weight sync, "
        "checkpointing), `training time` its sum; `validation time` sums `timing_s/testing`, timed outside the "
        "step. The wall clock (the smoke runner's `summary.json`, or the span of TensorBoard event times) "
        "includes start-up.",
        "",
    ]

    md += ["## Figures", ""]
    md.append(f"Training curves smoothed: {options.smoothing.describe()} (raw values faint behind).")
    md += ["", "### Validation", ""] + _figure_markdown(val.files, out_dir)
    md += ["", "### Training", ""] + _figure_markdown(curves.files, out_dir)

    notes = [f"{run.name}: {note}" for run in runs for note in run.notes] + val.notes + curves.notes
    if notes:
        md += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    (out_dir / "results.json").write_text(json.dumps(_results_json(runs, benches, options.at), indent=2) + "\n")
    return Report(path, val.files + curves.files, tables, notes)
