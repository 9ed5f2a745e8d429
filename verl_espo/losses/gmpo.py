"""The ``gmpo`` policy loss: GMPO (arXiv 2507.20673, :mod:`verl_espo.core.gmpo`, whose ``GMPO_SPEC`` declares it)
averaged over the whole mini-batch.

The per-token clip, the geometric mean, the settings and the metrics are those of veRL's ``geo_mean`` loss. The
mean over responses differs: ``geo_mean`` takes the plain mean over the rows of the micro-batch it is given, and
veRL's FSDP engine backpropagates each micro-batch's loss unscaled, so a response weighs
``1 / (rows in its micro-batch)``. Here the mean goes through veRL's ``agg_loss``
with ``global_batch_info``, as veRL's other losses: a response weighs ``1 / (rows in the mini-batch)`` however
the mini-batch is split into micro-batches and data-parallel ranks, and the loss equals ``geo_mean`` when the
mini-batch is one micro-batch on one rank. ``loss_agg_mode`` is not used: GMPO's objective fixes it.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import verl.utils.torch_functional as verl_F
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.config import ActorConfig

from verl_espo.core.gmpo import gmpo_row_losses
from verl_espo.losses.common import clip_ratios

__all__ = ["compute_policy_loss_gmpo"]


@register_policy_loss("gmpo")  # type: ignore[arg-type]
def compute_policy_loss_gmpo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[ActorConfig] = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """GMPO policy loss with veRL's ``PolicyLossFn`` signature, normalised over the mini-batch.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(B, T)`` padded tensors, as for veRL's losses.
        loss_agg_mode: not used (GMPO averages over responses).
        config: the actor config; ``clip_ratio_low`` / ``clip_ratio_high`` (else ``clip_ratio``) bound the
            log-ratio, and ``global_batch_info`` gives the mini-batch's size and the data-parallel size.
        rollout_is_weights: optional ``(B, T)`` rollout-correction weights; their geometric mean per response
            multiplies its loss.

    Returns:
        ``(loss, metrics)`` with ``actor/pg_clipfrac`` (clipped tokens with ``A > 0``),
        ``actor/pg_clipfrac_lower`` (with ``A < 0``) and ``actor/ppo_kl``, as veRL's ``geo_mean``.
    """
    if config is None:
        raise ValueError("the gmpo policy loss needs the actor config (`config=`)")
    clip_ratio_low, clip_ratio_high = clip_ratios(config)
    row_losses, clipped = gmpo_row_losses(
        log_prob, old_log_prob, advantages, response_mask, clip_ratio_low, clip_ratio_high, rollout_is_weights
    )
    # mean over the mini-batch's responses: veRL's seq-mean of one value per row (global batch size, dp size)
    row_valid = response_mask.bool().any(dim=-1)
    loss = agg_loss(
        loss_mat=row_losses.unsqueeze(-1),
        loss_mask=row_valid.unsqueeze(-1),
        loss_agg_mode="seq-mean-token-sum",
        **config.global_batch_info,
    )

    with torch.no_grad():
        mask = response_mask.bool()
        metrics = {
            "actor/pg_clipfrac": verl_F.masked_mean((clipped & (advantages > 0)).float(), mask).item(),
            "actor/ppo_kl": verl_F.masked_mean(old_log_prob - log_prob, mask).item(),
            "actor/pg_clipfrac_lower": verl_F.masked_mean((clipped & (advantages < 0)).float(), mask).item(),
        }
    return loss, metrics
