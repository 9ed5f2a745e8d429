"""CHORD's pieces (arXiv 2508.11408), free of veRL: ``phi``, the mu schedule, the SFT(-phi) token loss and the
step's per-type counts.

CHORD mixes an SFT loss on expert demonstrations into RL, ``L = (1 - mu) L_RL + mu L_SFT`` (Eq. 3), with
``L_SFT`` the token-mean NLL (Eq. 1) or SFT-phi, each token weighted by ``sg(phi(p))``, ``phi(p) = p(1 - p)``
(Eqs. 5-6). The schedule is the one of Trinity-RFT's ``mix_chord`` (linear warm-up, cosine decay, constant).

:data:`CHORD_SPEC` declares the ``chord`` loss (:mod:`verl_espo.losses.chord`) to the rest of the plugin; the
``HYBRID_*`` declarations are shared with every loss that mixes in expert rows (:mod:`verl_espo.losses.hybrid`).
"""

from __future__ import annotations

import math

import torch

from verl_espo.core.common import compute_dtype
from verl_espo.loss_inputs import LossPlot, LossSpec, register_loss_spec

__all__ = [
    "CHORD_SPEC",
    "HYBRID_SUM_METRICS",
    "HYBRID_PLOTS",
    "HYBRID_COLUMNS",
    "HYBRID_COUNT_KEYS",
    "phi",
    "mu_schedule",
    "sft_token_losses",
    "hybrid_counts",
]

#: The two parts of a loss with expert rows, normalised like the loss: summed over micro-batches and ranks.
HYBRID_SUM_METRICS = frozenset({"actor/hybrid/rl_loss", "actor/hybrid/sft_loss"})

# fmt: off
HYBRID_PLOTS = (
    LossPlot("chord_mu",   "CHORD SFT weight mu", "mu (weight of the SFT loss)", "actor/hybrid/mu"),
    LossPlot("chord_loss", "CHORD loss parts",    "loss (per token)",            "actor/hybrid/rl_loss",  "RL part"),
    LossPlot("chord_loss", "CHORD loss parts",    "loss (per token)",            "actor/hybrid/sft_loss", "SFT part"),
)
HYBRID_COLUMNS = (("mu", "actor/hybrid/mu"), ("rl_loss", "actor/hybrid/rl_loss"), ("sft_loss", "actor/hybrid/sft_loss"))
# fmt: on

CHORD_SPEC = register_loss_spec(
    LossSpec(
        name="chord",
        label="CHORD-phi",
        config_blocks=("hybrid",),
        expert_rows=True,
        sum_metrics=HYBRID_SUM_METRICS,
        plots=HYBRID_PLOTS,
        columns=HYBRID_COLUMNS,
    )
)

#: The step-level counts that normalise hybrid training: tokens and rows of each type.
HYBRID_COUNT_KEYS = ("rollout_tokens", "rollout_rows", "expert_tokens", "expert_rows")


def phi(prob: torch.Tensor) -> torch.Tensor:
    """CHORD's ``phi(p) = p (1 - p)`` (Eq. 5), in [0, 1/4]."""
    return prob * (1.0 - prob)


def mu_schedule(step: int, warmup_steps: int, decay_steps: int, peak: float, valley: float) -> float:
    """CHORD's ``mu`` at the 0-based training step ``step``.

    ``peak * step / warmup_steps`` during warm-up; then a cosine from ``peak`` down to ``valley`` over
    ``decay_steps``; ``valley`` afterwards (so ``warmup_steps = decay_steps = 0`` is a constant ``valley``).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return peak * step / warmup_steps
    if step >= warmup_steps + decay_steps:
        return valley
    progress = (step - warmup_steps) / decay_steps
    return valley + (peak - valley) * 0.5 * (1.0 + math.cos(math.pi * progress))


def sft_token_losses(log_prob: torch.Tensor, use_phi: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token SFT loss ``-w_t log p_t`` and its detached weight ``w_t``.

    ``w_t = phi(p_t) = p_t (1 - p_t)`` with ``p_t = exp(log_prob)`` of the current policy, detached (SFT-phi,
    CHORD Eq. 6), or ``1`` (plain SFT, Eq. 1). Padding is the caller's to mask.
    """
    dtype = compute_dtype(log_prob)
    log_prob = log_prob.to(dtype)
    with torch.no_grad():
        weights = phi(torch.exp(log_prob.detach())) if use_phi else torch.ones_like(log_prob)
    return -weights * log_prob, weights


def hybrid_counts(token_counts: torch.Tensor, is_expert: torch.Tensor) -> dict[str, int]:
    """Per-type token and row counts of a step's batch from each row's valid-token count (padding rows count as
    rollout rows with no token, as veRL counts them in ``global_batch_size``)."""
    expert = is_expert.reshape(-1).bool()
    lengths = token_counts.reshape(-1).to(torch.int64)
    return {
        "rollout_tokens": int(lengths[~expert].sum()),
        "rollout_rows": int((~expert).sum()),
        "expert_tokens": int(lengths[expert].sum()),
        "expert_rows": int(expert.sum()),
    }
