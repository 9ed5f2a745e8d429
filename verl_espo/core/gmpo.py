"""GMPO tensor math (arXiv 2507.20673), free of veRL, and :data:`GMPO_SPEC`, the declaration of the ``gmpo``
loss (:mod:`verl_espo.losses.gmpo`).

GMPO maximises, for each response ``i``, the geometric mean of its token ratios ``r_it = pi / pi_old``, each
clipped in log space on the side the advantage's sign selects, and averages over responses::

    J = 1/G sum_i A_i exp( 1/|o_i| sum_t sgn(A_i) min(sgn(A_i) log r_it, sgn(A_i) clip(log r_it, -eps_low, eps_high)) )

The per-token clip and the geometric mean are those of veRL's ``geo_mean`` loss (``clip_ratio_low`` /
``clip_ratio_high`` are ``eps_low`` / ``eps_high``, bounds of the log-ratio: the ratio's clip range is
``(e^-eps_low, e^eps_high)``).
"""

from __future__ import annotations

import torch

from verl_espo.core.common import compute_dtype
from verl_espo.loss_inputs import LossSpec, register_loss_spec

__all__ = ["GMPO_SPEC", "gmpo_row_losses"]

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
