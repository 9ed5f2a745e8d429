"""The step-level entropy threshold (``batch_entropy_threshold``, Eq. 7 with one scope per step) against an
independent float64 sort: ties, padding, dtypes, NaN and empty input."""

from __future__ import annotations

import math

import pytest
import torch

from verl_espo.core.entropy import batch_entropy_threshold, high_entropy_count

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
KINDS = ["entropy", "integers", "signed", "equal"]


def sort_threshold(values: torch.Tensor, mask: torch.Tensor, rho: float) -> float:
    """Reference: the ``ceil(rho * N)``-th entry of the valid values sorted in float64, descending."""
    flat = values.reshape(-1).double()[mask.reshape(-1).bool()]
    if flat.numel() == 0:
        return math.inf
    k = int(high_entropy_count(rho, torch.tensor(flat.numel())))
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
def test_threshold_equals_float64_sort(dtype, kind):
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
        for rho in (0.2, 1.0, 1e-9, 0.999) if trial % 2 else (0.2, 0.5):
            got = batch_entropy_threshold(entropy, mask, rho)
            assert got == sort_threshold(entropy, mask, rho)
            if math.isfinite(got):  # the definition of the k-th largest, ties counted with multiplicity
                valid = entropy.double()[mask.bool()]
                k = int(high_entropy_count(rho, torch.tensor(valid.numel())))
                assert int((valid >= got).sum()) >= k > int((valid > got).sum())


def test_special_values():
    specials = torch.tensor(
        [math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, 1.0, -1.0], dtype=torch.float32
    )
    mask = torch.ones_like(specials)
    for rho in torch.linspace(0.01, 1.0, 23).tolist():
        assert batch_entropy_threshold(specials, mask, rho) == sort_threshold(specials, mask, rho)
    subnormal = torch.tensor([5e-324, 0.0, 1e-310, -5e-324], dtype=torch.float64)  # float64 is kept
    assert [batch_entropy_threshold(subnormal, torch.ones(4), r) for r in (0.25, 0.5, 0.75, 1.0)] == [
        1e-310, 5e-324, 0.0, -5e-324,
    ]  # fmt: skip
    assert batch_entropy_threshold(torch.tensor([0.0, -0.0, -0.0, 0.0]), torch.ones(4), 0.5) == 0.0


def test_empty_and_no_valid_token():
    assert batch_entropy_threshold(torch.empty(0), torch.empty(0, dtype=torch.bool), 0.2) == math.inf
    assert batch_entropy_threshold(torch.rand(3, 5), torch.zeros(3, 5), 0.2) == math.inf
    single = torch.tensor([[0.25, 0.75]])
    assert batch_entropy_threshold(single, torch.tensor([[1, 0]]), 0.2) == 0.25  # one valid token: k = 1


def test_nan_in_a_valid_token_gives_nan_and_in_padding_is_ignored():
    values = torch.tensor([0.5, float("nan"), 0.1, 0.3])
    for dtype in DTYPES:
        assert math.isnan(batch_entropy_threshold(values.to(dtype), torch.ones(4), 0.2))
        assert math.isnan(batch_entropy_threshold(values.to(dtype), torch.ones(4), 1.0))  # not only at k = 1
    assert batch_entropy_threshold(values, torch.tensor([1, 0, 1, 1]), 0.5) == float(values[3])


def test_shapes_and_mask_dtypes():
    g = torch.Generator().manual_seed(3)
    entropy = tied_values(40 * 30, torch.float32, g, "entropy").view(40, 30).t()  # non-contiguous
    mask = (torch.rand(30, 40, generator=g) < 0.7).float()  # a float mask works like `.bool()`
    assert batch_entropy_threshold(entropy, mask, 0.2) == sort_threshold(entropy, mask, 0.2)
    assert batch_entropy_threshold(entropy, mask.reshape(-1), 0.2) == sort_threshold(entropy, mask, 0.2)
    with pytest.raises(ValueError, match="response_mask has 4 elements"):
        batch_entropy_threshold(torch.rand(5), torch.ones(4), 0.2)
