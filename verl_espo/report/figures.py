"""Which training curves the report draws: one row per metric. Adding a metric to the report is one line here.

Rows with the same ``file`` make one PNG (``<file>.png``); rows with the same ``panel`` inside it share axes, and
each row is one curve per run (``label`` names it in the legend when a panel holds several). Validation accuracy
is not listed: its figures follow the benchmarks found in the runs (``val_<data_source>.png``).
"""

# ruff: noqa: E501  (PLOTS is an aligned table, one metric per line, read across)
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PLOTS", "PlotRow", "figure_files", "plot_rows"]


@dataclass(frozen=True)
class PlotRow:
    file: str  # PNG name without the extension
    panel: str  # panel title
    ylabel: str  # y-axis label, with the unit
    key: str  # veRL metric name
    label: str = ""  # the curve's name when a panel has several (line style); empty when it has one


# fmt: off
PLOTS: tuple[PlotRow, ...] = (
    #       file                  panel                                   y axis (unit)                        metric key                           curve
    PlotRow("train_reward",       "Training reward",                      "mean reward per response",          "critic/score/mean"),
    PlotRow("entropy",            "Policy entropy",                       "entropy (nats / token)",            "actor/entropy"),
    PlotRow("response_length",    "Response length",                      "length (tokens)",                   "response_length/mean"),
    PlotRow("clip_fraction",      "Clip fraction (all tokens)",           "fraction of tokens clipped",        "actor/pg_clipfrac"),
    PlotRow("espo_clip_fraction", "ESPO high-entropy group",              "fraction of group tokens clipped",  "actor/espo/high/clipfrac_upper", "upper (1+eps, A>0)"),
    PlotRow("espo_clip_fraction", "ESPO high-entropy group",              "fraction of group tokens clipped",  "actor/espo/high/clipfrac_lower", "lower (1-eps, A<0)"),
    PlotRow("espo_clip_fraction", "ESPO low-entropy group",               "fraction of group tokens clipped",  "actor/espo/low/clipfrac_upper",  "upper (1+eps, A>0)"),
    PlotRow("espo_clip_fraction", "ESPO low-entropy group",               "fraction of group tokens clipped",  "actor/espo/low/clipfrac_lower",  "lower (1-eps, A<0)"),
    PlotRow("espo_eps",           "ESPO clip half-width per group",       "eps (ratio deviation)",             "actor/espo/high/eps_mean",       "high-entropy group"),
    PlotRow("espo_eps",           "ESPO clip half-width per group",       "eps (ratio deviation)",             "actor/espo/low/eps_mean",        "low-entropy group"),
    PlotRow("espo_clip_fraction", "ESPO per-token groups (grouping=token)", "fraction of tokens clipped",     "actor/espo/token/clipfrac_upper", "upper (1+eps, A>0)"),
    PlotRow("espo_clip_fraction", "ESPO per-token groups (grouping=token)", "fraction of tokens clipped",     "actor/espo/token/clipfrac_lower", "lower (1-eps, A<0)"),
    PlotRow("espo_eps",           "ESPO clip half-width per group",       "eps (ratio deviation)",             "actor/espo/token/eps_mean",      "per token (grouping=token)"),
    PlotRow("egspo_gate",         "EGSPO gate: full-PPO tokens",          "fraction of tokens",                "actor/egspo/high_token_frac"),
    PlotRow("egspo_gate",         "EGSPO mean phi, low-entropy tokens",   "weight phi_scale * p(1-p)",         "actor/egspo/phi_mean_low"),
    PlotRow("chord_mu",           "CHORD SFT weight mu",                  "mu (weight of the SFT loss)",       "actor/hybrid/mu"),
    PlotRow("chord_loss",         "CHORD loss parts",                     "loss (per token)",                  "actor/hybrid/rl_loss",           "RL part"),
    PlotRow("chord_loss",         "CHORD loss parts",                     "loss (per token)",                  "actor/hybrid/sft_loss",          "SFT part"),
    PlotRow("step_time",          "Time per training step",               "time (s)",                          "timing_s/step"),
)
# fmt: on


def plot_rows() -> tuple[PlotRow, ...]:
    """The curves the report draws, in figure order: the one place the report's plot selection is read from."""
    return PLOTS


def figure_files() -> list[str]:
    """The training-curve PNG names, in table order."""
    return list(dict.fromkeys(row.file for row in plot_rows()))
