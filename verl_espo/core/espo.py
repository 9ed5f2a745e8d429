"""ESPO tensor math (arXiv 2512.00499, Eqs. 5-10), free of veRL.

Every function works on padded ``(B, T)`` tensors: ``B`` responses, ``T`` response positions, and a
boolean ``response_mask`` marking the valid tokens. Nothing here loops over rows or tokens in Python.

Reading of the paper (see ``docs/espo.md`` for the full discussion):

* Eq. 6/7, grouping: two groups per response, "high" = the old policy's highest-entropy tokens, "low" =
  the rest. Per-sequence scope keeps every token whose entropy ties with or exceeds the k-th largest,
  ``k = max(1, ceil(rho * L))``; batch scope uses one threshold for the whole training step.
* Eq. 10, group ratio: ``log s_g = mean_{t in g}(log_prob_t - old_log_prob_t)``, the geometric mean of the
  token ratios of the group (GSPO's ratio restricted to the group).
* Eq. 9, token ratio: ``gspo_token`` (default) ``log s_t = log_prob_t - sg(log_prob_t) + sg(log s_g)``; or
  ``literal`` (Eq. 9 as printed) ``log s_t = sg(log s_g) + log_prob_t - old_log_prob_t``. Clamped at 10.
* Eq. 8, clip: ``eps_g = alpha * mean_{t in g}(H_t) / ln|V|`` per (row, group), or a fixed range.
* Eq. 5, aggregation: a row's loss is ``sum_g (1/K) (1/n_g) sum_{t in g} l_t`` with
  ``l_t = max(-A_t s_t, -A_t clip(s_t, 1 - eps, 1 + eps))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from verl_espo.core.common import compute_dtype
from verl_espo.core.entropy import (  # noqa: F401  (re-exported: their home before EGSPO shared them)
    batch_entropy_threshold,
    high_entropy_count,
    sequence_high_entropy_mask,
    threshold_high_entropy_mask,
)

__all__ = [
    "LOG_RATIO_CLAMP",
    "GROUP_NAMES",
    "ESPOTerms",
    "high_entropy_count",
    "sequence_high_entropy_mask",
    "batch_entropy_threshold",
    "threshold_high_entropy_mask",
    "espo_token_terms",
    "espo_metrics",
]

#: Upper clamp on the log importance ratio, as in veRL's ``gspo`` loss.
LOG_RATIO_CLAMP = 10.0

#: Order of the group axis in :class:`ESPOTerms` tensors of shape ``(2, B)``.
GROUP_NAMES = ("high", "low")


@dataclass
class ESPOTerms:
    """Per-token terms of the ESPO objective and the statistics its metrics are made of.

    Group axes of size 2 follow :data:`GROUP_NAMES` (high, low).

    Attributes:
        pg_losses: ``(B, T)`` per-token loss ``l_t`` (Eq. 5 integrand, negated), zero at invalid tokens;
            carries the gradient.
        row_losses: ``(B,)`` Eq. 5 value of each response, ``sum_g (1/K) (1/n_g) sum_{t in g} l_t`` (``K``
            non-empty groups of sizes ``n_g``), zero for empty responses; carries the gradient.
        row_valid: ``(B,)`` bool, responses with at least one valid token.
        high_mask: ``(B, T)`` bool, the high-entropy group (valid tokens only).
        group_sizes: ``(2, B)`` tokens per (group, row).
        group_log_ratio: ``(2, B)`` detached ``log s_g`` per (group, row), zero for empty groups.
        group_entropy: ``(2, B)`` mean old entropy per (group, row), zero for empty groups.
        eps_low, eps_high: ``(2, B)`` clip half-widths per (group, row).
        clip_counts: ``(2, 2)`` tokens clipped, ``[group][upper, lower]``: the clipped branch of the PPO
            ``max`` is active because ``A > 0, s > 1 + eps`` (upper) or ``A < 0, s < 1 - eps`` (lower).
        lost_gradient_count: tokens whose gradient is clipped away or cut by the log-ratio clamp.
        neg_log_ratio_sum: sum of ``old_log_prob - log_prob`` over valid tokens (for ``ppo_kl``).
        num_valid: number of valid tokens.
    """

    pg_losses: torch.Tensor
    row_losses: torch.Tensor
    row_valid: torch.Tensor
    high_mask: torch.Tensor
    group_sizes: torch.Tensor
    group_log_ratio: torch.Tensor
    group_entropy: torch.Tensor
    eps_low: torch.Tensor
    eps_high: torch.Tensor
    clip_counts: torch.Tensor
    lost_gradient_count: torch.Tensor
    neg_log_ratio_sum: torch.Tensor
    num_valid: torch.Tensor


def _group_sums(values: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``(2, B)`` sums of ``values`` (zero at invalid tokens) over the high and low group of each row."""
    total = values.sum(dim=-1)
    high_sum = torch.where(high, values, 0.0).sum(dim=-1)
    return torch.stack([high_sum, total - high_sum])


