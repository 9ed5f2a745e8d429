"""A deliberately simple ESPO reference for the tests: float64, Python loops over rows, groups and tokens.

It shares no code with ``verl_espo``: grouping uses exact decimal arithmetic (``Fraction``) and sorting
of Python lists, the token loss is written with ``if`` instead of ``max``/``clamp`` tensors, and the
aggregation follows the paper's Eq. 5 literally. Gradients come from autograd through these loops.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def reference_high_sets(entropy, mask, rho, grouping="sequence", threshold=None, ties="join"):
    """Per row, the set of token positions in the high-entropy group (``ties``: ``join`` or ``position``);
    ``grouping="token"`` has no high group (every token is a group of its own, see :func:`reference_groups`)."""
    B, T = mask.shape
    out = []
    for i in range(B):
        idx = [t for t in range(T) if bool(mask[i, t])]
        if not idx or grouping == "token":
            out.append(set())
            continue
        if grouping == "sequence":
            k = max(1, math.ceil(Fraction(str(rho)) * len(idx)))
            if ties == "position":  # the k largest, earlier positions first among equals
                ranked = sorted(idx, key=lambda t: (-float(entropy[i, t]), t))
                out.append(set(ranked[:k]))
                continue
            h = sorted((float(entropy[i, t]) for t in idx), reverse=True)[k - 1]
        else:
            h = threshold
        out.append({t for t in idx if float(entropy[i, t]) >= h})
    return out


def reference_batch_threshold(entropy, mask, rho):
    values = sorted((float(v) for v, m in zip(entropy.flatten(), mask.flatten()) if bool(m)), reverse=True)
    if not values:
        return math.inf
    k = max(1, math.ceil(Fraction(str(rho)) * len(values)))
    return values[k - 1]


def reference_groups(idx, high, grouping):
    """The non-empty groups of one row's valid positions ``idx``: high and low, or one per token."""
    if grouping == "token":
        return [[t] for t in idx]
    return [g for g in ([t for t in idx if t in high], [t for t in idx if t not in high]) if g]


def _clip(x, lo, hi):
    if x < lo:
        return x * 0 + lo  # constant, no gradient
    if x > hi:
        return x * 0 + hi
    return x


def reference_espo(
    log_prob,
    old_log_prob,
    advantages,
    mask,
    entropy,
    *,
    rho=0.2,
    grouping="sequence",
    threshold=None,
    ties="join",
    eps_min=0.0,
    ratio="gspo_token",
    clip="adaptive",
    alpha=0.02,
    vocab_size=100,
    clip_low=0.2,
    clip_high=0.2,
    aggregation="paper",
    loss_agg_mode="token-mean",
    rollout_is_weights=None,
    global_batch_size=None,
    batch_num_tokens=None,
    dp_size=1,
    loss_scale_factor=None,
):
    """Scalar ESPO loss in float64; ``log_prob`` must require grad for gradient checks.

    ``grouping``: ``sequence``, ``batch`` (with ``threshold``) or ``token`` (every valid token its own group).
    ``loss_agg_mode`` (with ``aggregation="actor"``): veRL's ``token-mean``, ``token-sum``, ``seq-mean-token-sum``,
    ``seq-mean-token-sum-norm`` (divided by ``loss_scale_factor``, default ``T``) or ``seq-mean-token-mean``.
    """
    B, T = mask.shape
    highs = reference_high_sets(entropy, mask, rho, grouping, threshold, ties)
    row_values, token_losses, n_rows, n_tokens = [], [], 0, 0
    for i in range(B):
        idx = [t for t in range(T) if bool(mask[i, t])]
        if not idx:
            continue
        n_rows += 1
        n_tokens += len(idx)
        groups = reference_groups(idx, highs[i], grouping)
        row_value = 0.0
        row_tokens = []
        for g in groups:
            n = len(g)
            group_lr = (
                sum(float(log_prob[i, t].detach()) - float(old_log_prob[i, t]) for t in g) / n
            )  # detached, Eq. 10
            if clip == "adaptive":
                e = alpha * (sum(float(entropy[i, t]) for t in g) / n) / math.log(vocab_size)
                if e < eps_min:
                    e = eps_min
                lo, hi = 1 - e, 1 + e
            else:
                lo, hi = 1 - clip_low, 1 + clip_high
            group_sum = 0.0
            for t in g:
                if ratio == "gspo_token":
                    log_s = log_prob[i, t] - log_prob[i, t].detach() + group_lr
                else:
                    log_s = group_lr + log_prob[i, t] - float(old_log_prob[i, t])
                if float(log_s) > 10.0:
                    log_s = log_s * 0 + 10.0
                s = torch.exp(log_s)
                a = float(advantages[i, t])
                unclipped = -a * s
                clipped = -a * _clip(s, lo, hi)
                loss_t = clipped if float(clipped) > float(unclipped) else unclipped
                if rollout_is_weights is not None:
                    loss_t = loss_t * float(rollout_is_weights[i, t])
                group_sum = group_sum + loss_t
                row_tokens.append(loss_t)
            row_value = row_value + group_sum / (len(groups) * n)  # Eq. 5
        row_values.append(row_value)
        token_losses.append(row_tokens)

    seq_modes = ("seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")
    if aggregation == "paper" or loss_agg_mode in seq_modes:
        if aggregation == "paper":
            per_row = row_values
        elif loss_agg_mode == "seq-mean-token-mean":
            per_row = [sum(r) / len(r) for r in token_losses]
        else:
            per_row = [sum(r) for r in token_losses]
        denom = global_batch_size if global_batch_size is not None else n_rows
        loss = sum(per_row) / denom * dp_size
        if aggregation != "paper" and loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_scale_factor if loss_scale_factor is not None else T)
        return loss
    if loss_agg_mode == "token-mean":
        denom = batch_num_tokens if batch_num_tokens is not None else n_tokens
        return sum(sum(r) for r in token_losses) / denom * dp_size
    if loss_agg_mode == "token-sum":
        return sum(sum(r) for r in token_losses) * dp_size
    raise ValueError(loss_agg_mode)
