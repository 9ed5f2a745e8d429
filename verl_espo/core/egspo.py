"""EGSPO tensor math (arXiv 2602.03309), free of veRL: the entropy gate on rollout tokens.

Only the abstract of EGSPO is public; the reading implemented here is reconstructed in ``docs/egspo.md``:

* gate: ``g_t = 1[H_t >= tau]`` on the old policy's entropy ``H_t`` (``tau`` per step, per response or fixed,
  see :mod:`verl_espo.core.entropy`);
* weight: ``w_t = g_t + (1 - g_t) * phi_scale * phi(p_t)``, ``phi(p) = p (1 - p)`` (CHORD Eq. 5,
  :func:`verl_espo.core.chord.phi`), ``p_t`` the probability of the sampled token, detached;
* token loss: ``w_t`` times veRL's ``vanilla`` PPO token loss (clip and dual clip). The advantage keeps its
  sign in both branches (``w_t >= 0``), as the abstract requires.

:data:`EGSPO_SPEC` declares the ``egspo`` loss (:mod:`verl_espo.losses.egspo`) to the rest of the plugin, with
its step statistic: the step's mean gate weight for ``egspo.rl_normalization=gate_weight``
(:func:`step_gate_weight_mean`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch

from verl_espo.core.chord import HYBRID_COLUMNS, HYBRID_PLOTS, HYBRID_SUM_METRICS, phi
from verl_espo.core.common import PPOTokenTerms, compute_dtype, masked, masked_ppo_token_terms, ppo_metrics, share
from verl_espo.core.entropy import sequence_high_entropy_mask, threshold_high_entropy_mask
from verl_espo.loss_inputs import LossPlot, LossSpec, StepStatistic, StepThreshold, register_loss_spec

__all__ = [
    "EGSPO_SPEC",
    "PHI_SOURCES",
    "gate_high_mask",
    "gate_weights",
    "step_gate_weight_mean",
    "EGSPOTerms",
    "egspo_token_terms",
    "egspo_metrics",
]

#: Which policy's probability ``p_t`` enters ``phi``: the old one, or the current one (detached).
PHI_SOURCES = ("old", "current")


def gate_high_mask(
    gate: str,
    old_entropy: torch.Tensor,
    rollout_mask: torch.Tensor,
    high_entropy_ratio: float,
    threshold: Optional[float],
) -> torch.Tensor:
    """The gate's high-entropy set of the rollout tokens: ``sequence``: each response's top ``ceil(rho L)``
    entropies and their ties; ``batch`` / ``threshold``: ``H >= threshold`` (the step's, or the fixed one)."""
    if gate == "sequence":
        return sequence_high_entropy_mask(old_entropy, rollout_mask, high_entropy_ratio)
    if threshold is None:
        raise ValueError(f"egspo gate={gate!r} needs an entropy threshold")
    return threshold_high_entropy_mask(old_entropy, rollout_mask, float(threshold))


def gate_weights(high_mask: torch.Tensor, log_prob_for_phi: torch.Tensor, phi_scale: float = 1.0) -> torch.Tensor:
    """Detached per-token weights: 1 on the high-entropy set, ``phi_scale * phi(p)`` elsewhere."""
    with torch.no_grad():
        low_weight = phi(torch.exp(log_prob_for_phi.detach().to(compute_dtype(log_prob_for_phi))))
        if phi_scale != 1.0:
            low_weight = low_weight * phi_scale
        return torch.where(high_mask, 1.0, low_weight)


@dataclass
class EGSPOTerms:
    """Per-token terms of the gated loss and what its metrics are made of.

    Attributes:
        pg_losses: ``(B, T)`` ``w_t * l_t``, zero outside ``mask``; carries the gradient.
        weights: ``(B, T)`` detached ``w_t`` (zero outside ``mask``).
        high_mask: ``(B, T)`` bool, gated-high tokens (within ``mask``).
        mask: ``(B, T)`` bool, the tokens the gated loss covers (the rollout tokens).
        ppo: veRL's PPO terms before weighting (computed on inputs zeroed outside ``mask``).
    """

    pg_losses: torch.Tensor
    weights: torch.Tensor
    high_mask: torch.Tensor
    mask: torch.Tensor
    ppo: PPOTokenTerms


def egspo_token_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    high_mask: torch.Tensor,
    *,
    phi_source: str = "old",
    phi_scale: float = 1.0,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
) -> EGSPOTerms:
    """The entropy-gated PPO token loss on the tokens of ``mask``.

    Args:
        log_prob, old_log_prob, advantages: ``(B, T)`` padded tensors (``log_prob`` carries the gradient).
        mask: ``(B, T)`` bool, the rollout tokens (response mask without expert rows).
        high_mask: ``(B, T)`` bool, the gate (``H_t >= tau``).
        phi_source: ``"old"`` (``exp(old_log_prob)``) or ``"current"`` (``exp(log_prob)``, detached).
        phi_scale: multiplies ``phi``.
        clip_ratio_low, clip_ratio_high, clip_ratio_c: the actor's PPO clip range and dual-clip bound.
    """
    if phi_source not in PHI_SOURCES:
        raise ValueError(f"egspo phi_source must be one of {list(PHI_SOURCES)}, got {phi_source!r}")
    mask = mask.bool()
    ppo = masked_ppo_token_terms(
        log_prob, old_log_prob, advantages, mask, clip_ratio_low, clip_ratio_high, clip_ratio_c
    )
    high = high_mask.bool() & mask
    # phi(exp(0)) = 0 outside the mask, so the weights need no further masking.
    (phi_log_prob,) = masked(mask, old_log_prob if phi_source == "old" else log_prob)
    weights = gate_weights(high, phi_log_prob, phi_scale)
    return EGSPOTerms(ppo.pg_losses * weights, weights, high, mask, ppo)


