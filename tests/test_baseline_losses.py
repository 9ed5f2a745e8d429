"""The recipes' baseline losses under micro-batch and data-parallel splits, and the plugin's ``gmpo`` loss against a
float64 loop reference and veRL's ``geo_mean``.

veRL's FSDP engine backpropagates each micro-batch's loss as it is and averages gradients over data-parallel ranks;
veRL hands every micro-batch the mini-batch's ``global_batch_info`` (``dp_size``, ``batch_num_tokens`` over all
ranks, ``global_batch_size`` = rows of the mini-batch). A loss is split-invariant when the micro-batch losses add up,
and the rank losses average, to the loss of the whole mini-batch, gradients included. The baselines run with the
settings of their ``recipes/algo/<method>.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through the entry point)
from conftest import make_actor_config, random_batch
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn

ALGO_DIR = Path(__file__).resolve().parents[1] / "recipes" / "algo"
PLUGIN_CONFIG_DIR = Path(__file__).resolve().parents[1] / "verl_espo" / "config"


def load_algo(path: Path):
    """A YAML with its ``/<name>`` defaults (the plugin's config group root) merged beneath it, as Hydra does."""
    raw = OmegaConf.load(path)
    parents = [d for d in raw.get("defaults", []) if isinstance(d, str) and d.startswith("/")]
    merged = [load_algo(PLUGIN_CONFIG_DIR / f"{d[1:]}.yaml") for d in parents]
    return OmegaConf.merge(*merged, {k: v for k, v in raw.items() if k != "defaults"})


FIELDS = ("old_log_prob", "log_prob", "advantages", "response_mask")

#: Splits of an 8-row mini-batch: per data-parallel rank, the rows of each of its micro-batches.
LAYOUTS = {
    "micro_2_1_5": [[2, 1, 5]],
    "dp2": [[4], [4]],
    "dp2_micro": [[1, 3], [3, 1]],
}
THREE_WAY = LAYOUTS["micro_2_1_5"]


def recipe_config(method: str):
    """The actor config with the loss settings of ``recipes/algo/<method>.yaml`` (unset keys: veRL's defaults)."""
    actor = load_algo(ALGO_DIR / f"{method}.yaml").actor_rollout_ref.actor
    config = make_actor_config(
        loss_mode=actor.policy_loss.loss_mode,
        clip_ratio_low=actor.clip_ratio_low,
        clip_ratio_high=actor.clip_ratio_high,
        loss_agg_mode=actor.get("loss_agg_mode", "token-mean"),
    )
    return dataclasses.replace(config, clip_ratio_c=actor.get("clip_ratio_c", config.clip_ratio_c))


def batch_info(mask: torch.Tensor, dp_size: int = 1) -> dict:
    """``global_batch_info`` as veRL's engine sets it for every micro-batch of the mini-batch ``mask``."""
    return {
        "dp_size": dp_size,
        "batch_num_tokens": int(mask.sum()),
        "global_batch_size": mask.shape[0],
        "loss_scale_factor": None,
    }


def loss_and_grad(loss_fn, batch: dict, config, rows=slice(None), **kw):
    """One micro-batch: the loss, the gradient on its ``log_prob`` rows, and the metrics."""
    lp = batch["log_prob"][rows].detach().clone().requires_grad_(True)
    part = {k: batch[k][rows] for k in FIELDS}
    loss, metrics = loss_fn(
        part["old_log_prob"], lp, part["advantages"], part["response_mask"], config.loss_agg_mode, config, **kw
    )
    loss.backward()
    return loss.detach(), lp.grad, metrics


def split_loss_and_grad(loss_fn, batch: dict, config, layout: list[list[int]]):
    """The mini-batch loss and ``log_prob`` gradient when the rows are split as ``layout`` (rank by rank, micro-batch
    by micro-batch, in row order): each micro-batch's loss is backpropagated as is, ranks average gradients."""
    dp = len(layout)
    config.global_batch_info.update(batch_info(batch["response_mask"], dp))
    losses, grads, start = [], [], 0
    for rank in layout:
        for rows in rank:
            loss, grad, _ = loss_and_grad(loss_fn, batch, config, slice(start, start + rows))
            losses.append(loss)
            grads.append(grad)
            start += rows
    assert start == batch["log_prob"].shape[0]
    return sum(losses) / dp, torch.cat(grads) / dp


def one_micro_batch(loss_fn, batch: dict, config, **kw):
    config.global_batch_info.update(batch_info(batch["response_mask"]))
    return loss_and_grad(loss_fn, batch, config, **kw)


def gradient_change(grad: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest relative change of one response's gradient, ``max_i |g_i - g_ref_i| / |g_ref_i|``."""
    norms = reference.norm(dim=-1)
    rows = norms > 0
    return ((grad - reference).norm(dim=-1)[rows] / norms[rows]).max().item()


# ---------------------------------------------------------------- GMPO: float64 reference
def reference_gmpo(log_prob, old_log_prob, advantages, mask, eps_low, eps_high, is_weights=None):
    """GMPO (arXiv 2507.20673) token by token: per response, the geometric mean of the token ratios, each log-ratio
    capped at ``eps_high`` when ``A > 0`` and floored at ``-eps_low`` when ``A < 0``, times ``-A``; the mean over
    all rows of the mini-batch (veRL's ``global_batch_size`` counts every row; an empty response adds 0)."""
    rows, width = log_prob.shape
    total = torch.zeros((), dtype=torch.float64)
    for i in range(rows):
        tokens = [t for t in range(width) if mask[i, t]]
        if not tokens:
            continue
        adv = sum(advantages[i, t] for t in tokens) / len(tokens)
        log_terms, log_weights = [], []
        for t in tokens:
            log_ratio = log_prob[i, t] - old_log_prob[i, t]
            if adv > 0:
                log_ratio = torch.clamp(log_ratio, max=eps_high)
            elif adv < 0:
                log_ratio = torch.clamp(log_ratio, min=-eps_low)
            log_terms.append(log_ratio)
            if is_weights is not None:
                log_weights.append(math.log(is_weights[i, t] + 1e-10))
        row = -adv * torch.exp(sum(log_terms) / len(tokens))
        if is_weights is not None:
            row = row * math.exp(sum(log_weights) / len(tokens))
        total = total + row
    return total / rows


def gmpo_batch(seed: int, dtype=torch.float64, scale=0.5) -> dict:
    batch = random_batch(B=8, T=12, seed=seed, dtype=dtype, scale=scale)
    batch["advantages"][4] = 0.0  # a response with A = 0 (rows 0 and 1 are empty and one token long)
    return batch


@pytest.mark.parametrize("seed", [0, 2, 3])
@pytest.mark.parametrize(("eps_low", "eps_high"), [(0.4, 0.4), (0.1, 0.25)])
def test_gmpo_matches_the_float64_reference(seed, eps_low, eps_high):
    batch = gmpo_batch(seed)
    config = make_actor_config(loss_mode="gmpo", clip_ratio_low=eps_low, clip_ratio_high=eps_high)
    loss, grad, metrics = one_micro_batch(get_policy_loss_fn("gmpo"), batch, config)

    lp = batch["log_prob"].detach().clone().requires_grad_(True)
    ref = reference_gmpo(lp, batch["old_log_prob"], batch["advantages"], batch["response_mask"], eps_low, eps_high)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, lp.grad, rtol=1e-9, atol=1e-12)
    assert metrics["actor/pg_clipfrac"] > 0 and metrics["actor/pg_clipfrac_lower"] > 0  # both sides clip


def test_gmpo_rollout_weights_match_the_float64_reference():
    batch = gmpo_batch(3)
    weights = torch.rand(batch["log_prob"].shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    config = make_actor_config(loss_mode="gmpo", clip_ratio_low=0.4, clip_ratio_high=0.4)
    loss, grad, _ = one_micro_batch(get_policy_loss_fn("gmpo"), batch, config, rollout_is_weights=weights)

    lp = batch["log_prob"].detach().clone().requires_grad_(True)
    mask = batch["response_mask"]
    ref = reference_gmpo(lp, batch["old_log_prob"], batch["advantages"], mask, 0.4, 0.4, is_weights=weights)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, lp.grad, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- GMPO: veRL's geo_mean
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gmpo_equals_verl_geo_mean_on_one_micro_batch_on_one_rank(dtype):
    batch = gmpo_batch(5, dtype=dtype)
    config = recipe_config("gmpo")
    loss, grad, metrics = one_micro_batch(get_policy_loss_fn("gmpo"), batch, config)
    geo_loss, geo_grad, geo_metrics = one_micro_batch(get_policy_loss_fn("geo_mean"), batch, config)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-7, "atol": 1e-12}
    torch.testing.assert_close(loss, geo_loss, **tol)  # geo_mean divides by |o_i| + 1e-8
    torch.testing.assert_close(grad, geo_grad, **tol)
    assert metrics.keys() == geo_metrics.keys()
    for key, value in geo_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_verl_geo_mean_is_not_split_invariant():
    """veRL 0.9.1's ``geo_mean`` averages over the rows of each micro-batch and ignores ``global_batch_info``: split
    into micro-batches of 2, 1 and 5 rows, a response's gradient is scaled by 8 / (rows in its micro-batch)."""
    batch = gmpo_batch(6)
    config = recipe_config("gmpo")
    changes = {}
    for name in ("geo_mean", "gmpo"):
        loss_fn = get_policy_loss_fn(name)
        _, full_grad, _ = one_micro_batch(loss_fn, batch, config)
        _, grad = split_loss_and_grad(loss_fn, batch, config, THREE_WAY)
        changes[name] = gradient_change(grad, full_grad)
        print(f"\n{name}, micro-batches of 2, 1, 5 rows: gradient change {changes[name]:.3g}, "
              f"gradient norm x{(grad.norm() / full_grad.norm()).item():.3g}")  # fmt: skip
    # the one-row micro-batch: 8 / 1 = 8 times its gradient in one micro-batch, a change of 7
    assert changes["geo_mean"] == pytest.approx(7.0, rel=1e-9)
    assert changes["gmpo"] < 1e-12


# ---------------------------------------------------------------- every baseline of the recipes
#: method -> scale of the random log-ratios that puts some responses or tokens inside the clip range and some out
BASELINES = {"grpo": 0.3, "dapo": 0.3, "gspo": 1e-3, "cispo": 0.3, "gmpo": 0.5}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("method", BASELINES)
def test_recipe_baseline_is_split_invariant(method, layout):
    config = recipe_config(method)
    loss_fn = get_policy_loss_fn(config.policy_loss.loss_mode)
    batch = random_batch(B=8, T=12, seed=7, scale=BASELINES[method])
    full, full_grad, metrics = one_micro_batch(loss_fn, batch, config)
    loss, grad = split_loss_and_grad(loss_fn, batch, config, layout)
    change = gradient_change(grad, full_grad)
    print(f"\n{method} ({config.policy_loss.loss_mode}, {config.loss_agg_mode}) {layout}: gradient change {change:.3g}")
    assert 0 < metrics["actor/pg_clipfrac"] < 1 and full_grad.abs().sum() > 0  # the clip matters, yet gradients flow
    torch.testing.assert_close(loss, full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, full_grad, rtol=1e-10, atol=1e-12)
