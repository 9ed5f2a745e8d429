"""A deliberately simple float64 reference for the ``egspo`` and ``chord`` losses: Python loops over rows and tokens.

It shares no code with ``verl_espo``. It follows the definitions of ``docs/egspo.md`` literally:

* PPO token loss, veRL's ``vanilla`` (``core_algos.compute_policy_loss_vanilla``), written with ``if``:
  ``r = exp(clamp(log_prob - old_log_prob, -20, 20))``, ``l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``,
  and for ``A < 0`` ``min(l, -A c)`` (dual clip); a clamped or clipped ratio is a constant (no gradient).
* Gate (EGSPO, arXiv 2602.03309): ``batch``: ``H >=`` the ``ceil(rho N)``-th largest ``H`` of the step's ``N``
  rollout tokens; ``sequence``: per response, ``H >=`` the ``k``-th largest, ``k = max(1, ceil(rho L))``;
  ``threshold``: ``H >= threshold``. ``ceil(rho * n)`` uses exact decimal arithmetic (``Fraction``).
* Weight: ``1`` on high-entropy tokens, ``phi_scale * p (1 - p)`` (CHORD arXiv 2508.11408 Eq. 5) elsewhere, ``p`` the
  sampled token's probability under the old (or, detached, the current) policy; ``chord`` weighs every token 1.
* Aggregation of the RL part, veRL's ``agg_loss`` written out per mode (``token-mean``, ``seq-mean-token-mean``,
  ``seq-mean-token-sum``), times ``dp_size``.
* Hybrid (CHORD Eq. 3): ``(1 - mu) L_RL + mu L_SFT``; ``L_SFT`` the token mean over the mini-batch's expert tokens of
  ``-w log p`` with ``w = sg(p (1 - p))`` (SFT-phi, Eq. 6) or ``1`` (Eq. 1), times ``dp_size``. A step without any
  expert token is ``L_RL`` alone.

Gradients w.r.t. ``log_prob`` come from autograd through these loops: every detached quantity is a Python float.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

#: veRL's clamp on the log-ratio before ``exp``.
LOG_RATIO_CLAMP = 20.0


def top_share_count(rho: float, n: int) -> int:
    """``max(1, ceil(rho * n))`` with ``rho`` read as the decimal it is written as."""
    return max(1, math.ceil(Fraction(str(rho)) * n))


def valid_positions(mask, i: int) -> list[int]:
    return [t for t in range(mask.shape[1]) if bool(mask[i, t])]


def rollout_rows(mask, expert=None) -> list[int]:
    """Indices of the rows that are not expert rows."""
    return [i for i in range(mask.shape[0]) if expert is None or not bool(expert[i])]


def reference_batch_threshold(entropy, mask, rho: float, expert=None) -> float:
    """The ``ceil(rho N)``-th largest entropy over the ``N`` valid rollout tokens (``inf`` when ``N = 0``)."""
    values = []
    for i in rollout_rows(mask, expert):
        values += [float(entropy[i, t]) for t in valid_positions(mask, i)]
    if not values:
        return math.inf
    values.sort(reverse=True)
    return values[top_share_count(rho, len(values)) - 1]


def reference_high_sets(entropy, mask, gate: str, rho: float = 0.2, threshold=None, expert=None) -> dict[int, set]:
    """Per rollout row, the positions of its high-entropy tokens."""
    out = {}
    for i in rollout_rows(mask, expert):
        idx = valid_positions(mask, i)
        if gate == "sequence":
            if not idx:
                out[i] = set()
                continue
            ranked = sorted((float(entropy[i, t]) for t in idx), reverse=True)
            h = ranked[top_share_count(rho, len(idx)) - 1]
        elif gate in ("batch", "threshold"):
            h = float(threshold)
        else:
            raise ValueError(gate)
        out[i] = {t for t in idx if float(entropy[i, t]) >= h}
    return out


def reference_ppo_token_loss(log_prob_t, old_log_prob_t: float, a: float, lo: float, hi: float, c: float):
    """veRL's ``vanilla`` PPO-clip + dual-clip loss of one token (a 0-d tensor carrying the gradient)."""
    log_ratio = log_prob_t - old_log_prob_t
    if float(log_ratio.detach()) > LOG_RATIO_CLAMP:
        log_ratio = log_ratio * 0 + LOG_RATIO_CLAMP
    elif float(log_ratio.detach()) < -LOG_RATIO_CLAMP:
        log_ratio = log_ratio * 0 - LOG_RATIO_CLAMP
    ratio = torch.exp(log_ratio)
    unclipped = -a * ratio
    if float(ratio.detach()) < 1 - lo:
        clipped = unclipped * 0 + (-a * (1 - lo))
    elif float(ratio.detach()) > 1 + hi:
        clipped = unclipped * 0 + (-a * (1 + hi))
    else:
        clipped = unclipped
    loss = clipped if float(clipped.detach()) > float(unclipped.detach()) else unclipped
    if a < 0 and float(loss.detach()) > -a * c:
        loss = loss * 0 + (-a * c)
    return loss


def phi(p: float) -> float:
    return p * (1.0 - p)