def _per_token(group_values: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Broadcast ``(2, B)`` per-(group, row) values to ``(B, T)`` tokens."""
    return torch.where(high, group_values[0].unsqueeze(-1), group_values[1].unsqueeze(-1))


def espo_token_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    old_entropy: torch.Tensor,
    high_mask: torch.Tensor,
    *,
    ratio: str = "gspo_token",
    clip: str = "adaptive",
    alpha: float = 0.02,
    vocab_size: int | None = None,
    eps_min: float = 0.0,
    clip_ratio_low: float | None = None,
    clip_ratio_high: float | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> ESPOTerms:
    """Per-token ESPO terms for one (micro-)batch, given the high-entropy group ``high_mask``.

    Args:
        log_prob: ``(B, T)`` current log-probabilities (with gradient); bf16 is computed in float32.
        old_log_prob: ``(B, T)`` old-policy log-probabilities.
        advantages: ``(B, T)`` advantages (GRPO's outcome advantage broadcast to tokens, Eq. 11).
        response_mask: ``(B, T)`` valid-token mask.
        old_entropy: ``(B, T)`` old-policy entropy (Eq. 6); only used for ``clip="adaptive"``.
        high_mask: ``(B, T)`` bool, the high-entropy group (see the ``*_high_entropy_mask`` functions).
        ratio: ``"gspo_token"`` or ``"literal"`` (Eq. 9 readings).
        clip: ``"adaptive"`` (Eq. 8) or ``"fixed"`` (``[1 - clip_ratio_low, 1 + clip_ratio_high]``).
        alpha: Eq. 8 scale.
        vocab_size: ``|V|`` of Eq. 8, the model's logits dimension.
        eps_min: floor on the adaptive clip half-width (>= 0).
        rollout_is_weights: optional ``(B, T)`` multiplicative per-token weights (veRL rollout correction).
    """
    if ratio not in ("gspo_token", "literal"):
        raise ValueError(f"espo ratio must be 'gspo_token' or 'literal', got {ratio!r}")
    if clip not in ("adaptive", "fixed"):
        raise ValueError(f"espo clip must be 'adaptive' or 'fixed', got {clip!r}")
    if clip == "adaptive" and (vocab_size is None or vocab_size < 2):
        raise ValueError(f"espo clip='adaptive' needs the vocabulary size |V| >= 2, got {vocab_size!r}")
    if clip == "fixed" and (clip_ratio_low is None or clip_ratio_high is None):
        raise ValueError("espo clip='fixed' needs clip_ratio_low and clip_ratio_high")

    mask = response_mask.bool()
    dtype = compute_dtype(log_prob)  # bf16/fp16 inputs are computed in float32
    zero = torch.zeros((), dtype=dtype, device=log_prob.device)
    # Padding is zeroed first ("double where"): padded inf/NaN can reach neither the loss nor the gradient,
    # and every later per-token term is exactly zero at padding because the advantage is.
    lp = torch.where(mask, log_prob.to(dtype), zero)
    old_lp = torch.where(mask, old_log_prob.to(dtype), zero)
    adv = torch.where(mask, advantages.to(dtype), zero)
    high = high_mask.bool() & mask

    with torch.no_grad():
        n_valid = torch.count_nonzero(mask, dim=-1)
        n_high = torch.count_nonzero(high, dim=-1)
        group_sizes = torch.stack([n_high, n_valid - n_high])  # (2, B)
        denom = group_sizes.clamp(min=1).to(dtype)
        delta = lp.detach() - old_lp
        group_log_ratio = _group_sums(delta, high) / denom  # Eq. 10
        group_entropy = _group_sums(torch.where(mask, old_entropy.to(dtype), zero), high) / denom
        if clip == "adaptive":
            # Eq. 8, floored at eps_min >= 0: an entropy rounded below zero never gives a negative eps.
            eps_low = eps_high = torch.clamp(alpha * group_entropy / math.log(vocab_size), min=eps_min)
            eps_tok = _per_token(eps_high, high)
            lower, upper = 1.0 - eps_tok, 1.0 + eps_tok
        else:
            eps_low = torch.full_like(group_log_ratio, float(clip_ratio_low))
            eps_high = torch.full_like(group_log_ratio, float(clip_ratio_high))
            lower, upper = 1.0 - float(clip_ratio_low), 1.0 + float(clip_ratio_high)
        group_lr_tok = _per_token(group_log_ratio, high)

    if ratio == "gspo_token":
        log_s = lp - lp.detach() + group_lr_tok  # value: the group ratio; gradient: through the token
    else:
        log_s = group_lr_tok + (lp - old_lp)  # Eq. 9 as printed
    s = torch.exp(torch.clamp(log_s, max=LOG_RATIO_CLAMP))
    neg_adv = -adv
    pg_losses = torch.maximum(neg_adv * s, neg_adv * torch.clamp(s, min=lower, max=upper))
    if rollout_is_weights is not None:
        pg_losses = pg_losses * torch.where(mask, rollout_is_weights.to(dtype), zero)

    # Eq. 5 per response: sum over non-empty groups of (1/K) * group mean of l_t.
    num_groups = (group_sizes > 0).sum(dim=0).clamp(min=1).to(dtype)
    row_losses = (_group_sums(pg_losses, high) / denom).sum(dim=0) / num_groups

    with torch.no_grad():
        s_det = s.detach()
        up = (adv > 0) & (s_det > upper)
        down = (adv < 0) & (s_det < lower)
        up_total, down_total = torch.count_nonzero(up), torch.count_nonzero(down)
        up_high, down_high = torch.count_nonzero(up & high), torch.count_nonzero(down & high)
        clip_counts = torch.stack(
            [torch.stack([up_high, down_high]), torch.stack([up_total - up_high, down_total - down_high])]
        )  # (2 groups, 2 bounds)
        lost = torch.count_nonzero(up | down | ((log_s.detach() > LOG_RATIO_CLAMP) & mask))

    return ESPOTerms(
        pg_losses=pg_losses,
        row_losses=row_losses,
        row_valid=n_valid > 0,
        high_mask=high,
        group_sizes=group_sizes,
        group_log_ratio=group_log_ratio,
        group_entropy=group_entropy,
        eps_low=eps_low,
        eps_high=eps_high,
        clip_counts=clip_counts,
        lost_gradient_count=lost,
        neg_log_ratio_sum=-delta.sum(),
        num_valid=n_valid.sum(),
    )


def espo_metrics(terms: ESPOTerms, prefix: str = "actor/espo/") -> dict[str, float]:
    """Diagnostics of one (micro-)batch, read off :class:`ESPOTerms` with a single device sync.

    Per group ``g`` in ``high``/``low``: ``{g}/token_frac`` (share of valid tokens), ``{g}/group_size_mean``
    (tokens per non-empty group), ``{g}/clipfrac_upper`` / ``{g}/clipfrac_lower`` (share of the group's
    tokens clipped at each bound), ``{g}/eps_mean`` (mean clip half-width over non-empty groups, the upper
    one for asymmetric fixed ranges), ``{g}/entropy_mean``, ``{g}/log_ratio_abs_mean`` and
    ``{g}/log_ratio_abs_max`` (``|log s_g|``). Overall: ``num_groups_mean`` (K per non-empty row),
    ``grad_utilization`` (share of valid tokens whose gradient is neither clipped away nor clamped),
    ``actor/pg_clipfrac`` and ``actor/ppo_kl`` (veRL's names).
    """
    with torch.no_grad():
        n_valid = terms.num_valid.clamp(min=1).float()
        present = terms.group_sizes > 0  # (2, B)
        n_present = present.sum(dim=-1).clamp(min=1).float()  # (2,)
        tokens = terms.group_sizes.sum(dim=-1).float()  # (2,)
        clip_frac = terms.clip_counts.float() / tokens.clamp(min=1).unsqueeze(-1)  # (2 groups, 2 bounds)
        abs_lr = terms.group_log_ratio.abs().float()
        zero = torch.zeros((), device=abs_lr.device)

        def present_mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(present, x.float(), zero).sum(dim=-1) / n_present

        per_group = torch.stack(
            [
                tokens / n_valid,
                tokens / n_present,
                clip_frac[:, 0],
                clip_frac[:, 1],
                present_mean(terms.eps_high),
                present_mean(terms.group_entropy),
                present_mean(abs_lr),
                torch.where(present, abs_lr, zero).amax(dim=-1),
            ]
        )  # (8, 2)
        rows = present.any(dim=0)
        overall = torch.stack(
            [
                present.sum(dim=0).float().sum() / rows.sum().clamp(min=1),
                1.0 - terms.lost_gradient_count.float() / n_valid,
                terms.clip_counts.sum().float() / n_valid,
                terms.neg_log_ratio_sum.float() / n_valid,
            ]
        )
        values = torch.cat([per_group.flatten(), overall]).tolist()

    names = [
        "token_frac",
        "group_size_mean",
        "clipfrac_upper",
        "clipfrac_lower",
        "eps_mean",
        "entropy_mean",
        "log_ratio_abs_mean",
        "log_ratio_abs_max",
    ]
    metrics: dict[str, float] = {}
    for i, name in enumerate(names):
        for j, group in enumerate(GROUP_NAMES):
            metrics[f"{prefix}{group}/{name}"] = values[i * 2 + j]
    tail = values[len(names) * 2 :]
    metrics[f"{prefix}num_groups_mean"] = tail[0]
    metrics[f"{prefix}grad_utilization"] = tail[1]
    metrics["actor/pg_clipfrac"] = tail[2]
    metrics["actor/ppo_kl"] = tail[3]
    return metrics
