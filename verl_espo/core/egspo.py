"""EGSPO tensor math (arXiv 2602.03309), free of veRL: the entropy gate on rollout tokens.

Only the abstract of EGSPO is public; the reading implemented here is reconstructed in ``docs/egspo.md``:

* gate: ``g_t = 1[H_t >= tau]`` on the old policy's entropy ``H_t`` (``tau`` per step, per response or fixed,
  see :mod:`verl_espo.core.entropy`);
* weight: ``w_t = g_t + (1 - g_t) * phi_scale * phi(p_t)``, ``phi(p) = p (1 - p)`` (CHORD Eq. 5,
  :func:`verl_espo.core.chord.phi`), ``p_t`` the probability of the sampled token, detached;
* token loss: ``w_t`` times veRL's ``vanilla`` PPO token loss (clip and dual clip). The advantage keeps its
  sign in both branches (``w_t >= 0``), as the abstract requires.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from verl_espo.core.chord import phi
from verl_espo.core.common import PPOTokenTerms, compute_dtype, masked, masked_ppo_token_terms, ppo_metrics, share

__all__ = ["PHI_SOURCES", "gate_weights", "EGSPOTerms", "egspo_token_terms", "egspo_metrics"]

#: Which policy's probability ``p_t`` enters ``phi``: the old one, or the current one (detached).
PHI_SOURCES = ("old", "current")


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
