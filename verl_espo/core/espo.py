"""ESPO tensor math (arXiv 2512.00499, Eqs. 5-10), free of veRL.

Every function works on padded ``(B, T)`` tensors: ``B`` responses, ``T`` response positions, and a
boolean ``response_mask`` marking the valid tokens. Nothing here loops over rows or tokens in Python.

Reading of the paper (see ``docs/espo.md`` for the full discussion):

* Eq. 6/7, grouping: two groups per response, "high" = the old policy's highest-entropy tokens, "low" =
  the rest. Per-sequence scope keeps every token whose entropy ties with or exceeds the k-th largest,
  ``k = max(1, ceil(rho * L))``; batch scope uses one threshold for the whole training step
  (:func:`espo_token_terms`). The "w/o entropy grouping" ablation (Sec. 4.4) makes every valid token its own
  group (:func:`espo_token_grouping_terms`).
* Eq. 10, group ratio: ``log s_g = mean_{t in g}(log_prob_t - old_log_prob_t)``, the geometric mean of the
  token ratios of the group (GSPO's ratio restricted to the group).
* Eq. 9, token ratio: ``gspo_token`` (default) ``log s_t = log_prob_t - sg(log_prob_t) + sg(log s_g)``; or
  ``literal`` (Eq. 9 as printed) ``log s_t = sg(log s_g) + log_prob_t - old_log_prob_t``. Clamped at 10.
* Eq. 8, clip: ``eps_g = alpha * mean_{t in g}(H_t) / ln|V|`` per (row, group), or a fixed range.
* Eq. 5, aggregation: a row's loss is ``sum_g (1/K) (1/n_g) sum_{t in g} l_t`` with
  ``l_t = max(-A_t s_t, -A_t clip(s_t, 1 - eps, 1 + eps))``.

:data:`ESPO_SPEC` declares the ``espo`` loss (:mod:`verl_espo.losses.espo`) to the rest of the plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from verl_espo.core.common import compute_dtype, to_floats
from verl_espo.loss_inputs import LossPlot, LossSpec, StepThreshold, register_loss_spec

__all__ = [
    "ESPO_SPEC",
    "LOG_RATIO_CLAMP",
    "GROUP_NAMES",
    "TOKEN_GROUP_NAMES",
    "ESPOTerms",
    "espo_token_terms",
    "espo_token_grouping_terms",
    "espo_metrics",
]

_UPPER, _LOWER = "upper (1+eps, A>0)", "lower (1-eps, A<0)"
_HIGH = ("espo_clip_fraction", "ESPO high-entropy group", "fraction of group tokens clipped")
_LOW = ("espo_clip_fraction", "ESPO low-entropy group", "fraction of group tokens clipped")
_TOKEN = ("espo_clip_fraction", "ESPO per-token groups (grouping=token)", "fraction of tokens clipped")
_EPS = ("espo_eps", "ESPO clip half-width per group", "eps (ratio deviation)")
# fmt: off
ESPO_SPEC = register_loss_spec(
    LossSpec(
        name="espo",
        label="ESPO",
        config_blocks=("espo",),
        old_entropy=True,
        step_threshold=StepThreshold(block="espo", key="grouping"),
        plots=(
            LossPlot(*_HIGH,  "actor/espo/high/clipfrac_upper",  _UPPER),
            LossPlot(*_HIGH,  "actor/espo/high/clipfrac_lower",  _LOWER),
            LossPlot(*_LOW,   "actor/espo/low/clipfrac_upper",   _UPPER),
            LossPlot(*_LOW,   "actor/espo/low/clipfrac_lower",   _LOWER),
            LossPlot(*_EPS,   "actor/espo/high/eps_mean",        "high-entropy group"),
            LossPlot(*_EPS,   "actor/espo/low/eps_mean",         "low-entropy group"),
            LossPlot(*_TOKEN, "actor/espo/token/clipfrac_upper", _UPPER),
            LossPlot(*_TOKEN, "actor/espo/token/clipfrac_lower", _LOWER),
            LossPlot(*_EPS,   "actor/espo/token/eps_mean",       "per token (grouping=token)"),
        ),
        columns=(
            ("hi_clip+",  "actor/espo/high/clipfrac_upper"),
            ("hi_clip-",  "actor/espo/high/clipfrac_lower"),
            ("lo_clip+",  "actor/espo/low/clipfrac_upper"),
            ("lo_clip-",  "actor/espo/low/clipfrac_lower"),
            ("tok_clip+", "actor/espo/token/clipfrac_upper"),
            ("tok_clip-", "actor/espo/token/clipfrac_lower"),
        ),
    )
)
# fmt: on

#: Upper clamp on the log importance ratio, as in veRL's ``gspo`` loss.
LOG_RATIO_CLAMP = 10.0

#: Group classes of :func:`espo_token_terms`: the class axis of :class:`ESPOTerms` tensors of shape ``(2, ...)``.
GROUP_NAMES = ("high", "low")
#: The single group class of :func:`espo_token_grouping_terms` (every token is a group of its own).
TOKEN_GROUP_NAMES = ("token",)


@dataclass
class ESPOTerms:
    """Per-token terms of the ESPO objective and the statistics its metrics are made of.

    Groups come in classes (:attr:`group_names`): ``high``/``low`` (at most one group of each per response), or
    ``token`` (one group per valid token). Class axes of size ``C`` follow :attr:`group_names`.

    Attributes:
        pg_losses: ``(B, T)`` per-token loss ``l_t`` (Eq. 5 integrand, negated), zero at invalid tokens;
            carries the gradient.
        row_losses: ``(B,)`` Eq. 5 value of each response, ``sum_g (1/K) (1/n_g) sum_{t in g} l_t`` (``K``
            non-empty groups of sizes ``n_g``), zero for empty responses; carries the gradient.
        row_valid: ``(B,)`` bool, responses with at least one valid token.
        group_names: the group classes, :data:`GROUP_NAMES` or :data:`TOKEN_GROUP_NAMES`.
        high_mask: ``(B, T)`` bool, the high-entropy group (valid tokens only); ``None`` for token groups.
        group_sizes: ``(C, B)`` valid tokens per (class, row).
        group_counts: ``(C, B)`` non-empty groups per (class, row): 0 or 1 for high/low, ``L`` for ``token``.
        eps_sum: ``(C, B)`` sum over the non-empty groups of their clip half-width (the upper one for
            asymmetric fixed ranges).
        entropy_sum: ``(C, B)`` sum over the non-empty groups of their mean old entropy.
        abs_log_ratio_sum, abs_log_ratio_max: ``(C, B)`` sum and maximum over the non-empty groups of the
            detached ``|log s_g|`` (Eq. 10), zero where there is none.
        clip_counts: ``(C, 2)`` tokens clipped, ``[class][upper, lower]``: the clipped branch of the PPO
            ``max`` is active because ``A > 0, s > 1 + eps`` (upper) or ``A < 0, s < 1 - eps`` (lower).
        lost_gradient_count: tokens whose gradient is clipped away or cut by the log-ratio clamp.
        neg_log_ratio_sum: sum of ``old_log_prob - log_prob`` over valid tokens (for ``ppo_kl``).
        num_valid: number of valid tokens.
    """

    pg_losses: torch.Tensor
    row_losses: torch.Tensor
    row_valid: torch.Tensor
    group_names: tuple[str, ...]
    high_mask: Optional[torch.Tensor]
    group_sizes: torch.Tensor
    group_counts: torch.Tensor
    eps_sum: torch.Tensor
    entropy_sum: torch.Tensor
    abs_log_ratio_sum: torch.Tensor
    abs_log_ratio_max: torch.Tensor
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


def _amax_last(values: torch.Tensor) -> torch.Tensor:
    """Maximum over the last axis of non-negative values, 0 where that axis is empty."""
    return values.amax(dim=-1) if values.shape[-1] else values.new_zeros(values.shape[:-1])


def _check_options(
    ratio: str, clip: str, vocab_size: int | None, clip_ratio_low: float | None, clip_ratio_high: float | None
) -> None:
    if ratio not in ("gspo_token", "literal"):
        raise ValueError(f"espo ratio must be 'gspo_token' or 'literal', got {ratio!r}")
    if clip not in ("adaptive", "fixed"):
        raise ValueError(f"espo clip must be 'adaptive' or 'fixed', got {clip!r}")
    if clip == "adaptive" and (vocab_size is None or vocab_size < 2):
        raise ValueError(f"espo clip='adaptive' needs the vocabulary size |V| >= 2, got {vocab_size!r}")
    if clip == "fixed" and (clip_ratio_low is None or clip_ratio_high is None):
        raise ValueError("espo clip='fixed' needs clip_ratio_low and clip_ratio_high")


def _masked_inputs(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mask, zero, lp, old_lp, adv)`` in the compute dtype (bf16/fp16 -> float32), zeroed at padding.

    Padding is zeroed first ("double where"): padded inf/NaN can reach neither the loss nor the gradient, and
    every later per-token term is exactly zero at padding because the advantage is.
    """
    mask = response_mask.bool()
    dtype = compute_dtype(log_prob)
    zero = torch.zeros((), dtype=dtype, device=log_prob.device)
    lp = torch.where(mask, log_prob.to(dtype), zero)
    old_lp = torch.where(mask, old_log_prob.to(dtype), zero)
    adv = torch.where(mask, advantages.to(dtype), zero)
    return mask, zero, lp, old_lp, adv


