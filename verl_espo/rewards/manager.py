"""A veRL reward manager that tells the reward function each response's length and whether it was truncated.

veRL 0.9.1's ``naive`` manager (``verl/experimental/reward_loop/reward_manager/naive.py``) decodes the response with
``skip_special_tokens=True`` and passes no length to the reward function, so a reward that depends on truncation
(CHORD's -1, :mod:`verl_espo.rewards.chord`) cannot tell. :class:`LengthAwareRewardManager` is the ``naive`` manager
with three keys added to the ``extra_info`` it hands over:

* ``response_length``: valid (unpadded) response tokens;
* ``max_response_length``: ``actor_rollout_ref.rollout.response_length`` (the generation budget), or the width of the
  padded ``responses`` tensor if the config has none;
* ``truncated``: ``response_length >= max_response_length``, i.e. generation stopped at the budget.

Select it through veRL's ``importlib`` source (no registration needed in any process)::

    reward.reward_manager.source=importlib \\
    reward.reward_manager.name=LengthAwareRewardManager \\
    reward.reward_manager.module.path=pkg://verl_espo.rewards.manager

The row's own ``extra_info`` is copied, not modified: rollouts of one prompt share that dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

__all__ = ["LengthAwareRewardManager", "length_info"]


def length_info(data: DataProto, max_response_length: int | None = None) -> dict[str, Any]:
    """``{"response_length", "max_response_length", "truncated"}`` of the last sample of ``data``."""
    item = data[len(data) - 1]
    responses = item.batch["responses"]
    width = int(responses.shape[-1])
    length = int(item.batch["attention_mask"][-width:].sum())
    limit = int(max_response_length) if max_response_length else width
    return {"response_length": length, "max_response_length": limit, "truncated": length >= limit}


class LengthAwareRewardManager(NaiveRewardManager):
    """veRL's ``naive`` reward manager plus ``response_length``/``max_response_length``/``truncated`` in extra_info."""

    def _max_response_length(self) -> int | None:
        rollout = self.config.get("actor_rollout_ref", {}).get("rollout", {})
        return rollout.get("response_length") if rollout else None

    async def run_single(self, data: DataProto) -> dict:
        data = data[-1:]  # as the naive manager: the reward is computed on the last sequence
        old = data.non_tensor_batch.get("extra_info")
        extra_info = dict(old[0]) if old is not None and old[0] is not None else {}
        extra_info.update(length_info(data, self._max_response_length()))
        data.non_tensor_batch["extra_info"] = np.array([extra_info], dtype=object)
        return await super().run_single(data)
