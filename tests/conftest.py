"""Shared fixtures (actor configs for direct loss calls, random ESPO batches) and the suite's module order."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


def make_actor_config(loss_mode="espo", clip_ratio_low=0.2, clip_ratio_high=0.28, loss_agg_mode="token-mean", **espo):
    """An ``FSDPActorConfig`` whose policy loss is the plugin's config class, as Hydra would build it."""
    import verl  # noqa: F401  (loads the plugin)
    from verl.workers.config import FSDPActorConfig

    from verl_espo.config import ESPOConfig, PluginPolicyLossConfig

    espo.setdefault("vocab_size", 100)
    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        loss_agg_mode=loss_agg_mode,
        policy_loss=PluginPolicyLossConfig(loss_mode=loss_mode, espo=ESPOConfig(**espo)),
    )


def random_batch(B=6, T=12, seed=0, dtype=torch.float64, lengths=None, tie_entropy=False, scale=0.3):
    """Padded random tensors with varied row lengths (including empty and length-1 rows)."""
    g = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = [0, 1, T, 5, 3, T - 1][:B] + [int(x) for x in torch.randint(0, T + 1, (max(0, B - 6),), generator=g)]
    mask = torch.zeros(B, T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3 - 0.05
    lp = old + torch.randn(B, T, generator=g, dtype=dtype) * scale
    adv = torch.randn(B, 1, generator=g, dtype=dtype).expand(B, T).clone()
    ent = torch.rand(B, T, generator=g, dtype=dtype) * 3
    if tie_entropy:
        ent = torch.round(ent)  # many ties
    return {"log_prob": lp, "old_log_prob": old, "advantages": adv, "response_mask": mask, "old_entropy": ent}


@pytest.fixture
def actor_config():
    return make_actor_config


# Modules with trainer runs, longest first. README command 2 runs the suite on two workers, one module at a time
# each (`-n 2 --dist loadfile`); collected first, these start first, and the fast modules fill in around them.
SLOW_MODULES_FIRST = (
    "test_e2e_learning.py",
    "test_e2e_separate_async.py",
    "test_resume.py",
    "test_e2e_hybrid.py",
    "test_evaluate.py",
    "test_e2e_vllm_async.py",
    "test_e2e_vllm.py",
    "test_recipes.py",
    "test_actor_integration.py",
    "test_sft_stage.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist hands out the files with the most tests first (`--loadscope-reorder`, its default), which puts
    # the slow modules, each a few tests, last; keep the collection order below instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
