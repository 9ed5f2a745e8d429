"""The reward configs composed with veRL 0.9.1's ``ppo_trainer`` and instantiated by veRL's own loader.

* ``verl_espo/rewards/dapo_overlong.yaml``: DAPO's overlong penalty through veRL's ``dapo`` reward manager;
* ``verl_espo/rewards/chord_reward.yaml``: CHORD's reward with :class:`LengthAwareRewardManager`.

Each test composes the snippet on top of ``ppo_trainer`` (as a recipe's defaults list would), builds the manager with
``verl.trainer.ppo.reward.load_reward_manager`` (what veRL's reward-loop workers call), and scores hand-built
single-sample batches whose expected rewards are worked out by hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import verl_espo.rewards as rewards_pkg

SNIPPETS = Path(rewards_pkg.__file__).parent
PROMPT_LEN = 3


class _Tokenizer:
    """Decodes every response to ``text`` (the managers only call ``decode``)."""

    text = ""

    def decode(self, ids, skip_special_tokens=True):
        return self.text


def _compose(tmp_path: Path, snippet: str | None, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    defaults = ["ppo_trainer"]
    if snippet:
        shutil.copy(SNIPPETS / snippet, tmp_path / snippet)
        defaults.append(Path(snippet).stem)
    lines = ["hydra:", "  searchpath:", "    - pkg://verl.trainer.config", "defaults:"]
    lines += [f"  - {d}" for d in [*defaults, "_self_"]]
    (tmp_path / "main.yaml").write_text("\n".join(lines) + "\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose("main", overrides=overrides)


def _batch(valid: int, width: int, extra_info: dict | None = None):
    """One sample: ``valid`` real tokens in a response padded to ``width``."""
    from verl import DataProto

    response_mask = (torch.arange(width) < valid).long()[None]
    return DataProto.from_dict(
        tensors={
            "prompts": torch.ones(1, PROMPT_LEN, dtype=torch.long),
            "responses": torch.ones(1, width, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(1, PROMPT_LEN, dtype=torch.long), response_mask], dim=-1),
        },
        non_tensors={
            "data_source": np.array(["math500"], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": "7"}], dtype=object),
            "extra_info": np.array([extra_info if extra_info is not None else {"index": 0}], dtype=object),
        },
    )


def _score(manager, tokenizer: _Tokenizer, text: str, valid: int, width: int, extra_info: dict | None = None):
    tokenizer.text = text
    out = manager.loop.run_until_complete(manager.run_single(_batch(valid, width, extra_info)))
    return float(out["reward_score"]), out["reward_extra_info"]


def _load(cfg, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    # (veRL 0.9.1 never instantiates RewardManagerConfig: its __post_init__ calls a missing super().__post_init__.)
    cls = resolve_reward_manager_cls(cfg)  # what RewardLoopManager does in the driver
    manager = load_reward_manager(cfg, tokenizer, reward_router_address=None, reward_model_tokenizer=None)
    assert type(manager) is cls
    return manager


def test_dapo_overlong_snippet_composes_and_penalises(tmp_path):
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager

    # L_max = 20, buffer 4: no penalty up to 16 tokens, then -(L - 16) / 4, reaching -1 at 20.
    cfg = _compose(
        tmp_path,
        "dapo_overlong.yaml",
        [
            "data.max_response_length=20",
            "reward.reward_kwargs.overlong_buffer_cfg.len=4",
            "reward.custom_reward_function.path=pkg://verl_espo.rewards.math",
            "reward.custom_reward_function.name=compute_score",
        ],
    )
    assert cfg.reward.reward_manager.name == "dapo" and cfg.reward.reward_kwargs.max_resp_len == 20
    tokenizer = _Tokenizer()
    manager = _load(cfg, tokenizer)
    assert isinstance(manager, DAPORewardManager)

    right, wrong = r"so \boxed{7}", r"so \boxed{8}"
    assert _score(manager, tokenizer, right, valid=10, width=20)[0] == pytest.approx(1.0)
    assert _score(manager, tokenizer, right, valid=16, width=20)[0] == pytest.approx(1.0)
    score, info = _score(manager, tokenizer, right, valid=18, width=20)
    assert score == pytest.approx(0.5) and info["overlong"] and float(info["overlong_reward"]) == pytest.approx(-0.5)
    assert _score(manager, tokenizer, wrong, valid=20, width=20)[0] == pytest.approx(-1.0)
    assert _score(manager, tokenizer, wrong, valid=5, width=20)[1]["overlong"] is False


def test_dapo_overlong_as_command_line_overrides(tmp_path):
    """The same settings as overrides on a stock config (``+`` adds ``reward.reward_kwargs``)."""
    cfg = _compose(
        tmp_path,
        None,
        [
            "reward.reward_manager.name=dapo",
            "+reward.reward_kwargs.overlong_buffer_cfg.enable=true",
            "+reward.reward_kwargs.overlong_buffer_cfg.len=4",
            "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
            "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
            "+reward.reward_kwargs.max_resp_len=20",
        ],
    )
    tokenizer = _Tokenizer()
    manager = _load(cfg, tokenizer)
    assert manager.max_resp_len == 20 and manager.overlong_buffer_cfg.len == 4


@pytest.fixture(scope="module")
def chord_manager(tmp_path_factory):
    cfg = _compose(tmp_path_factory.mktemp("chord"), "chord_reward.yaml", ["data.max_response_length=20"])
    tokenizer = _Tokenizer()
    return _load(cfg, tokenizer), tokenizer


@pytest.mark.parametrize(
    ("text", "valid", "width", "score", "truncated"),
    [
        (r"so \boxed{7}", 12, 20, 1.0, False),
        (r"so \boxed{8}", 12, 20, 0.0, False),
        ("I think it is 7", 12, 20, -0.1, False),
        ("I think it is 7 and then", 20, 20, -1.0, True),  # filled the budget without an answer
        ("I think it is 7 and then", 20, 24, -1.0, True),  # the budget is the config's, not the padded width
        (r"so \boxed{7}", 20, 20, 1.0, True),  # truncated, but it did answer
        (r"so \boxed{}", 20, 20, -1.0, True),  # an empty box is no answer
    ],
)
def test_chord_reward_through_the_length_aware_manager(chord_manager, text, valid, width, score, truncated):
    from verl_espo.rewards.manager import LengthAwareRewardManager

    manager, tokenizer = chord_manager
    assert isinstance(manager, LengthAwareRewardManager)
    shared = {"index": 0, "split": "train"}  # the dict all rollouts of one prompt share
    got, info = _score(manager, tokenizer, text, valid=valid, width=width, extra_info=shared)
    assert got == pytest.approx(score)
    assert info["truncated"] is truncated and info["formatted"] is (score >= 0.0)
    assert shared == {"index": 0, "split": "train"}  # the row's extra_info is not modified


def test_length_info_uses_the_rollout_budget():
    from verl_espo.rewards.manager import length_info

    assert length_info(_batch(7, 10)) == {"response_length": 7, "max_response_length": 10, "truncated": False}
    assert length_info(_batch(10, 10))["truncated"]
    # a budget from the config beats the tensor width (responses padded wider than the budget)
    assert length_info(_batch(8, 10), max_response_length=8)["truncated"]
