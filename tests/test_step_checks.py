"""What reaches the loss is checked each step (``verl_espo.trainer.step_checks``): verifier time-outs and NaN rewards
become metrics, NaN advantages are refused with the step's rows; the time-out flag travels from the math reward
through veRL's reward manager into ``reward_extra_info``, where the trainer reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verl_espo.trainer.step_checks import (
    NonFiniteAdvantageError,
    check_advantages,
    nonfinite_rows,
    verify_timeouts,
)


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.tensor(r, dtype=torch.float32) for r in rows], layout=torch.jagged)


def test_nonfinite_rows_nested_and_padded():
    rows = [[0.0, 1.0], [float("nan")], [1.0, 2.0, float("inf")], [3.0]]
    assert nonfinite_rows(_nested(rows)) == [1, 2]
    padded = torch.zeros(4, 3)
    padded[3, 1] = float("-inf")
    assert nonfinite_rows(padded) == [3]
    assert nonfinite_rows(_nested([[0.0], [1.0]])) == []


def test_verify_timeouts_counts_rollout_rows():
    fields = [{"reward_extra_info": {"verify_timeout": 1.0}}, {"reward_extra_info": {"verify_timeout": 0.0}},
              {"reward_extra_info": {"verify_timeout": 1.0}}, {}]  # fmt: skip
    assert verify_timeouts(fields, [0, 1, 2, 3]) == 2
    assert verify_timeouts(fields, [1, 3]) == 0  # row 2 is an expert row: not counted
    assert verify_timeouts([{"reward_extra_info": {"acc": 1.0}}], [0]) is None  # a reward without the key


def test_nan_reward_through_verl_grpo_is_refused_with_rows():
    """A NaN score in veRL's own GRPO estimator makes its group's advantages NaN: refused, naming the rows."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    scores = torch.zeros(6, 3)
    scores[:, -1] = torch.tensor([1.0, 0.0, 1.0, 0.0, float("nan"), 1.0])
    mask = torch.ones(6, 3)
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    advantages, _ = compute_grpo_outcome_advantage(scores, mask, index)
    keys = [f"uid{i}_0_0" for i in range(6)]
    with pytest.raises(NonFiniteAdvantageError) as info:
        check_advantages(advantages, scores, keys, step=7)
    message = str(info.value)
    assert "step 7" in message and "3 of 6 rows" in message
    assert "3 (key uid3_0_0, reward 0)" in message and "4 (key uid4_0_0, reward nan)" in message
    assert "algorithm.adv_estimator=espo_verified" in message
    check_advantages(advantages[:3], scores[:3], keys[:3], step=7)  # the finite group passes


def test_espo_verified_nan_rewards_pass():
    """``espo_verified`` turns a failed verification (NaN score) into zero advantage: nothing to refuse."""
    from verl_espo.advantages import compute_espo_verified_advantage

    scores = torch.zeros(4, 2)
    scores[:, -1] = torch.tensor([1.0, float("nan"), 0.0, 1.0])
    index = np.array(["a", "a", "a", "a"], dtype=object)
    advantages, _ = compute_espo_verified_advantage(scores, torch.ones(4, 2), index)
    check_advantages(advantages, scores, ["k"] * 4, step=1)
    assert nonfinite_rows(scores) == [1]


def test_verify_timeout_reaches_reward_extra_info_through_the_reward_manager(tmp_path, monkeypatch):
    """veRL's reward manager (loaded as the reward-loop workers load it) hands ``verify_timeout`` over in
    ``reward_extra_info``, the per-row field the trainer sums into ``reward/verify_timeouts``."""
    from test_reward_managers import _compose, _load, _score, _Tokenizer

    from verl_espo.rewards import verify

    cfg = _compose(tmp_path, None, ["reward.custom_reward_function.path=pkg://verl_espo.rewards.math",
                                    "reward.custom_reward_function.name=compute_score"])  # fmt: skip
    tokenizer = _Tokenizer()
    manager = _load(cfg, tokenizer)
    score, info = _score(manager, tokenizer, "\\boxed{7}", 3, 4)
    assert (score, info["verify_timeout"]) == (1.0, 0.0)
    monkeypatch.setattr(verify, "POOL_TIMEOUT_S", 0)  # the reward thread's check cannot finish in time
    score, info = _score(manager, tokenizer, "\\boxed{7}", 3, 4)
    assert (score, info["verify_timeout"]) == (0.0, 1.0)
    assert verify_timeouts([{"reward_extra_info": info}], [0]) == 1
