"""Evaluation of math-reasoning runs: the papers' metrics (avg@k, unbiased pass@k, standard errors).

No veRL import: the functions work on per-sample correctness from any source (veRL's validation dumps,
a standalone vLLM evaluation, a test).
"""

from verl_espo.evaluation.metrics import (
    EvalResult,
    avg_at_k,
    avg_at_k_per_problem,
    pass_at_k,
    pass_at_k_per_problem,
    pass_at_k_unbiased,
    standard_error,
    summarize,
)

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
