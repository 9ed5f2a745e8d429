"""Exact, linear-time k-th largest selection, for the step-level entropy threshold (ESPO Eq. 7, batch scope).

``espo.grouping=batch`` (and EGSPO's gate) needs, once per training step, the ``ceil(rho * N)``-th largest
of the ``N`` valid old-policy entropies: at the ESPO paper's scale (1,024 responses x 16k tokens) that is
a k of 3.4M over 17M values. ``torch.topk`` with ``k > n / 64`` already runs in expected linear time on
CPU (``std::nth_element`` in ATen's ``TopKImpl.h``), but it materialises a ``(float, int64 index)`` pair per
element plus the k selected values and indices, after a masked copy of the input: about 22 bytes per token
(358 MB at 16.8M tokens, measured by ``benchmarks/bench_threshold.py``). ``torch.kthvalue`` is a quickselect
on CPU (a copy of the values plus an int64 index per element) and, on CUDA, a radix select run by a single
thread block per slice, so neither scales better.

This module selects by **radix select on the IEEE-754 bit patterns**, the method of CUDA's ``topk``: a
float's bits, with the magnitude bits flipped for negative values, are an integer key with the same order
as the float. The key is read 16 bits at a time, most significant first; each pass makes one
65,536-bin histogram of the next 16 bits among the elements that still tie with the answer's known prefix,
and the histogram's cumulative counts from the top fix the next 16 bits of the answer and how many larger
elements came before it. bf16/fp16 need one pass, fp32 two, fp64 four. The input is streamed in chunks:
no copy of the values, no index tensor, only chunk-sized work buffers (a few MB) and the histogram.

The histogram of a pass is a sum over chunks, so the same passes distribute over data-parallel ranks with
one ``all_reduce`` of a 65,537-bin int64 histogram per pass (not implemented here: the trainer holds the
whole step's entropies).

Pure torch, free of veRL; every function runs on whatever device its input is on.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch

__all__ = ["DEFAULT_CHUNK_SIZE", "high_share_count", "kth_largest", "step_entropy_threshold"]

#: Elements processed per chunk: the work buffers are three chunk-sized integer tensors (4 MB each for fp32).
DEFAULT_CHUNK_SIZE = 1 << 20

_DIGIT_BITS = 16
_NUM_BINS = 1 << _DIGIT_BITS
_DIGIT_MASK = _NUM_BINS - 1
_HALF = 1 << (_DIGIT_BITS - 1)
_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def high_share_count(rho: float, n: int) -> int:
    """``k = max(1, ceil(rho * n))`` clamped to ``n``: the size of the high-entropy group of ``n`` tokens.

    Same arithmetic as :func:`verl_espo.core.entropy.high_entropy_count` (float64 product rounded to 9
    decimals before the ceiling, so ``rho=0.2, n=15`` gives 3, not 4), on a Python int.
    """
    product = (torch.tensor(n, dtype=torch.float64) * float(rho)).round(decimals=9)
    return max(1, min(int(math.ceil(product.item())), n))


def _bits(dtype: torch.dtype) -> int:
    if dtype not in _INT_VIEW:
        raise TypeError(f"radix selection needs a float16/bfloat16/float32/float64 tensor, got {dtype}")
    return torch.finfo(dtype).bits


def _order_keys(raw: torch.Tensor, bits: int, out: torch.Tensor) -> torch.Tensor:
    """Order-preserving integer keys of float bit patterns ``raw`` (an int view), written into ``out``.

    Non-negative floats keep their bits; negative floats keep the sign bit and flip the magnitude bits, so
    signed integer order equals float order (``-0.0`` sorts just below ``+0.0``; ``+NaN`` above ``+inf``,
    ``-NaN`` below ``-inf``).
    """
    torch.bitwise_right_shift(raw, bits - 1, out=out)  # -1 for negative floats, 0 otherwise
    out.bitwise_and_((1 << (bits - 1)) - 1)
    return out.bitwise_xor_(raw)


def _float_of_key(key: int, dtype: torch.dtype) -> float:
    """Inverse of :func:`_order_keys` for one key (the transform is an involution)."""
    raw = torch.tensor([key], dtype=_INT_VIEW[dtype])
    return float(_order_keys(raw, _bits(dtype), torch.empty_like(raw)).view(dtype).item())


@functools.lru_cache(maxsize=None)
def _infinity_bins(dtype: torch.dtype) -> tuple[int, int]:
    """The first pass's bins of ``+inf`` and ``-inf``: their keys' top 16 bits, shifted to ``[0, 65536)``."""
    bits = _bits(dtype)
    raw = torch.tensor([math.inf, -math.inf], dtype=dtype).view(_INT_VIEW[dtype])
    keys = _order_keys(raw, bits, torch.empty_like(raw)).tolist()
    return (keys[0] >> (bits - _DIGIT_BITS)) + _HALF, (keys[1] >> (bits - _DIGIT_BITS)) + _HALF


class _Histograms:
    """Streams a flat tensor in chunks and histograms one 16-bit digit of its keys per call.

    Bins ``[0, 65536)`` count the candidates by digit; bin 65536 collects what is excluded (padding, and
    keys whose higher digits differ from the known prefix), so that no masked copy is made.
    When no value has its sign bit set (entropies), the raw bits already are the keys and the key
    transform is skipped.
    """

    def __init__(self, values: torch.Tensor, mask: torch.Tensor | None, chunk_size: int):
        self.values = values.reshape(-1)
        self.mask = None if mask is None else mask.reshape(-1)
        self.dtype = values.dtype
        self.bits = _bits(values.dtype)
        self.int_dtype = _INT_VIEW[values.dtype]
        numel = self.values.numel()
        self.raw_is_key = numel == 0 or int(self.values.view(self.int_dtype).min().item()) >= 0
        size = max(1, min(int(chunk_size), numel))
        self.chunk_size = size
        digit_dtype = torch.int64 if self.bits == 64 else torch.int32
        self.key = torch.empty(size, dtype=self.int_dtype, device=values.device)
        self.digit = torch.empty(size, dtype=digit_dtype, device=values.device)
        self.excluded = torch.empty(size, dtype=digit_dtype, device=values.device)

    def __call__(self, level: int, prefix: int) -> torch.Tensor:
        """Counts of the ``level``-th digit (0 = most significant) among valid keys with high digits ``prefix``."""
        shift = self.bits - _DIGIT_BITS * (level + 1)
        counts = torch.zeros(_NUM_BINS + 1, dtype=torch.int64, device=self.values.device)
        n = self.values.numel()
        for start in range(0, n, self.chunk_size):
            stop = min(start + self.chunk_size, n)
            size = stop - start
            raw = self.values[start:stop].view(self.int_dtype)
            key = raw if self.raw_is_key else _order_keys(raw, self.bits, self.key[:size])
            digit, excluded = self.digit[:size], self.excluded[:size]
            if level == 0:
                if shift:
                    torch.bitwise_right_shift(key, shift, out=digit)
                else:
                    digit.copy_(key)  # 16-bit floats: the whole key is the digit
                digit.add_(_HALF)  # signed top digit -> bin in [0, 65536)
                if self.mask is None:
                    excluded = None
                else:
                    torch.logical_not(self.mask[start:stop], out=excluded)
            else:
                torch.bitwise_right_shift(key, shift + _DIGIT_BITS, out=excluded)
                torch.ne(excluded, prefix, out=excluded)  # 1 where the higher digits differ from the prefix
                torch.bitwise_right_shift(key, shift, out=digit)
                digit.bitwise_and_(_DIGIT_MASK)
                if self.mask is not None:  # levels > 0 only exist for 32/64-bit keys: key buffer = digit dtype
                    excluded.bitwise_or_(torch.logical_not(self.mask[start:stop], out=self.key[:size]))
            if excluded is not None:  # excluded -> the one extra bin (a 512 KB histogram stays in cache)
                digit.add_(excluded, alpha=_NUM_BINS).clamp_(max=_NUM_BINS)
            counts += torch.bincount(digit, minlength=_NUM_BINS + 1)
        if level == 0 and self.mask is not None and int(counts[_NUM_BINS]) == 0:
            self.mask = None  # every entry is valid: later passes skip the mask
        return counts[:_NUM_BINS]

    def has_nan(self) -> bool:
        """Exact NaN check of the valid values (one extra pass; only run when the histogram is ambiguous)."""
        for start in range(0, self.values.numel(), self.chunk_size):
            nan = torch.isnan(self.values[start : start + self.chunk_size])
            if self.mask is not None:
                nan.logical_and_(self.mask[start : start + self.chunk_size] != 0)
            if bool(nan.any()):
                return True
        return False


@contextlib.contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """Run the passes on one CPU thread: they are hundreds of short memory-bound ops around a serial
    ``bincount``, so extra threads gain little, and every op's parallel region waits for descheduled
    threads when the host is oversubscribed (measured on 2 shared cores: 0.1 s on one thread, 1-17 s on
    two). Process-wide setting, restored on exit."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _radix_select(hist: _Histograms, k_of_n) -> tuple[float, bool, int]:
    """Radix select: ``(k-th largest valid value, any valid NaN, n valid)`` with ``k = k_of_n(n)``.

    Returns ``(nan, True, n)`` without selecting when a valid value is NaN, ``(inf, False, 0)`` when no
    value is valid.
    """
    counts = hist(0, 0)
    n = int(counts.sum().item())
    if n == 0:
        return math.inf, False, 0
    # NaN keys lie beyond the two infinities' bins; an infinity's bin also holds the NaNs that differ from
    # it only in the lower bits (16-bit floats have none), which need the exact check.
    pos_inf, neg_inf = _infinity_bins(hist.dtype)
    if int(counts[pos_inf + 1 :].sum()) + int(counts[:neg_inf].sum()) > 0:
        return math.nan, True, n
    if hist.bits > _DIGIT_BITS and int(counts[pos_inf]) + int(counts[neg_inf]) > 0 and hist.has_nan():
        return math.nan, True, n
    k = k_of_n(n)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of valid entries), got {k}")
    prefix = 0
    for level in range(hist.bits // _DIGIT_BITS):
        if level:
            counts = hist(level, prefix)
        above = counts.flip(0).cumsum(0)  # above[j]: candidates in the top j + 1 bins
        j = int(torch.searchsorted(above, k).item())  # the first j with above[j] >= k
        if j:
            k -= int(above[j - 1].item())
        digit = _DIGIT_MASK - j
        # the answer's known high bits, as a signed integer key
        prefix = digit - _HALF if level == 0 else (prefix << _DIGIT_BITS) | digit
    return _float_of_key(prefix, hist.dtype), False, n


def kth_largest(
    values: torch.Tensor, k: int, mask: torch.Tensor | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """The k-th largest of the valid entries of ``values`` (ties counted with multiplicity), exactly.

    Equal to ``torch.topk(values[mask], k).values.min()`` for NaN-free input, in ``O(N)`` time with one
    histogram pass per 16 bits of the dtype and no copy of the input. ``values`` is a float16, bfloat16,
    float32 or float64 tensor of any shape, ``mask`` a tensor of the same number of elements (nonzero =
    valid; ``None``: all valid), ``1 <= k <=`` the number of valid entries. Raises ``ValueError`` on NaN.
    """
    if mask is not None and mask.numel() != values.numel():
        raise ValueError(f"mask has {mask.numel()} elements, values {values.numel()}")
    with _one_intra_op_thread(values.device):
        value, has_nan, n = _radix_select(_Histograms(values, mask, chunk_size), lambda n: k)
    if n == 0:
        raise ValueError(f"k must be in [1, 0] (no valid entry), got {k}")
    if has_nan:
        raise ValueError("kth_largest: the valid entries contain NaN, which has no rank")
    return value


def step_entropy_threshold(
    entropy: torch.Tensor, mask: torch.Tensor, rho: float, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """The ``ceil(rho * N)``-th largest of the ``N`` valid entropies: the step-level ESPO threshold.

    Exactly :func:`verl_espo.core.entropy.batch_entropy_threshold` (same value for every input, ties
    included: the k-th largest counted with multiplicity; ``inf`` when no token is valid; ``nan`` when a
    valid entropy is NaN, as ``topk(...).min()`` gives), in linear time and without copying the input.
    float64 input is selected in float64; bfloat16/float16/float32 in their own precision, which equals
    today's float32 result since those conversions are exact. The only possible difference is the sign of
    a zero threshold when both ``-0.0`` and ``+0.0`` tie at the k-th place (equal values; ``topk`` picks
    either). ``entropy`` and ``mask`` may have any shapes with the same number of elements.
    """
    if mask.numel() != entropy.numel():
        raise ValueError(f"mask has {mask.numel()} elements, entropy {entropy.numel()}")
    with _one_intra_op_thread(entropy.device):
        value, _, _ = _radix_select(_Histograms(entropy, mask, chunk_size), lambda n: high_share_count(rho, n))
    return value
