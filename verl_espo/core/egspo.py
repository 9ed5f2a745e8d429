"""EGSPO tensor math (arXiv 2602.03309), free of veRL: the entropy gate on rollout tokens.

Only the abstract of EGSPO is public; the reading implemented here is reconstructed in ``docs/egspo.md``:

* gate: ``g_t = 1[H_t >= tau]`` on the old policy's entropy ``H_t`` (``tau`` per step, per response or fixed,
  see :mod:`verl_espo.core.entropy`);
* weight: ``w_t = g_t + (1 - g_t) * phi_scale * phi(p_t)``, ``phi(p) = p (1 - p)`` (CHORD Eq. 5), ``p_t`` the
  probability of the sampled token, detached;
* token loss: ``w_t`` times veRL's ``vanilla`` PPO token loss (clip and dual clip). The advantage keeps its
  sign in both branches (``w_t >= 0``), as the abstract requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from verl_espo.core.common import PPOTokenTerms, compute_dtype, ppo_clip_token_terms

__all__ = ["phi", "gate_weights", "EGSPOTerms", "egspo_token_terms", "egspo_metrics"]


def phi(prob: torch.Tensor) -> torch.Tensor:
    """CHORD's ``phi(p) = p (1 - p)`` (arXiv 2508.11408, Eq. 5), in [0, 1/4]."""
    return prob * (1.0 - prob)


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
        pg_losses: ``(B, T)`` ``w_t * l_t`` (times ``rollout_is_weights``), zero outside ``mask``; carries the gradient.
        weights: ``(B, T)`` detached ``w_t`` (zero outside ``mask``), or ``None`` without a gate (CHORD: ``w_t = 1``).
        high_mask: ``(B, T)`` bool, gated-high tokens (within ``mask``).
        mask: ``(B, T)`` bool, the tokens the gated loss covers (the rollout tokens).
        ppo: veRL's PPO terms before weighting (computed on inputs zeroed outside ``mask``).
    """

    pg_losses: torch.Tensor
    weights: Optional[torch.Tensor]
    high_mask: torch.Tensor
    mask: torch.Tensor
    ppo: PPOTokenTerms


def egspo_token_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    high_mask: Optional[torch.Tensor],
    *,
    phi_source: str = "old",
    phi_scale: float = 1.0,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    rollout_is_weights: torch.Tensor | None = None,
) -> EGSPOTerms:
    """The entropy-gated PPO token loss on the tokens of ``mask``.

    Args:
        log_prob, old_log_prob, advantages: ``(B, T)`` padded tensors (``log_prob`` carries the gradient).
        mask: ``(B, T)`` bool, the rollout tokens (response mask without expert rows).
        high_mask: ``(B, T)`` bool, the gate (``H_t >= tau``); ``None``: no gate, plain PPO (CHORD's RL part).
        phi_source: ``"old"`` (``exp(old_log_prob)``) or ``"current"`` (``exp(log_prob)``, detached).
        phi_scale: multiplies ``phi``.
        clip_ratio_low, clip_ratio_high, clip_ratio_c: the actor's PPO clip range and dual-clip bound.
        rollout_is_weights: optional ``(B, T)`` veRL rollout-correction weights.
    """
    if phi_source not in ("old", "current"):
        raise ValueError(f"egspo phi_source must be 'old' or 'current', got {phi_source!r}")
    mask = mask.bool()
    dtype = compute_dtype(log_prob)
    # Tokens outside ``mask`` are zeroed first ("double where"): inf/NaN in padding (or in expert rows' RL inputs)
    # reach neither the loss nor the gradient, and every later term is exactly 0 there (A = 0, and
    # phi(exp(0)) = 0), so no further masking is needed. Valid tokens keep veRL's values exactly.
    log_prob = torch.where(mask, log_prob.to(dtype), 0.0)
    old_log_prob = torch.where(mask, old_log_prob.to(dtype), 0.0)
    advantages = torch.where(mask, advantages.to(dtype), 0.0)
    ppo = ppo_clip_token_terms(log_prob, old_log_prob, advantages, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    if high_mask is None:  # no gate (CHORD's RL part): w = 1
        high, weights, pg_losses = mask, None, ppo.pg_losses
    else:
        high = high_mask.bool() & mask
        weights = gate_weights(high, old_log_prob if phi_source == "old" else log_prob, phi_scale)
        pg_losses = ppo.pg_losses * weights
    if rollout_is_weights is not None:
        pg_losses = torch.where(mask, pg_losses * rollout_is_weights.to(dtype), 0.0)
    return EGSPOTerms(pg_losses, weights, high, mask, ppo)


def egspo_metrics(terms: EGSPOTerms, prefix: str = "actor/egspo/") -> dict[str, float]:
    """Diagnostics of one (micro-)batch over its rollout tokens, read with a single device sync.

    ``high_token_frac`` (share of gated-high tokens), ``weight_mean`` (mean ``w_t``: the effective step size),
    ``phi_mean_low`` (mean ``w_t`` on low-entropy tokens), ``low_neg_adv_frac`` (share of low-entropy tokens
    with ``A < 0``), ``{high,low}/clipfrac`` and ``{high,low}/clipfrac_lower`` (PPO clip and dual clip per gate
    side); veRL's ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower`` and ``actor/ppo_kl`` over the same tokens.
    """
    with torch.no_grad():
        ppo, mask = terms.ppo, terms.mask

        def as_u8(flags: torch.Tensor) -> torch.Tensor:
            return flags.view(torch.uint8)

        # One bincount gives every count: code bits [high, clipped, dual-clipped, A < 0]; 16 = outside the mask.
        code = as_u8(terms.high_mask) | (as_u8(ppo.clipped) << 1) | (as_u8(ppo.dual_clipped) << 2)
        code = torch.where(mask, code | (as_u8(ppo.negative) << 3), 16)
        n = torch.bincount(code.reshape(-1), minlength=17)[:16].view(2, 2, 2, 2).double()  # [neg, dual, clip, high]
        n_high, n_all = n[..., 1].sum(), n.sum()
        n_low = n_all - n_high
        w_sum = terms.weights.sum().double() if terms.weights is not None else n_all

        def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a / b.clamp(min=1)

        values = torch.stack(
            [
                ratio(n_high, n_all),
                ratio(w_sum, n_all),
                ratio(w_sum - n_high, n_low),  # w = 1 on the high side
                ratio(n[1, ..., 0].sum(), n_low),
                ratio(n[:, :, 1, 1].sum(), n_high),
                ratio(n[:, :, 1, 0].sum(), n_low),
                ratio(n[:, 1, :, 1].sum(), n_high),
                ratio(n[:, 1, :, 0].sum(), n_low),
                ratio(n[:, :, 1, :].sum(), n_all),
                ratio(n[:, 1].sum(), n_all),
                ratio(ppo.neg_log_ratio.sum().double(), n_all),  # zero outside the mask
            ]
        ).tolist()
    names = (
        f"{prefix}high_token_frac",
        f"{prefix}weight_mean",
        f"{prefix}phi_mean_low",
        f"{prefix}low_neg_adv_frac",
        f"{prefix}high/clipfrac",
        f"{prefix}low/clipfrac",
        f"{prefix}high/clipfrac_lower",
        f"{prefix}low/clipfrac_lower",
        "actor/pg_clipfrac",
        "actor/pg_clipfrac_lower",
        "actor/ppo_kl",
    )
    return dict(zip(names, values))
