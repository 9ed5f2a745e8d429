"""Reward functions with veRL's ``compute_score(data_source, solution_str, ground_truth, extra_info)`` signature.

* :mod:`verl_espo.rewards.math`: 1/0 on the boxed answer, math-verify deciding equivalence (strict toy task).
* :mod:`verl_espo.rewards.chord`: CHORD's hierarchical reward (+1 / 0 / -0.1 / -1 truncated without an answer).
* :mod:`verl_espo.rewards.manager`: the ``naive`` reward manager plus the response length in ``extra_info``.
* :mod:`verl_espo.rewards.verify` / :mod:`verl_espo.rewards.boxed`: math-verify wrapper and answer extraction.
* ``dapo_overlong.yaml``: DAPO's overlong penalty through veRL's own ``dapo`` reward manager.
"""

from verl_espo.rewards.math import compute_score

__all__ = ["compute_score"]
