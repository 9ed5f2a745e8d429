"""Radix selection (``verl_espo.core.selection``) against a float64 sort and today's ``topk`` threshold.

``topk_threshold`` below is a frozen copy of ``batch_entropy_threshold`` as it was before the switch to the
radix selection (a masked copy and ``torch.topk``), so the equality keeps meaning once
``core/entropy.py`` delegates to the new function.
"""

from __future__ import annotations

import math
import struct

import pytest
import torch

from verl_espo.core.entropy import batch_entropy_threshold, high_entropy_count
from verl_espo.core.selection import high_share_count, kth_largest, step_entropy_threshold

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
KINDS = ["entropy", "integers", "signed", "equal"]


def topk_threshold(entropy: torch.Tensor, mask: torch.Tensor, rho: float) -> float:
    """Today's definition: ``min(topk(values[mask], ceil(rho * N)))`` in float32 (float64 stays)."""
    dtype = torch.float64 if entropy.dtype == torch.float64 else torch.float32
    values = entropy.to(dtype)[mask.bool()]
    n = values.numel()
    if n == 0:
        return math.inf
    k = int(high_entropy_count(rho, torch.tensor(n)).item())
    return float(torch.topk(values, k, sorted=False).values.min().item())


def sort_kth(values: torch.Tensor, mask: torch.Tensor | None, k: int) -> float:
    """Independent reference: the k-th entry of the valid values sorted in float64, descending."""
    flat = values.reshape(-1).double()
    if mask is not None:
        flat = flat[mask.reshape(-1).bool()]
    return float(torch.sort(flat, descending=True).values[k - 1])


def tied_values(n: int, dtype: torch.dtype, g: torch.Generator, kind: str) -> torch.Tensor:
    """Inputs with many exact ties in the given dtype."""
    if kind == "entropy":  # near-zero mass plus a tail, quantised (bf16-like grid)
        x = torch.pow(10.0, torch.randn(n, generator=g, dtype=torch.float64) * 1.5 - 2.0)
        x[torch.rand(n, generator=g) < 0.1] = 0.0
        x = x.to(torch.bfloat16).double()
    elif kind == "integers":  # few distinct values, both signs
        x = torch.randint(-3, 4, (n,), generator=g).double()
    elif kind == "signed":  # both signs, bf16-quantised, with +-0.0
        x = (torch.randn(n, generator=g, dtype=torch.float64) * 4).to(torch.bfloat16).double()
        x[torch.rand(n, generator=g) < 0.05] = -0.0
    else:  # all equal
        x = torch.full((n,), 0.6931471805599453, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_threshold_equals_topk_and_sort(dtype, kind):
    g = torch.Generator().manual_seed(DTYPES.index(dtype) * len(KINDS) + KINDS.index(kind))
    for trial in range(6):
        rows, cols = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 200, (1,), generator=g))
        entropy = tied_values(rows * cols, dtype, g, kind).view(rows, cols)
        lengths = torch.randint(0, cols + 1, (rows,), generator=g)
        mask = torch.arange(cols)[None, :] < lengths[:, None]
        if trial % 3 == 1:
            mask = mask.long()  # veRL's response_mask is an integer tensor
        if trial % 4 == 2:
            mask = torch.ones_like(mask)  # the nested `.values()` case: every token valid
        n = int(mask.bool().sum())
        for rho in (0.2, 1.0, 1e-9, 0.999) if trial % 2 else (0.2, 0.5):
            chunk = [97, 1 << 20][trial % 2]  # several chunks and a partial last one, or a single chunk
            got = step_entropy_threshold(entropy, mask, rho, chunk_size=chunk)
            assert got == topk_threshold(entropy, mask, rho)
            assert got == batch_entropy_threshold(entropy, mask, rho)
            if n:
                assert got == sort_kth(entropy, mask, high_share_count(rho, n))
            else:
                assert got == math.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kth_largest_every_k(dtype):
    g = torch.Generator().manual_seed(1)
    values = tied_values(50, dtype, g, "signed")
    mask = torch.rand(50, generator=g) < 0.8
    n = int(mask.sum())
    for k in range(1, n + 1):  # k=1 is the maximum, k=N the minimum
        got = kth_largest(values, k, mask, chunk_size=16)
        assert got == sort_kth(values, mask, k)
        valid = values.double()[mask]
        assert int((valid >= got).sum()) >= k and int((valid > got).sum()) < k  # definition of the k-th largest
    assert kth_largest(values, 1) == float(values.double().max())
    assert kth_largest(values, values.numel()) == float(values.double().min())


