"""The evaluation's reward: the project's math reward, plus the benchmark and row of the scored response.

veRL's validation dump (``trainer.validation_data_dir``, ``_dump_generations`` in
``verl/trainer/ppo/v1/trainer_base.py``) writes, per response, the prompt and response text, the score and every
key the reward returns, but not the row's ``data_source`` or index (its ``uid`` is a fresh ``uuid4`` per prompt).
To turn the dump into per-problem correctness without matching prompt texts, this reward returns two more string
keys, read from the row's ``extra_info`` (written there by :mod:`verl_espo.evaluation.data`):

* :data:`BENCHMARK_KEY`: the benchmark's name, which may differ from the row's ``data_source``;
* :data:`ROW_KEY`: the row's position in its benchmark.

veRL's validation metrics skip string values (``process_validation_metrics`` in ``verl/trainer/ppo/metric_utils.py``),
so the logged metrics are those of :func:`verl_espo.rewards.math.compute_score` alone. Selected with
``reward.custom_reward_function.path=pkg://verl_espo.evaluation.reward`` (``verl_espo/config/eval_common.yaml``).
"""

from __future__ import annotations

from typing import Any

from verl_espo.rewards.math import compute_score as math_score

__all__ = ["BENCHMARK_KEY", "ROW_KEY", "compute_score"]

BENCHMARK_KEY = "eval_benchmark"
ROW_KEY = "eval_row"


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """:func:`verl_espo.rewards.math.compute_score` (``score``, ``acc``, ``pred``) plus the row's benchmark and row."""
    result = dict(math_score(data_source, solution_str, ground_truth, extra_info, **kwargs))
    info = extra_info or {}
    result[BENCHMARK_KEY] = str(info.get(BENCHMARK_KEY) or data_source)
    row = info.get(ROW_KEY)
    result[ROW_KEY] = "" if row is None else str(row)
    return result
