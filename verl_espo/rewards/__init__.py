"""Reward functions with veRL's ``compute_score(data_source, solution_str, ground_truth, extra_info)`` signature."""

from verl_espo.rewards.math import compute_score

__all__ = ["compute_score"]