def egspo_metrics(terms: EGSPOTerms, prefix: str = "actor/egspo/") -> dict[str, torch.Tensor]:
    """Diagnostics of one (micro-)batch over its rollout tokens, as scalar tensors by name.

    ``high_token_frac`` (share of gated-high tokens), ``weight_mean`` (mean ``w_t``: the effective step size),
    ``phi_mean_low`` (mean ``w_t`` on low-entropy tokens), ``low_neg_adv_frac`` (share of low-entropy tokens
    with ``A < 0``), ``{high,low}/clipfrac`` and ``{high,low}/clipfrac_lower`` (PPO clip and dual clip per gate
    side); veRL's ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower`` and ``actor/ppo_kl`` over the same tokens.
    """
    with torch.no_grad():
        ppo, mask = terms.ppo, terms.mask
        sides = {"high": terms.high_mask, "low": mask & ~terms.high_mask}
        n = {side: torch.count_nonzero(tokens) for side, tokens in sides.items()}
        n_all = n["high"] + n["low"]
        w_sum = terms.weights.double().sum()
        named = {
            f"{prefix}high_token_frac": share(n["high"], n_all),
            f"{prefix}weight_mean": share(w_sum, n_all),
            f"{prefix}phi_mean_low": share(w_sum - n["high"], n["low"]),  # w = 1 on the high side
            f"{prefix}low_neg_adv_frac": share(torch.count_nonzero(sides["low"] & ppo.negative), n["low"]),
        }
        for flag, name in ((ppo.clipped, "clipfrac"), (ppo.dual_clipped, "clipfrac_lower")):
            for side, tokens in sides.items():
                named[f"{prefix}{side}/{name}"] = share(torch.count_nonzero(tokens & flag), n[side])
        return {**named, **ppo_metrics(ppo, mask)}


def step_gate_weight_mean(
    params: Any,
    old_entropy: torch.Tensor,
    old_log_prob: torch.Tensor,
    rollout_mask: torch.Tensor,
    entropy_threshold: Optional[float] = None,
) -> float:
    """Mean gate weight ``sum w_t / N`` over the ``N`` rollout tokens of a step (``egspo.rl_normalization=
    gate_weight``), in float64.

    ``w_t`` is :func:`gate_weights` on the old policy (``phi_source=old``) under the gate of ``params`` (the
    ``egspo`` block); ``entropy_threshold`` is the step's threshold of ``gate=batch``. The trainer computes it once
    per step on the step's padded ``(B, T)`` tensors (:data:`EGSPO_SPEC`'s step statistic).
    """
    mask = rollout_mask.bool()
    threshold = params.threshold if params.gate == "threshold" else entropy_threshold
    high = gate_high_mask(params.gate, old_entropy, mask, params.high_entropy_ratio, threshold)
    weights = gate_weights(high, old_log_prob.double(), float(params.phi_scale))
    return float(torch.where(mask, weights, 0.0).sum() / mask.sum().clamp(min=1))


def _step_gate_weight_mean(
    policy_loss: Any, tensors: Mapping[str, torch.Tensor], rollout_mask: torch.Tensor, threshold: Optional[float]
) -> float:
    """:func:`step_gate_weight_mean` as the spec's step statistic (:class:`~verl_espo.loss_inputs.StepStatistic`)."""
    params = policy_loss.egspo
    return step_gate_weight_mean(params, tensors["entropy"], tensors["old_log_probs"], rollout_mask, threshold)


EGSPO_SPEC = register_loss_spec(
    LossSpec(
        name="egspo",
        label="EGSPO",
        config_blocks=("egspo", "hybrid"),
        old_entropy=True,
        step_threshold=StepThreshold(block="egspo", key="gate"),
        step_statistics=(
            StepStatistic(
                "gate_weight_mean",
                _step_gate_weight_mean,
                fields=("entropy", "old_log_probs"),
                block="egspo",
                key="rl_normalization",
                value="gate_weight",
            ),
        ),
        expert_rows=True,
        sum_metrics=HYBRID_SUM_METRICS,
        plots=(
            LossPlot("egspo_gate", "EGSPO gate: full-PPO tokens", "fraction of tokens", "actor/egspo/high_token_frac"),
            LossPlot(
                "egspo_gate",
                "EGSPO mean phi, low-entropy tokens",
                "weight phi_scale * p(1-p)",
                "actor/egspo/phi_mean_low",
            ),  # fmt: skip
            *HYBRID_PLOTS,
        ),
        columns=(("gate_hi", "actor/egspo/high_token_frac"), ("phi_lo", "actor/egspo/phi_mean_low"), *HYBRID_COLUMNS),
    )
)