def _adaptive_eps(mean_entropy: torch.Tensor, alpha: float, vocab_size: int, eps_min: float) -> torch.Tensor:
    """Eq. 8, floored at ``eps_min >= 0``: an entropy rounded below zero never gives a negative eps."""
    return torch.clamp(alpha * mean_entropy / math.log(vocab_size), min=eps_min)


@dataclass
class _ClippedTokens:
    pg_losses: torch.Tensor  # (B, T), with gradient, zero at padding
    up: torch.Tensor  # (B, T) bool, clipped at 1 + eps with A > 0
    down: torch.Tensor  # (B, T) bool, clipped at 1 - eps with A < 0
    lost: torch.Tensor  # () tokens whose gradient is clipped away or cut by the clamp


def _clipped_token_losses(
    lp: torch.Tensor,
    old_lp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    zero: torch.Tensor,
    group_lr_tok: torch.Tensor,
    lower: torch.Tensor | float,
    upper: torch.Tensor | float,
    ratio: str,
    rollout_is_weights: torch.Tensor | None,
) -> _ClippedTokens:
    """Eq. 9 token ratio from the detached per-token group log-ratio, and Eq. 5's clipped integrand."""
    if ratio == "gspo_token":
        log_s = lp - lp.detach() + group_lr_tok  # value: the group ratio; gradient: through the token
    else:
        log_s = group_lr_tok + (lp - old_lp)  # Eq. 9 as printed
    s = torch.exp(torch.clamp(log_s, max=LOG_RATIO_CLAMP))
    neg_adv = -adv
    pg_losses = torch.maximum(neg_adv * s, neg_adv * torch.clamp(s, min=lower, max=upper))
    if rollout_is_weights is not None:
        pg_losses = pg_losses * torch.where(mask, rollout_is_weights.to(lp.dtype), zero)
    with torch.no_grad():
        s_det = s.detach()
        up = (adv > 0) & (s_det > upper)
        down = (adv < 0) & (s_det < lower)
        lost = torch.count_nonzero(up | down | ((log_s.detach() > LOG_RATIO_CLAMP) & mask))
    return _ClippedTokens(pg_losses, up, down, lost)


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
    _check_options(ratio, clip, vocab_size, clip_ratio_low, clip_ratio_high)
    mask, zero, lp, old_lp, adv = _masked_inputs(log_prob, old_log_prob, advantages, response_mask)
    high = high_mask.bool() & mask

    with torch.no_grad():
        n_valid = torch.count_nonzero(mask, dim=-1)
        n_high = torch.count_nonzero(high, dim=-1)
        group_sizes = torch.stack([n_high, n_valid - n_high])  # (2, B)
        present = group_sizes > 0
        denom = group_sizes.clamp(min=1).to(lp.dtype)
        delta = lp.detach() - old_lp
        group_log_ratio = _group_sums(delta, high) / denom  # Eq. 10
        group_entropy = _group_sums(torch.where(mask, old_entropy.to(lp.dtype), zero), high) / denom
        if clip == "adaptive":
            eps = _adaptive_eps(group_entropy, alpha, vocab_size, eps_min)  # (2, B), Eq. 8
            eps_tok = _per_token(eps, high)
            lower, upper = 1.0 - eps_tok, 1.0 + eps_tok
        else:
            eps = torch.full_like(group_log_ratio, float(clip_ratio_high))
            lower, upper = 1.0 - float(clip_ratio_low), 1.0 + float(clip_ratio_high)
        group_lr_tok = _per_token(group_log_ratio, high)

    tok = _clipped_token_losses(lp, old_lp, adv, mask, zero, group_lr_tok, lower, upper, ratio, rollout_is_weights)

    # Eq. 5 per response: sum over non-empty groups of (1/K) * group mean of l_t.
    num_groups = present.sum(dim=0).clamp(min=1).to(lp.dtype)
    row_losses = (_group_sums(tok.pg_losses, high) / denom).sum(dim=0) / num_groups

    with torch.no_grad():
        up_total, down_total = torch.count_nonzero(tok.up), torch.count_nonzero(tok.down)
        up_high, down_high = torch.count_nonzero(tok.up & high), torch.count_nonzero(tok.down & high)
        clip_counts = torch.stack(
            [torch.stack([up_high, down_high]), torch.stack([up_total - up_high, down_total - down_high])]
        )  # (2 groups, 2 bounds)
        abs_lr = torch.where(present, group_log_ratio.abs(), zero)

    return ESPOTerms(
        pg_losses=tok.pg_losses,
        row_losses=row_losses,
        row_valid=n_valid > 0,
        group_names=GROUP_NAMES,
        high_mask=high,
        group_sizes=group_sizes,
        group_counts=present.to(torch.long),
        eps_sum=torch.where(present, eps, zero),
        entropy_sum=group_entropy,  # zero for empty groups
        abs_log_ratio_sum=abs_lr,
        abs_log_ratio_max=abs_lr,
        clip_counts=clip_counts,
        lost_gradient_count=tok.lost,
        neg_log_ratio_sum=-delta.sum(),
        num_valid=n_valid.sum(),
    )


