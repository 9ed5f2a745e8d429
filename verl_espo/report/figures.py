"""Which training curves the report draws: one row per metric, the general ones here and each loss's in its spec
(:class:`~verl_espo.loss_inputs.LossSpec` ``plots``). Adding a metric to the report is one line.

Rows with the same ``file`` make one PNG (``<file>.png``); rows with the same ``panel`` inside it share axes, and
each row is one curve per run (``label`` names it in the legend when a panel holds several). Validation accuracy
is not listed: its figures follow the benchmarks found in the runs (``val_<data_source>.png``).
"""

# ruff: noqa: E501  (COMMON_PLOTS is an aligned table, one metric per line, read across)
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Optional

from verl_espo.loss_inputs import LossPlot as PlotRow

__all__ = ["COMMON_PLOTS", "PlotRow", "plot_rows", "figure_files", "losses_run"]


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


def plot_rows(losses: Optional[Collection[str]] = None) -> tuple[PlotRow, ...]:
    """The curves to draw: :data:`COMMON_PLOTS`, the plots of each declared loss (its spec's ``plots``; only the
    losses named in ``losses`` when given), the step time."""
    from verl_espo.loss_inputs import loss_specs

    specs = [spec for name, spec in loss_specs().items() if losses is None or name in losses]
    rows = dict.fromkeys(row for spec in specs for row in spec.plots)
    return (*COMMON_PLOTS, *rows, STEP_TIME)


def losses_run(runs: Sequence[Any]) -> set[str]:
    """The declared losses the runs ran: each run's ``policy_loss.loss_mode`` (from its Hydra config), and every loss
    whose metrics (its spec's ``metric_prefix``) a run logged, which covers runs read without a config."""
    from verl_espo.loss_inputs import loss_specs

    ran = set()
    for run in runs:
        mode = run.config
        for part in ("actor_rollout_ref", "actor", "policy_loss", "loss_mode"):
            mode = mode.get(part) if isinstance(mode, dict) else None
        keys = run.keys()
        ran |= {
            name
            for name, spec in loss_specs().items()
            if name == mode or any(key.startswith(spec.metric_prefix) for key in keys)
        }
    return ran


def figure_files() -> list[str]:
    """The training-curve PNG names, in table order."""
    return list(dict.fromkeys(row.file for row in plot_rows()))
