"""avg@k, unbiased pass@k and the standard error over problems, against hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest

from verl_espo.evaluation import (
    avg_at_k,
    avg_at_k_per_problem,
    pass_at_k,
    pass_at_k_per_problem,
    pass_at_k_unbiased,
    standard_error,
    summarize,
)

# 3 problems x 4 samples: 2/4, 0/4, 4/4 correct
CORRECT = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]


def test_avg_at_k_by_hand():
    assert avg_at_k_per_problem(CORRECT).tolist() == [0.5, 0.0, 1.0]
    assert avg_at_k(CORRECT) == pytest.approx(0.5)
    # ragged rows: each problem's own mean, then the plain mean over problems (not over all samples)
    assert avg_at_k([[1], [0, 1, 1, 1]]) == pytest.approx((1.0 + 0.75) / 2)
    assert avg_at_k(np.array([[True, False], [True, True]])) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 2, 1, 0.5),  # pass@1 = c/n
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c < k: every 4-subset holds a correct sample
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 10, 1.0),
    ],
)
def test_pass_at_k_unbiased_by_hand(n, c, k, expected):
    assert pass_at_k_unbiased(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_subset_probability():
    """The estimator equals the fraction of k-subsets of the n samples that hold a correct one (its definition)."""
    row = [1, 0, 0, 1, 0, 0, 0]
    for k in range(1, len(row) + 1):
        subsets = list(combinations(row, k))
        assert pass_at_k_unbiased(len(row), sum(row), k) == pytest.approx(
            sum(any(s) for s in subsets) / len(subsets), abs=1e-12
        )


def test_pass_at_k_stable_for_large_n():
    """n = 1000: the product form matches the exact rational 1 - C(n-c,k)/C(n,k) to float precision."""
    for n, c, k in [(1000, 1, 1), (1000, 3, 500), (1000, 900, 50), (1000, 10, 990), (1000, 1, 999)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k_unbiased(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_k_over_problems():
    # problem 1: 1 - C(2,2)/C(4,2) = 5/6; problem 2: 0; problem 3: 1
    assert pass_at_k_per_problem(CORRECT, 2) == pytest.approx([5 / 6, 0.0, 1.0])
    assert pass_at_k(CORRECT, 2) == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert pass_at_k(CORRECT, 1) == pytest.approx(avg_at_k(CORRECT))  # pass@1 == avg@n for binary scores


def test_standard_error_by_hand():
    # per-problem scores 0.5, 0, 1: mean 0.5, sample variance ((0)^2 + 0.5^2 + 0.5^2) / 2 = 0.25, s = 0.5
    assert standard_error([0.5, 0.0, 1.0]) == pytest.approx(0.5 / math.sqrt(3))
    assert standard_error([0.3, 0.3, 0.3, 0.3]) == 0.0
    assert math.isnan(standard_error([0.7]))


def test_summarize():
    avg, p2 = summarize(CORRECT, ks=[2])
    assert (avg.metric, avg.num_problems) == ("avg@4", 3)
    assert avg.value == pytest.approx(0.5) and avg.stderr == pytest.approx(0.5 / math.sqrt(3))
    per = np.array([5 / 6, 0.0, 1.0])
    assert p2.metric == "pass@2"
    assert p2.value == pytest.approx(per.mean())
    assert p2.stderr == pytest.approx(math.sqrt(((per - per.mean()) ** 2).sum() / 2) / math.sqrt(3))
    assert str(avg) == "avg@4 = 50.0 ± 28.9 (3 problems)"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pass_at_k_unbiased(4, 2, 5), "k must be in"),
        (lambda: pass_at_k_unbiased(4, 2, 0), "k must be in"),
        (lambda: pass_at_k_unbiased(4, 5, 1), "0 <= c <= n"),
        (lambda: pass_at_k_unbiased(4.0, 2, 1), "integers"),
        (lambda: pass_at_k([[1, 0.5]], 1), "binary"),
        (lambda: pass_at_k([[1, 0], [1]], 2), "k must be in"),
        (lambda: avg_at_k([]), "empty"),
        (lambda: avg_at_k([[1], []]), r"correct\[1\] has no samples"),
        (lambda: avg_at_k([[2]]), "outside"),
        (lambda: standard_error([]), "at least one"),
    ],
)
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
