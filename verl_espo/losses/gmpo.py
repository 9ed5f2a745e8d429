"""The ``gmpo`` policy loss: GMPO (arXiv 2507.20673) averaged over the whole mini-batch.

GMPO maximises, for each response ``i``, the geometric mean of its token ratios ``r_it = pi / pi_old``, each
clipped in log space on the side the advantage's sign selects, and averages over responses::

    J = 1/G sum_i A_i exp( 1/|o_i| sum_t sgn(A_i) min(sgn(A_i) log r_it, sgn(A_i) clip(log r_it, -eps_low, eps_high)) )

The per-token clip and the geometric mean are those of veRL's ``geo_mean`` loss, with its settings
(``clip_ratio_low`` / ``clip_ratio_high`` are ``eps_low`` / ``eps_high``, bounds of the log-ratio: the ratio's clip
range is ``(e^-eps_low, e^eps_high)``) and its metrics. The mean over responses differs: ``geo_mean`` takes the
plain mean over the rows of the micro-batch it is given, and veRL's FSDP engine backpropagates each micro-batch's
loss unscaled, so a response weighs ``1 / (rows in its micro-batch)``. Here the mean goes through veRL's ``agg_loss``
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

from verl_espo.core.common import compute_dtype
from verl_espo.loss_inputs import LossSpec, register_loss_spec
from verl_espo.losses.common import clip_ratios

__all__ = ["GMPO_SPEC", "compute_policy_loss_gmpo", "gmpo_row_losses"]

#: veRL's keys only, no input from the plugin's trainer, veRL's metric names.
GMPO_SPEC = register_loss_spec(LossSpec(name="gmpo", label="GMPO"))


def gmpo_row_losses(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-response GMPO losses ``-A_i * geometric-mean ratio_i``, shape ``(B,)``, and the ``(B, T)`` bool mask of
    tokens whose log-ratio was clipped. ``A_i`` is the token mean of ``advantages`` over the response (GMPO takes a
    sequence-level advantage); an empty row's loss is 0. Padding values never reach the result."""
    dtype = compute_dtype(log_prob)
    mask = response_mask.bool()
    lengths = mask.sum(dim=-1).clamp(min=1)  # |o_i|; empty rows give 0 / 1
    log_ratio = log_prob.to(dtype) - old_log_prob.to(dtype)  # log r_it
    advantages = advantages.to(dtype)
    sign = torch.sign(advantages)  # sgn(A_i)
    clipped_log_ratio = torch.clamp(log_ratio, -clip_ratio_low, clip_ratio_high)  # clip(log r_it, -eps_low, eps_high)
    # sgn(A) min(sgn(A) log r, sgn(A) clip(log r)): the pessimistic of the two, per token
    token_log_ratio = sign * torch.minimum(sign * log_ratio, sign * clipped_log_ratio)
    mean_log_ratio = torch.where(mask, token_log_ratio, 0).sum(dim=-1) / lengths  # 1/|o_i| sum_t ...
    seq_advantage = torch.where(mask, advantages, 0).sum(dim=-1) / lengths  # A_i
    row_losses = -seq_advantage * torch.exp(mean_log_ratio)  # -A_i prod_t (...)^(1/|o_i|)
    if rollout_is_weights is not None:  # rollout correction: the geometric mean of the token weights, as geo_mean
        log_weights = torch.log(rollout_is_weights.to(dtype) + 1e-10)
        row_losses = row_losses * torch.exp(torch.where(mask, log_weights, 0).sum(dim=-1) / lengths)
    return row_losses, torch.ne(log_ratio, clipped_log_ratio) & mask


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
