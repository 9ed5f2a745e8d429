"""The pieces of hybrid SFT + RL training that run in the trainer process: expert demonstrations, expert rows,
step-level statistics, and the plugin's advantage estimators (against veRL's ``grpo``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import verl  # noqa: F401
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from verl_espo.advantages import EXPERT_UID_PREFIX
from verl_espo.core.entropy import batch_entropy_threshold
from verl_espo.toy.assets import build_tokenizer
from verl_espo.toy.task import write_expert_dataset
from verl_espo.trainer.expert_data import ExpertDataConfig, ExpertDemonstrations, expert_row
from verl_espo.trainer.sync import _flat_tokens, hybrid_counts, step_threshold_ratio


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def expert_file(tmp_path_factory):
    expert, _ = write_expert_dataset(tmp_path_factory.mktemp("expert"), n=10, seed=3)
    return str(expert)


def demos(tokenizer, files, **kw):
    config = ExpertDataConfig(files=files, batch_size=kw.pop("batch_size", 4), seed=kw.pop("seed", 0), **kw)
    return ExpertDemonstrations(config, tokenizer, max_prompt_length=16, max_response_length=16)


def test_expert_order_is_deterministic_and_covers_every_row_each_pass(tokenizer, expert_file):
    a, b = demos(tokenizer, expert_file), demos(tokenizer, expert_file)
    steps = [a.indices_for_step(s) for s in range(1, 6)]  # 20 draws over 10 rows: two full passes
    assert steps == [b.indices_for_step(s) for s in range(1, 6)]  # a resumed run draws the same rows
    flat = [i for step in steps for i in step]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # a fresh permutation each pass
    assert demos(tokenizer, expert_file, seed=1).indices_for_step(1) != steps[0]


def test_expert_samples_tokenise_prompt_like_the_rollout_and_end_their_turn(tokenizer, expert_file):
    data = demos(tokenizer, expert_file)
    sample = data.samples_for_step(1)[0]
    row = data.rows[data.indices_for_step(1)[0]]
    text = tokenizer.apply_chat_template([dict(m) for m in row["prompt"]], add_generation_prompt=True, tokenize=False)
    assert sample.prompt_ids == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(sample.response_ids[:-1]) == row["extra_info"]["expert_response"]
    assert sample.response_ids[-1] == tokenizer.eos_token_id


def test_expert_responses_are_truncated_and_long_prompts_skipped(tokenizer, expert_file):
    config = ExpertDataConfig(files=expert_file, batch_size=10)
    short = ExpertDemonstrations(config, tokenizer, max_prompt_length=16, max_response_length=3)
    assert all(len(s.response_ids) == 3 for s in short.samples_for_step(1)) and short.truncated == 10
    none = ExpertDemonstrations(config, tokenizer, max_prompt_length=2, max_response_length=16)
    assert none.samples_for_step(1) == []


def test_expert_file_errors_name_the_key(tokenizer, tmp_path, expert_file):
    frame = pd.read_parquet(expert_file)
    frame["extra_info"] = [{"split": "x"} for _ in range(len(frame))]
    bad = tmp_path / "no_response.parquet"
    frame.to_parquet(bad)
    with pytest.raises(ValueError, match=r"no row has an expert response .*data.expert.response_key"):
        demos(tokenizer, str(bad))
    # a top-level column works as well as extra_info
    frame["answer_text"] = [r"\boxed{1}"] * len(frame)
    frame.to_parquet(bad)
    assert len(demos(tokenizer, str(bad), response_key="answer_text")) == len(frame)
    with pytest.raises(ValueError, match="data.expert.files must be null, a path or a list of paths"):
        ExpertDataConfig(files=[""])


def test_sft_messages_files_serve_the_same_demonstrations(tokenizer, tmp_path):
    expert, sft = write_expert_dataset(tmp_path, n=6, seed=5)
    from_rl, from_sft = demos(tokenizer, str(expert)), demos(tokenizer, str(sft))
    for a, b in zip(from_rl.samples_for_step(1), from_sft.samples_for_step(1)):
        assert (a.prompt_ids, a.response_ids, a.raw_prompt) == (b.prompt_ids, b.response_ids, b.raw_prompt)


def test_expert_row_replaces_the_response_and_keeps_every_template_field(tokenizer, expert_file):
    sample = demos(tokenizer, expert_file).samples_for_step(1)[0]
    template = {
        "prompts": torch.tensor([1, 2]), "responses": torch.tensor([3]), "input_ids": torch.tensor([1, 2, 3]),
        "attention_mask": torch.ones(3), "position_ids": torch.arange(3), "response_mask": torch.ones(1),
        "loss_mask": torch.ones(1), "rm_scores": torch.ones(1), "rollout_log_probs": torch.ones(1), "uid": "u",
        "session_id": 5, "raw_prompt": [{"role": "user", "content": "?"}], "data_source": "other", "num_turns": 2,
        "agent_name": "single_turn_agent", "is_expert": torch.zeros(1, dtype=torch.int64),
    }  # fmt: skip
    row = expert_row(template, sample, "expert-3-0")
    assert set(row) == set(template)
    n_p, n_r = len(sample.prompt_ids), len(sample.response_ids)
    assert row["input_ids"].tolist() == sample.prompt_ids + sample.response_ids
    assert row["position_ids"].tolist() == list(range(n_p + n_r))
    assert row["response_mask"].tolist() == [1] * n_r and row["loss_mask"].tolist() == [1] * n_r
    assert row["rm_scores"].tolist() == [0.0] * n_r and row["rollout_log_probs"].shape == (n_r,)
    assert row["is_expert"].tolist() == [1] and row["uid"] == "expert-3-0" and row["session_id"] == 0
    assert row["raw_prompt"] == sample.raw_prompt and row["data_source"] == "toy_arithmetic"
    assert row["agent_name"] == "single_turn_agent"


def test_flat_tokens_of_nested_and_padded_fields():
    nested = torch.nested.as_nested_tensor([torch.tensor([1.0, 2.0]), torch.tensor([3.0]), torch.tensor([4.0, 5, 6])],
                                           layout=torch.jagged)  # fmt: skip
    values, rows = _flat_tokens(nested)
    assert values.tolist() == [1, 2, 3, 4, 5, 6] and rows.tolist() == [0, 0, 1, 2, 2, 2]
    values, rows = _flat_tokens(torch.arange(6.0).reshape(2, 3))
    assert values.tolist() == list(range(6)) and rows.tolist() == [0, 0, 0, 1, 1, 1]


def test_hybrid_counts_count_padding_rows_as_rollout_rows():
    counts = hybrid_counts(torch.tensor([3, 0, 5, 2]), torch.tensor([[0], [0], [1], [0]]))
    assert counts == {"rollout_tokens": 5, "rollout_rows": 3, "expert_tokens": 5, "expert_rows": 1}


def test_step_threshold_ratio_follows_the_loss_and_its_batch_setting():
    assert step_threshold_ratio({"loss_mode": "vanilla"}) is None
    assert step_threshold_ratio({"loss_mode": "chord"}) is None
    assert step_threshold_ratio({"loss_mode": "espo", "espo": {"grouping": "sequence"}}) is None
    assert step_threshold_ratio({"loss_mode": "espo", "espo": {"grouping": "batch", "high_entropy_ratio": 0.4}}) == 0.4
    assert step_threshold_ratio({"loss_mode": "egspo", "egspo": {"gate": "batch", "high_entropy_ratio": 0.1}}) == 0.1
    assert step_threshold_ratio({"loss_mode": "egspo", "egspo": {"gate": "threshold"}}) is None


def test_step_threshold_excludes_expert_tokens():
    # The trainer's selection: rollout tokens only (expert entropies are all larger here and must not count).
    entropy = torch.nested.as_nested_tensor(
        [torch.tensor([0.1, 0.9, 0.5]), torch.tensor([5.0, 6.0]), torch.tensor([0.3, 0.7])], layout=torch.jagged
    )
    values, rows = _flat_tokens(entropy)
    expert = torch.tensor([False, True, False])
    rollout = ~expert[rows]
    threshold = batch_entropy_threshold(values[rollout], torch.ones(int(rollout.sum()), dtype=torch.bool), 0.4)
    assert threshold == pytest.approx(0.7)  # ceil(0.4 * 5) = 2nd largest of {0.1, 0.9, 0.5, 0.3, 0.7}


def _rewards(scores: list[float], length: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = torch.zeros(len(scores), length)
    rewards[:, -1] = torch.tensor(scores)
    return rewards, torch.ones(len(scores), length)


def test_hybrid_grpo_equals_grpo_without_expert_rows_and_zeroes_expert_rows():
    fn = get_adv_estimator_fn("hybrid_grpo")
    rewards, mask = _rewards([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    got, returns = fn(token_level_rewards=rewards, response_mask=mask, index=index, config={})
    assert torch.equal(got, expected) and torch.equal(returns, expected)

    experts = np.array([f"{EXPERT_UID_PREFIX}1-0", f"{EXPERT_UID_PREFIX}1-1"], dtype=object)
    mixed_rewards = torch.cat([rewards, torch.full((2, 4), 7.0)])  # expert rewards must not matter
    got, _ = fn(
        token_level_rewards=mixed_rewards, response_mask=torch.ones(8, 4), index=np.concatenate([index, experts])
    )
    assert torch.equal(got[:6], expected) and torch.equal(got[6:], torch.zeros(2, 4))


def test_hybrid_grpo_reads_norm_adv_by_std_from_the_algorithm_config():
    fn = get_adv_estimator_fn("hybrid_grpo")
    rewards, mask = _rewards([1.0, 0.0, 0.0, 0.0])
    index = np.array(["a"] * 4, dtype=object)
    got, _ = fn(token_level_rewards=rewards, response_mask=mask, index=index, config={"norm_adv_by_std_in_grpo": False})
    assert got[:, 0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_espo_verified_is_grpo_over_verified_responses():
    fn = get_adv_estimator_fn("espo_verified")
    rewards, mask = _rewards([1.0, 0.0, 1.0, 1.0])
    index = np.array(["a"] * 4, dtype=object)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    got, _ = fn(token_level_rewards=rewards, response_mask=mask, index=index)
    assert torch.equal(got, expected)  # every verification succeeded: exactly grpo

    rewards, mask = _rewards([1.0, 0.0, math.nan, 1.0, 0.0])
    index = np.array(["a"] * 5, dtype=object)
    got, _ = fn(token_level_rewards=rewards, response_mask=mask, index=index)
    verified = [0, 1, 3, 4]
    expected, _ = compute_grpo_outcome_advantage(rewards[verified], mask[verified], index[verified])
    assert torch.equal(got[verified], expected) and torch.equal(got[2], torch.zeros(4))
    assert torch.isfinite(got).all()


def test_every_update_of_a_step_draws_its_own_expert_batch():
    from verl_espo.trainer.sync import PluginTrainerSync

    trainer = object.__new__(PluginTrainerSync)  # no workers: only the indexing
    trainer.global_steps, trainer.parameter_sync_step = 3, 1
    assert trainer._expert_batch_index() == 3  # sync mode: one update per global step
    trainer.parameter_sync_step = 4  # separate_async: four updates per global step
    indices = []
    for trigger in range(4):
        trainer.local_trigger_step = trigger
        indices.append(trainer._expert_batch_index())
    assert indices == [9, 10, 11, 12]
