"""Tensor pieces shared by the plugin's policy losses (ESPO, EGSPO, CHORD), free of veRL.

Every function works on padded ``(B, T)`` tensors with a boolean ``response_mask``; nothing loops over
rows or tokens in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PPO_LOG_RATIO_CLAMP", "PPOTokenTerms", "compute_dtype", "ppo_clip_token_terms"]

#: Symmetric clamp on ``log_prob - old_log_prob`` before ``exp``, as in veRL's ``vanilla`` loss.
PPO_LOG_RATIO_CLAMP = 20.0


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (exact reference tests), float32 stays float32; bf16/fp16 are computed in float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


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
