"""Which training curves the report draws: one row per metric, the general ones here and each loss's in its spec
(:class:`~verl_espo.loss_inputs.LossSpec` ``plots``). Adding a metric to the report is one line.

Rows with the same ``file`` make one PNG (``<file>.png``); rows with the same ``panel`` inside it share axes, and
each row is one curve per run (``label`` names it in the legend when a panel holds several). Validation accuracy
is not listed: its figures follow the benchmarks found in the runs (``val_<data_source>.png``).
"""

# ruff: noqa: E501  (COMMON_PLOTS is an aligned table, one metric per line, read across)
from __future__ import annotations

from verl_espo.loss_inputs import LossPlot as PlotRow

__all__ = ["COMMON_PLOTS", "PlotRow", "plot_rows", "figure_files"]


# fmt: off
COMMON_PLOTS: tuple[PlotRow, ...] = (
    #       file                  panel                                   y axis (unit)                        metric key                           curve
    PlotRow("train_reward",       "Training reward",                      "mean reward per response",          "critic/score/mean"),
    PlotRow("entropy",            "Policy entropy",                       "entropy (nats / token)",            "actor/entropy"),
    PlotRow("response_length",    "Response length",                      "length (tokens)",                   "response_length/mean"),
    PlotRow("clip_fraction",      "Clip fraction (all tokens)",           "fraction of tokens clipped",        "actor/pg_clipfrac"),
)
STEP_TIME = PlotRow("step_time", "Time per training step", "time (s)", "timing_s/step")
# fmt: on


def plot_rows() -> tuple[PlotRow, ...]:
    """The curves to draw: :data:`COMMON_PLOTS`, each declared loss's (its spec's ``plots``), the step time."""
    from verl_espo.loss_inputs import loss_specs

    losses = dict.fromkeys(row for spec in loss_specs().values() for row in spec.plots)
    return (*COMMON_PLOTS, *losses, STEP_TIME)


def figure_files() -> list[str]:
    """The training-curve PNG names, in table order."""
    return list(dict.fromkeys(row.file for row in plot_rows()))
