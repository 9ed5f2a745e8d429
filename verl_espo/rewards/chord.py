"""CHORD's hierarchical math reward (arXiv 2508.11408, Sec. 4.1 / App. A): the reward of the CHORD and EGSPO recipes.

==============================================  ======
response                                        reward
==============================================  ======
boxed answer equal to the ground truth          +1
boxed answer, wrong                              0
no boxed answer, response ended on its own      -0.1
no boxed answer, cut at the length limit        -1
==============================================  ======

"Correct" is :func:`verl_espo.rewards.math.boxed_verdict` (last box, math-verify). An empty ``\\boxed{}`` is not an
answer. A truncated response that does hold a boxed answer is scored by that answer, as the paper's wording ("the
length limit is hit with no final answer") implies. Trinity-RFT's released ``math_boxed_reward`` differs: it adds a
-0.1 format term when the ``<think>...</think>`` pattern is missing and has no truncation term; we follow the paper.

How truncation is known. A custom reward function receives ``data_source, solution_str, ground_truth, extra_info``;
in veRL 0.9.1 the response is decoded with ``skip_special_tokens=True`` (so a missing end-of-turn token cannot be seen
in ``solution_str``), and ``extra_info`` holds the dataset row's ``extra_info`` plus, from the ``naive`` manager,
``num_turns`` and ``rollout_reward_scores``: no response length. Run it with
:class:`verl_espo.rewards.manager.LengthAwareRewardManager`, which adds ``response_length``,
``max_response_length`` and ``truncated`` to ``extra_info``. :func:`is_truncated` reads ``truncated``, else compares
the two lengths; with neither (another manager) a response counts as not truncated, so a missing answer scores -0.1
and never -1: the config must select the length-aware manager (docs/data_and_rewards.md).
"""

from __future__ import annotations

from typing import Any

from verl_espo.rewards.math import boxed_verdict

__all__ = ["CORRECT", "WRONG", "UNFORMATTED", "TRUNCATED", "is_truncated", "hierarchical_score", "compute_score"]

CORRECT = 1.0  # boxed and right
WRONG = 0.0  # boxed and wrong
UNFORMATTED = -0.1  # no boxed answer, not truncated
TRUNCATED = -1.0  # no boxed answer, hit the length limit


def is_truncated(extra_info: dict | None) -> bool:
    """Whether the response hit the length limit, from ``extra_info`` (see the module docstring); False if unknown."""
    if not extra_info:
        return False
    if extra_info.get("truncated") is not None:
        return bool(extra_info["truncated"])
    length, limit = extra_info.get("response_length"), extra_info.get("max_response_length")
    return length is not None and limit is not None and int(length) >= int(limit)


def hierarchical_score(solution_str: str, ground_truth: str, truncated: bool) -> dict[str, Any]:
    """CHORD's reward of one response: ``{"score", "acc", "pred", "formatted", "truncated", "verify_timeout"}``."""
    boxed, verdict = boxed_verdict(solution_str, ground_truth)
    acc = verdict.match
    formatted = boxed is not None and boxed.strip() != ""
    if formatted:
        score = CORRECT if acc else WRONG
    else:
        acc = False
        score = TRUNCATED if truncated else UNFORMATTED
    return {
        "score": score,
        "acc": acc,
        "pred": boxed.strip() if formatted else "",
        "formatted": formatted,
        "truncated": bool(truncated),
        "verify_timeout": float(verdict.timed_out),
    }


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """veRL reward entry point (``reward.custom_reward_function.path=pkg://verl_espo.rewards.chord``)."""
    return hierarchical_score(solution_str, ground_truth, is_truncated(extra_info))