def test_special_values():
    specials = torch.tensor(
        [math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, 1.0, -1.0], dtype=torch.float32
    )
    for k in range(1, specials.numel() + 1):
        assert kth_largest(specials, k) == sort_kth(specials, None, k)
    subnormal = torch.tensor([5e-324, 0.0, 1e-310, -5e-324], dtype=torch.float64)
    assert [kth_largest(subnormal, k) for k in range(1, 5)] == [1e-310, 5e-324, 0.0, -5e-324]
    zeros = torch.tensor([0.0, -0.0, -0.0, 0.0])
    assert step_entropy_threshold(zeros, torch.ones(4), 0.5) == 0.0  # +-0.0: equal values


def test_empty_and_no_valid_token():
    assert step_entropy_threshold(torch.empty(0), torch.empty(0, dtype=torch.bool), 0.2) == math.inf
    assert step_entropy_threshold(torch.rand(3, 5), torch.zeros(3, 5), 0.2) == math.inf
    single = torch.tensor([[0.25, 0.75]])
    assert step_entropy_threshold(single, torch.tensor([[1, 0]]), 0.2) == 0.25  # one valid token: k = 1


def test_nan():
    values = torch.tensor([0.5, float("nan"), 0.1, 0.3])
    mask = torch.tensor([1, 1, 1, 1])
    assert math.isnan(topk_threshold(values, mask, 0.2))  # today: NaN ranks first and min() propagates it
    assert math.isnan(step_entropy_threshold(values, mask, 0.2))
    padded = torch.tensor([1, 0, 1, 1])  # NaN only in padding: ignored
    assert step_entropy_threshold(values, padded, 0.5) == topk_threshold(values, padded, 0.5) == float(values[3])
    with pytest.raises(ValueError, match="NaN"):
        kth_largest(values, 2)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        assert math.isnan(step_entropy_threshold(values.to(dtype), mask, 0.2))
    # NaNs whose bits differ from an infinity only in the low 16 bits share its first-pass bin
    for bits in (0x7F800001, 0xFF800001):
        odd_nan = struct.unpack("<f", struct.pack("<I", bits))[0]
        x = torch.tensor([0.5, math.inf, odd_nan, -math.inf, 0.1])
        assert math.isnan(step_entropy_threshold(x, torch.ones(5), 0.2))
        padded = torch.tensor([1, 1, 0, 1, 1])  # only the NaN is padding: {inf, 0.5, 0.1, -inf}, k = 2
        assert step_entropy_threshold(x, padded, 0.5) == topk_threshold(x, padded, 0.5) == 0.5


def test_high_share_count_matches_high_entropy_count():
    rhos = [0.05, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.7, 0.9, 0.999, 1.0, 1e-9]
    ns = torch.arange(0, 2001)
    for rho in rhos:
        expected = high_entropy_count(rho, ns).tolist()
        assert [high_share_count(rho, int(n)) for n in ns] == expected
    assert high_share_count(0.2, 15) == 3  # float noise: 0.2 * 15 = 3.0000000000000004


def test_errors():
    with pytest.raises(ValueError, match="k must be in"):
        kth_largest(torch.rand(5), 6)
    with pytest.raises(ValueError, match="k must be in"):
        kth_largest(torch.rand(5), 0)
    with pytest.raises(ValueError, match="k must be in"):
        kth_largest(torch.rand(5), 1, torch.zeros(5))
    with pytest.raises(ValueError, match="mask has 4 elements"):
        step_entropy_threshold(torch.rand(5), torch.ones(4), 0.2)
    with pytest.raises(TypeError, match="float16/bfloat16/float32/float64"):
        kth_largest(torch.arange(5), 1)


def test_non_contiguous_input_and_mask_dtypes():
    g = torch.Generator().manual_seed(3)
    entropy = tied_values(40 * 30, torch.float32, g, "entropy").view(40, 30).t()  # non-contiguous
    mask = (torch.rand(30, 40, generator=g) < 0.7).float()  # a float mask works like `.bool()`
    assert step_entropy_threshold(entropy, mask, 0.2, chunk_size=100) == topk_threshold(entropy, mask, 0.2)


def test_thread_setting_is_restored():
    threads = torch.get_num_threads()
    step_entropy_threshold(torch.rand(100), torch.ones(100), 0.2)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="NaN"):
        kth_largest(torch.tensor([float("nan"), 1.0]), 1)
    assert torch.get_num_threads() == threads
