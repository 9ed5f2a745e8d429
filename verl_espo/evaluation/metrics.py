"""Evaluation metrics of the math-reasoning papers: avg@k, unbiased pass@k, and their standard errors.

Pure functions on per-sample correctness (no veRL, no torch). The input everywhere is ``correct``: one row per
problem, one entry per sampled response (``True``/``1`` correct, ``False``/``0`` wrong); rows may differ in length.

- **avg@k** (ESPO paper: "avg@32"; veRL's ``val-core/<data_source>/acc/mean@k``): the mean correctness of the k
  samples of a problem, averaged over problems.
- **pass@k**: the probability that at least one of k samples is correct, estimated per problem from n >= k samples
  with the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374, Eq. 1), ``1 - C(n-c, k) / C(n, k)``, then
  averaged over problems. (veRL's ``best@k/mean`` is a bootstrap estimate of the same quantity, with replacement,
  so it is biased low for k close to n.)
- **standard error**: of the mean over problems (see :func:`standard_error`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EvalResult",
    "avg_at_k",
    "avg_at_k_per_problem",
    "pass_at_k",
    "pass_at_k_per_problem",
    "pass_at_k_unbiased",
    "standard_error",
    "summarize",
]

Correctness = Sequence[Sequence[float | bool | int]]


def _rows(correct: Correctness, name: str = "correct") -> list[np.ndarray]:
    """``correct`` as float rows; every row must be non-empty and hold values in [0, 1]."""
    if isinstance(correct, np.ndarray) and correct.ndim != 2:
        raise ValueError(f"{name} must be 2-D (problems x samples), got shape {correct.shape}")
    rows = [np.asarray(row, dtype=np.float64).reshape(-1) for row in correct]
    if not rows:
        raise ValueError(f"{name} is empty: pass one row of sample correctness per problem")
    for i, row in enumerate(rows):
        if row.size == 0:
            raise ValueError(f"{name}[{i}] has no samples: every problem needs at least one response")
        if not np.all((row >= 0.0) & (row <= 1.0)):
            raise ValueError(f"{name}[{i}] holds values outside [0, 1]: {row.tolist()}")
    return rows


def avg_at_k_per_problem(correct: Correctness) -> np.ndarray:
    """Mean correctness of each problem's samples (shape: problems)."""
    return np.array([row.mean() for row in _rows(correct)])


def avg_at_k(correct: Correctness) -> float:
    """avg@k: ``(1/m) sum_i (1/k_i) sum_j correct[i][j]`` over m problems with k_i samples each."""
    return float(avg_at_k_per_problem(correct).mean())


def pass_at_k_unbiased(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct out of ``n`` samples (Chen et al. 2021, Eq. 1).

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (the paper's numerically
    stable form: no huge binomials, no cancellation between two large numbers).
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise TypeError(f"n, c and k must be integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n] (n = {n} samples), got k={k}: sample at least k responses per problem")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_per_problem(correct: Correctness, k: int) -> np.ndarray:
    """The unbiased pass@k of each problem (shape: problems); correctness must be binary."""
    rows = _rows(correct)
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        if not np.all((row == 0.0) | (row == 1.0)):
            raise ValueError(f"pass@k needs binary correctness, but correct[{i}] = {row.tolist()}")
        out[i] = pass_at_k_unbiased(int(row.size), int(row.sum()), k)
    return out


def pass_at_k(correct: Correctness, k: int) -> float:
    """pass@k over problems: the mean of :func:`pass_at_k_unbiased` (each problem needs n >= k samples)."""
    return float(pass_at_k_per_problem(correct, k).mean())


def standard_error(per_problem: Sequence[float]) -> float:
    """Standard error of the mean over problems: ``s / sqrt(m)``, with ``s`` the sample standard deviation
    (Bessel-corrected, ``ddof=1``) of the ``m`` per-problem scores.

    It treats the problems as the sampled unit (the benchmark as a draw from a population of problems), so it
    answers "how much would the score move on another benchmark of the same size"; the spread of the k samples
    within a problem enters only through each problem's score (computing it on per-problem means is what Miller
    2024, "Adding Error Bars to Evals", arXiv 2411.00640, recommends when several answers are sampled per
    question). ``nan`` for a single problem.
    """
    values = np.asarray(per_problem, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("standard_error needs at least one per-problem score")
    if values.size == 1:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class EvalResult:
    """A benchmark score with its standard error over problems (both as fractions in [0, 1])."""

    metric: str  # e.g. "avg@32", "pass@8"
    value: float
    stderr: float
    num_problems: int

    def __str__(self) -> str:
        return f"{self.metric} = {100 * self.value:.1f} ± {100 * self.stderr:.1f} ({self.num_problems} problems)"


def summarize(correct: Correctness, ks: Sequence[int] = ()) -> list[EvalResult]:
    """avg@k over all samples, then pass@k for each ``k`` in ``ks``, each with its standard error."""
    rows = _rows(correct)
    sizes = {row.size for row in rows}
    k_label = str(sizes.pop()) if len(sizes) == 1 else "k"
    avg = avg_at_k_per_problem(rows)
    results = [EvalResult(f"avg@{k_label}", float(avg.mean()), standard_error(avg), len(rows))]
    for k in ks:
        per = pass_at_k_per_problem(rows, k)
        results.append(EvalResult(f"pass@{k}", float(per.mean()), standard_error(per), len(rows)))
    return results
