"""Tensor pieces shared by the plugin's policy losses (ESPO, EGSPO, CHORD), free of veRL.

Every function works on padded ``(B, T)`` tensors with a boolean ``response_mask``; nothing loops over
rows or tokens in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "PPO_LOG_RATIO_CLAMP",
    "PPOTokenTerms",
    "compute_dtype",
    "masked",
    "ppo_clip_token_terms",
    "masked_ppo_token_terms",
    "ppo_metrics",
    "share",
    "to_floats",
    "with_rollout_weights",
]

#: Symmetric clamp on ``log_prob - old_log_prob`` before ``exp``, as in veRL's ``vanilla`` loss.
PPO_LOG_RATIO_CLAMP = 20.0


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (exact reference tests), float32 stays float32; bf16/fp16 are computed in float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def masked(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` in the compute dtype of the first, zeroed outside ``mask`` ("double where": inf/NaN there reach
    neither the loss nor the gradient, and valid positions keep their values exactly)."""
    dtype = compute_dtype(tensors[0])
    return tuple(torch.where(mask, t.to(dtype), 0.0) for t in tensors)


def share(count: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``count / total`` in float64, 0 where ``total`` is 0."""
    return count.double() / total.double().clamp(min=1)


def to_floats(named: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors by name as Python floats, read with a single device sync."""
    if not named:
        return {}
    values = torch.stack([v.detach().double().reshape(()) for v in named.values()]).tolist()
    return dict(zip(named, values))


@dataclass
class PPOTokenTerms:
    """veRL's ``vanilla`` PPO-clip terms per token (``core_algos.compute_policy_loss_vanilla``).

    Attributes:
        pg_losses: ``(B, T)`` per-token loss ``max(-A r, -A clip(r, 1-eps_low, 1+eps_high))``, capped at
            ``-A c`` for ``A < 0`` (dual clip); carries the gradient. Not zeroed at padding.
        clipped: ``(B, T)`` bool, the clipped branch is strictly larger (veRL's ``pg_clipfrac`` numerator).
        dual_clipped: ``(B, T)`` bool, ``A < 0`` and the dual-clip cap is active (``pg_clipfrac_lower``).
        negative: ``(B, T)`` bool, ``A < 0``.
        neg_log_ratio: ``(B, T)`` detached ``old_log_prob - log_prob`` after the clamp (``ppo_kl``).
    """

    pg_losses: torch.Tensor
    clipped: torch.Tensor
    dual_clipped: torch.Tensor
    negative: torch.Tensor
    neg_log_ratio: torch.Tensor


def ppo_clip_token_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
) -> PPOTokenTerms:
    """PPO-clip with dual clip, operation for operation as veRL's ``vanilla`` loss (so values match bit for bit
    in float32 and float64); bf16/fp16 inputs are computed in float32.

    ``r = exp(clamp(log_prob - old_log_prob, -20, 20))``;
    ``l = max(-A r, -A clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high))``; for ``A < 0``: ``min(l, -A c)``.
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c (dual-clip bound) must be > 1, got {clip_ratio_c}")
    dtype = compute_dtype(log_prob)
    log_prob, old_log_prob, advantages = log_prob.to(dtype), old_log_prob.to(dtype), advantages.to(dtype)
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-PPO_LOG_RATIO_CLAMP, max=PPO_LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    neg_adv = -advantages  # veRL negates three times; the values are the same
    losses1 = neg_adv * ratio
    losses2 = neg_adv * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    clipped_losses = torch.maximum(losses1, losses2)
    losses3 = neg_adv * clip_ratio_c
    negative = advantages < 0
    pg_losses = torch.where(negative, torch.min(losses3, clipped_losses), clipped_losses)
    with torch.no_grad():
        clipped = torch.gt(losses2, losses1)
        dual_clipped = torch.gt(clipped_losses, losses3) & negative
    return PPOTokenTerms(pg_losses, clipped, dual_clipped, negative, -log_ratio.detach())


def masked_ppo_token_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
) -> PPOTokenTerms:
    """:func:`ppo_clip_token_terms` on the tokens of ``mask``, inputs zeroed elsewhere (:func:`masked`): every term
    is exactly 0 outside ``mask`` (``A = 0`` there), so no later step needs to mask again."""
    log_prob, old_log_prob, advantages = masked(mask.bool(), log_prob, old_log_prob, advantages)
    return ppo_clip_token_terms(log_prob, old_log_prob, advantages, clip_ratio_low, clip_ratio_high, clip_ratio_c)


def ppo_metrics(ppo: PPOTokenTerms, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """veRL's ``vanilla`` metrics over the tokens of ``mask``: ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``,
    ``actor/ppo_kl`` (scalar tensors; ``ppo`` from :func:`masked_ppo_token_terms`)."""
    with torch.no_grad():
        mask = mask.bool()
        n = torch.count_nonzero(mask)
        return {
            "actor/pg_clipfrac": share(torch.count_nonzero(ppo.clipped & mask), n),
            "actor/pg_clipfrac_lower": share(torch.count_nonzero(ppo.dual_clipped & mask), n),
            "actor/ppo_kl": share(torch.where(mask, ppo.neg_log_ratio, 0.0).sum(), n),
        }


def with_rollout_weights(
    pg_losses: torch.Tensor, mask: torch.Tensor, rollout_is_weights: torch.Tensor | None
) -> torch.Tensor:
    """Token losses times veRL's rollout-correction weights (when given), zero outside ``mask``."""
    if rollout_is_weights is None:
        return pg_losses
    return torch.where(mask, pg_losses * rollout_is_weights.to(pg_losses.dtype), 0.0)
