"""Entropy-based token selection shared by ESPO's grouping (arXiv 2512.00499, Eq. 7) and EGSPO's gate
(arXiv 2602.03309): the high-entropy set of a response, or of a whole training step, free of veRL.

Every function works on padded ``(B, T)`` tensors with a boolean ``response_mask``.
"""

from __future__ import annotations

import math

import torch

from verl_espo.core.common import compute_dtype

__all__ = [
    "TIE_RULES",
    "high_entropy_count",
    "sequence_high_entropy_mask",
    "batch_entropy_threshold",
    "threshold_high_entropy_mask",
]


def high_entropy_count(rho: float, num_valid: torch.Tensor) -> torch.Tensor:
    """``k = max(1, ceil(rho * L))``, robust to float noise (``rho=0.2, L=15`` gives 3, not 4).

    ``rho * L`` is computed in float64 and rounded to 9 decimals before the ceiling, so products that are
    whole numbers in decimal arithmetic stay whole. Rows with ``L = 0`` get ``k = 1`` (they select nothing).
    """
    product = (num_valid.to(torch.float64) * float(rho)).round(decimals=9)
    k = torch.ceil(product).to(torch.long)
    return torch.maximum(torch.minimum(k, num_valid.to(torch.long)), torch.ones_like(k))


#: How tokens tied with the k-th largest entropy of a response are treated by :func:`sequence_high_entropy_mask`.
TIE_RULES = ("join", "position")


def sequence_high_entropy_mask(
    entropy: torch.Tensor, response_mask: torch.Tensor, rho: float, ties: str = "join"
) -> torch.Tensor:
    """High-entropy group with per-sequence scope (Eq. 7; ``espo.grouping=sequence``).

    In a row with ``L`` valid tokens let ``h`` be the k-th largest entropy, ``k = max(1, ceil(rho * L))``.
    ``ties="join"``: the high group is every valid token with ``H >= h`` (Eq. 7's entropy *range*: tokens tied
    with the k-th all join, so a row whose entropies are all equal is a single high group).
    ``ties="position"``: every token with ``H > h``, then the earliest tokens with ``H == h`` until the group has
    exactly ``k`` tokens (bf16-rounded entropies tie often; this keeps the share at ``rho``).

    ``h`` comes from one ``topk`` over the batch, from whichever end of the rows is shorter (the k-th
    largest is the ``(L - k + 1)``-th smallest), which is far cheaper than sorting whole rows.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {list(TIE_RULES)}, got {ties!r}")
    mask = response_mask.bool()
    if rho >= 1.0:
        return mask.clone()  # k = L: every valid token ties with or exceeds the smallest
    values = entropy.to(compute_dtype(entropy))
    num_valid = mask.sum(dim=-1)
    k = high_entropy_count(rho, num_valid)
    k_small = (num_valid - k + 1).clamp(min=1)
    k_max, k_small_max = torch.stack([k.max(), k_small.max()]).tolist() if mask.numel() else (1, 1)
    if k_max <= k_small_max:
        top = torch.topk(values.masked_fill(~mask, -math.inf), int(k_max), dim=-1, largest=True, sorted=True).values
        kth = top.gather(-1, (k - 1).unsqueeze(-1))
    else:
        low = torch.topk(values.masked_fill(~mask, math.inf), int(k_small_max), dim=-1, largest=False, sorted=True)
        kth = low.values.gather(-1, (k_small - 1).unsqueeze(-1))
    if ties == "join":
        return mask & (values >= kth)
    above = mask & (values > kth)
    tied = mask & (values == kth)
    room = k - torch.count_nonzero(above, dim=-1)  # >= 1: fewer than k tokens lie strictly above the k-th
    return above | (tied & (torch.cumsum(tied.to(torch.int32), dim=-1) <= room.unsqueeze(-1)))


def batch_entropy_threshold(entropy: torch.Tensor, response_mask: torch.Tensor, rho: float) -> float:
    """The ``ceil(rho * N)``-th largest entropy among the ``N`` valid tokens (Eq. 7 with one scope per step:
    ``espo.grouping=batch``, EGSPO's ``gate=batch``).

    Computed once per training step by the trainer, over the whole step's batch, so that every micro-batch
    and data-parallel rank uses the same threshold. Ties count with multiplicity (the k-th of the valid
    values sorted in descending order); bf16/fp16/fp32 are compared in float32, float64 in float64.
    Returns ``inf`` when there is no valid token and NaN when a valid entropy is NaN. ``entropy`` and
    ``response_mask`` may have any shapes with the same number of elements. One ``torch.topk`` over the
    valid values: 0.35-0.48 s at the ESPO paper's 16.8M tokens per step on 2 lightly loaded CPU cores, a few
    seconds on oversubscribed ones (docs/performance.md).
    """
    if response_mask.numel() != entropy.numel():
        raise ValueError(f"response_mask has {response_mask.numel()} elements, entropy {entropy.numel()}")
    values = entropy.reshape(-1)[response_mask.reshape(-1).bool()].to(compute_dtype(entropy))
    if values.numel() == 0:
        return math.inf
    k = int(high_entropy_count(rho, torch.tensor(values.numel())))
    return float(torch.topk(values, k, sorted=False).values.min())


def threshold_high_entropy_mask(
    entropy: torch.Tensor, response_mask: torch.Tensor, threshold: float | torch.Tensor
) -> torch.Tensor:
    """High-entropy group of a step-level threshold: every valid token with ``H >= threshold``."""
    return response_mask.bool() & (entropy.to(compute_dtype(entropy)) >= threshold)