def reference_weights(log_prob, old_log_prob, mask, highs, loss_mode, phi_source, phi_scale) -> dict:
    """``(i, t) -> w_t`` (Python floats) on the rollout tokens."""
    weights = {}
    for i, high in highs.items():
        for t in valid_positions(mask, i):
            if loss_mode == "chord" or t in high:
                weights[i, t] = 1.0
            else:
                lp = float(old_log_prob[i, t]) if phi_source == "old" else float(log_prob[i, t].detach())
                weights[i, t] = phi_scale * phi(math.exp(lp))
    return weights


def _aggregate(token_losses: dict[int, list], loss_agg_mode: str, n_tokens: int, n_rows: int, dp_size: int):
    """veRL's ``agg_loss`` over per-row lists of token losses with the given denominators."""
    total = 0.0
    if loss_agg_mode == "token-mean":
        for losses in token_losses.values():
            for value in losses:
                total = total + value
        return total / n_tokens * dp_size
    for losses in token_losses.values():
        if not losses:
            continue  # a row without a valid token has no sequence loss
        row = 0.0
        for value in losses:
            row = row + value
        if loss_agg_mode == "seq-mean-token-mean":
            # veRL writes ``L + 1e-8``; with a bool mask ``L`` is an integer tensor and the sum is float32: ``L``.
            row = row / len(losses)
        elif loss_agg_mode != "seq-mean-token-sum":
            raise ValueError(loss_agg_mode)
        total = total + row
    return total / n_rows * dp_size


def reference_loss(
    log_prob,
    old_log_prob,
    advantages,
    mask,
    *,
    loss_mode: str = "egspo",
    entropy=None,
    gate: str = "batch",
    rho: float = 0.2,
    threshold=None,
    phi_source: str = "old",
    phi_scale: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights=None,
    expert=None,
    mu=None,
    sft_phi: bool = True,
    counts=None,
    dp_size: int = 1,
    batch_num_tokens=None,
    global_batch_size=None,
):
    """The loss of one (micro-)batch as a float64 0-d tensor; ``log_prob`` may require grad.

    Pure RL (``expert=None``): the RL part over all rows with veRL's denominators (``batch_num_tokens`` /
    ``global_batch_size`` when given, else the batch's valid tokens / non-empty rows). Hybrid: the RL part over the
    rollout rows divided by ``counts['rollout_tokens']`` / ``counts['rollout_rows']`` (default: this batch's rollout
    tokens / rollout rows, empty rows included as the trainer counts them), the SFT part divided by
    ``counts['expert_tokens']``. ``gate=batch`` needs ``threshold`` (see :func:`reference_batch_threshold`).
    """
    highs = (
        {i: set() for i in rollout_rows(mask, expert)}
        if loss_mode == "chord"
        else reference_high_sets(entropy, mask, gate, rho, threshold, expert)
    )
    weights = reference_weights(log_prob, old_log_prob, mask, highs, loss_mode, phi_source, phi_scale)
    token_losses: dict[int, list] = {}
    for i in highs:
        token_losses[i] = []
        for t in valid_positions(mask, i):
            loss_t = reference_ppo_token_loss(
                log_prob[i, t], float(old_log_prob[i, t]), float(advantages[i, t]), clip_low, clip_high, clip_c
            )
            loss_t = loss_t * weights[i, t]
            if rollout_is_weights is not None:
                loss_t = loss_t * float(rollout_is_weights[i, t])
            token_losses[i].append(loss_t)

    if expert is None:
        n_tokens = batch_num_tokens if batch_num_tokens is not None else sum(len(v) for v in token_losses.values())
        n_rows = global_batch_size if global_batch_size is not None else sum(1 for v in token_losses.values() if v)
        return _scalar(_aggregate(token_losses, loss_agg_mode, n_tokens, n_rows, dp_size), log_prob)

    if counts is None:
        counts = reference_counts(mask, expert)
    rl = _aggregate(
        token_losses, loss_agg_mode, max(counts["rollout_tokens"], 1), max(counts["rollout_rows"], 1), dp_size
    )
    sft = 0.0
    for i in range(mask.shape[0]):
        if not bool(expert[i]):
            continue
        for t in valid_positions(mask, i):
            w = phi(math.exp(float(log_prob[i, t].detach()))) if sft_phi else 1.0
            sft = sft + (-w * log_prob[i, t])
    sft = sft / max(counts["expert_tokens"], 1) * dp_size
    loss = rl if counts["expert_tokens"] == 0 else (1.0 - mu) * rl + mu * sft
    return _scalar(loss, log_prob)


def _scalar(value, log_prob):
    """A float64 0-d tensor connected to ``log_prob`` (a batch without any token gives a zero gradient)."""
    anchor = log_prob.to(torch.float64).reshape(-1)[:0].sum()  # 0, with a grad_fn when log_prob requires grad
    return anchor + value


def reference_counts(mask, expert) -> dict[str, int]:
    """Rollout / expert token and row counts of a batch (rows without a valid token included)."""
    counts = {"rollout_tokens": 0, "rollout_rows": 0, "expert_tokens": 0, "expert_rows": 0}
    for i in range(mask.shape[0]):
        kind = "expert" if bool(expert[i]) else "rollout"
        counts[f"{kind}_rows"] += 1
        counts[f"{kind}_tokens"] += len(valid_positions(mask, i))
    return counts