def espo_token_grouping_terms(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    old_entropy: torch.Tensor,
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
    """ESPO with every valid token its own group: the token-level reading of "w/o entropy grouping" (Sec. 4.4).

    Eqs. 5-10 with one-token groups: Eq. 10's geometric mean over one token is the token's ratio,
    ``log s_g = log_prob_t - old_log_prob_t`` (so ``gspo_token`` is the plain token ratio ``r_t`` in value and
    gradient, ``literal`` is ``r_t^2``); Eq. 8 gives ``eps_t = max(alpha * H_t / ln|V|, eps_min)`` from the
    token's own old entropy; Eq. 5 with ``n_g = 1`` and ``K = L`` weighs every token ``1/L`` (a
    seq-mean-token-mean of ``l_t``). Arguments and result as :func:`espo_token_terms`, without ``high_mask``;
    the result has one group class, ``token``.
    """
    _check_options(ratio, clip, vocab_size, clip_ratio_low, clip_ratio_high)
    mask, zero, lp, old_lp, adv = _masked_inputs(log_prob, old_log_prob, advantages, response_mask)

    with torch.no_grad():
        n_valid = torch.count_nonzero(mask, dim=-1)
        delta = lp.detach() - old_lp  # Eq. 10 over a one-token group, zero at padding
        entropy = torch.where(mask, old_entropy.to(lp.dtype), zero)
        if clip == "adaptive":
            eps_tok = _adaptive_eps(entropy, alpha, vocab_size, eps_min)  # Eq. 8 per token
            lower, upper = 1.0 - eps_tok, 1.0 + eps_tok
            eps_sum = torch.where(mask, eps_tok, zero).sum(dim=-1)
        else:
            lower, upper = 1.0 - float(clip_ratio_low), 1.0 + float(clip_ratio_high)
            eps_sum = n_valid.to(lp.dtype) * float(clip_ratio_high)

    tok = _clipped_token_losses(lp, old_lp, adv, mask, zero, delta, lower, upper, ratio, rollout_is_weights)

    # Eq. 5 with K = L one-token groups: (1/L) sum_t l_t (zero for empty responses).
    row_losses = tok.pg_losses.sum(dim=-1) / n_valid.clamp(min=1).to(lp.dtype)

    with torch.no_grad():
        abs_delta = delta.abs()
        clip_counts = torch.stack([torch.count_nonzero(tok.up), torch.count_nonzero(tok.down)]).unsqueeze(0)

    return ESPOTerms(
        pg_losses=tok.pg_losses,
        row_losses=row_losses,
        row_valid=n_valid > 0,
        group_names=TOKEN_GROUP_NAMES,
        high_mask=None,
        group_sizes=n_valid.unsqueeze(0),
        group_counts=n_valid.unsqueeze(0),
        eps_sum=eps_sum.unsqueeze(0),
        entropy_sum=entropy.sum(dim=-1).unsqueeze(0),
        abs_log_ratio_sum=abs_delta.sum(dim=-1).unsqueeze(0),
        abs_log_ratio_max=_amax_last(abs_delta).unsqueeze(0),
        clip_counts=clip_counts,
        lost_gradient_count=tok.lost,
        neg_log_ratio_sum=-delta.sum(),
        num_valid=n_valid.sum(),
    )


def espo_metrics(terms: ESPOTerms, prefix: str = "actor/espo/") -> dict[str, float]:
    """Diagnostics of one (micro-)batch, read off :class:`ESPOTerms` with a single device sync.

    Per group class ``g`` (``high``/``low``, or ``token``): ``{g}/clipfrac_upper`` / ``{g}/clipfrac_lower``
    (share of the class's tokens clipped at each bound), ``{g}/eps_mean`` (mean clip half-width over non-empty
    groups, the upper one for asymmetric fixed ranges), ``{g}/entropy_mean`` (mean over non-empty groups of
    their mean old entropy), ``{g}/log_ratio_abs_mean`` and ``{g}/log_ratio_abs_max`` (``|log s_g|``); with
    several classes also ``{g}/token_frac`` (share of valid tokens) and ``{g}/group_size_mean`` (tokens per
    non-empty group). Overall: ``num_groups_mean`` (non-empty groups per non-empty row: ``K``, or the mean
    ``L`` for token groups), ``grad_utilization`` (share of valid tokens whose gradient is neither clipped
    away nor clamped), ``actor/pg_clipfrac`` and ``actor/ppo_kl`` (veRL's names).
    """
    with torch.no_grad():
        n_valid = terms.num_valid.clamp(min=1).float()
        groups = terms.group_counts.sum(dim=-1).float()  # (C,) non-empty groups per class
        n_groups = groups.clamp(min=1)
        tokens = terms.group_sizes.sum(dim=-1).float()  # (C,)
        clip_frac = terms.clip_counts.float() / tokens.clamp(min=1).unsqueeze(-1)  # (C classes, 2 bounds)
        per_class: dict[str, torch.Tensor] = {}
        if len(terms.group_names) > 1:  # both are 1 for token groups
            per_class.update(token_frac=tokens / n_valid, group_size_mean=tokens / n_groups)
        per_class.update(
            clipfrac_upper=clip_frac[:, 0],
            clipfrac_lower=clip_frac[:, 1],
            eps_mean=terms.eps_sum.float().sum(dim=-1) / n_groups,
            entropy_mean=terms.entropy_sum.float().sum(dim=-1) / n_groups,
            log_ratio_abs_mean=terms.abs_log_ratio_sum.float().sum(dim=-1) / n_groups,
            log_ratio_abs_max=_amax_last(terms.abs_log_ratio_max.float()),
        )
        named = {
            f"{prefix}{group}/{name}": values[j]
            for name, values in per_class.items()
            for j, group in enumerate(terms.group_names)
        }
        named[f"{prefix}num_groups_mean"] = groups.sum() / terms.row_valid.sum().clamp(min=1)
        named[f"{prefix}grad_utilization"] = 1.0 - terms.lost_gradient_count.float() / n_valid
        named["actor/pg_clipfrac"] = terms.clip_counts.sum().float() / n_valid
        named["actor/ppo_kl"] = terms.neg_log_ratio_sum.float() / n_valid
        return to_floats(named)
