"""The contract every declared policy loss keeps, run over each :class:`~verl_espo.loss_inputs.LossSpec`.

The inputs of each case come from the loss's spec, the way the plugin's trainer and actor loss derive them: the old
entropy when it asks for it, the step threshold over the rollout tokens when its key is on, expert rows with ``mu``
and the step's counts when it trains on them; every input reaches the loss through the actor loss's channel
(``policy_loss_extras``), as in veRL's ``ppo_loss``; the step statistics a spec switches on are computed by the
trainer's own function. A fourth loss defined here (math, registration and spec with a step statistic, nothing
else) runs through the same contract and through the plugin's Hydra config, trainer checks, trainer step statistics
and actor loss.
Per-loss reference values stay in the per-loss test files.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through the entry point)
from conftest import random_batch
from hydra import compose, initialize_config_module
from omegaconf import open_dict
from tensordict import TensorDict
from test_actor_loss import micro_batch
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, register_policy_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig, FSDPActorConfig

from verl_espo.config import PluginPolicyLossConfig
from verl_espo.core.chord import hybrid_counts
from verl_espo.core.common import masked, share, to_floats
from verl_espo.core.entropy import batch_entropy_threshold
from verl_espo.loss_inputs import (
    LossPlot,
    LossSpec,
    MissingLossInputError,
    StepStatistic,
    loss_input,
    loss_spec,
    loss_specs,
    policy_loss_extras,
    register_loss_spec,
    step_statistics,
    step_threshold_ratio,
)
from verl_espo.trainer.checks import check_trainer_config
from verl_espo.trainer.sync import compute_step_statistics
from verl_espo.workers.actor_loss import entropy_aware_ppo_loss, make_actor_loss_fn

# ---------------------------------------------------------------- a fourth loss: math, registration, spec

FOURTH = "entropy_weighted_pg"


def step_entropy_mean(policy_loss, tensors, rollout_mask, entropy_threshold) -> float:
    """The step's mean old entropy over its rollout tokens, in float64."""
    entropy = tensors["entropy"].double()
    return float(torch.where(rollout_mask, entropy, 0.0).sum() / rollout_mask.sum().clamp(min=1))


FOURTH_SPEC = register_loss_spec(
    LossSpec(
        name=FOURTH,
        label="Entropy-weighted PG",
        old_entropy=True,
        step_statistics=(StepStatistic("entropy_mean", step_entropy_mean, fields=("entropy",)),),
        plots=(LossPlot("entropy_weight", "Token weight", "(1 + Hbar)/(1 + Hbar + H)", f"actor/{FOURTH}/weight_mean"),),
        columns=(("weight", f"actor/{FOURTH}/weight_mean"),),
    )
)


@register_policy_loss(FOURTH)  # type: ignore[arg-type]
def compute_policy_loss_entropy_weighted_pg(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[ActorConfig] = None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    old_entropy: torch.Tensor | None = None,
    entropy_mean: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``l_t = -A_t r_t (1 + Hbar) / (1 + Hbar + H_t)``: the token policy gradient, damped where the old policy was
    more uncertain than on average over the step (``Hbar``, the spec's step statistic ``entropy_mean``)."""
    old_entropy, entropy_mean = loss_input("old_entropy", old_entropy), loss_input("entropy_mean", entropy_mean)
    if old_entropy is None:
        raise MissingLossInputError(f"the {FOURTH} loss needs the old policy's entropy, `old_entropy`")
    if entropy_mean is None:
        raise MissingLossInputError(f"the {FOURTH} loss needs the step's mean old entropy, `entropy_mean`")
    mask = response_mask.bool()
    lp, old_lp, adv, entropy = masked(mask, log_prob, old_log_prob, advantages, old_entropy)
    weight = (1.0 + entropy_mean) / (1.0 + entropy_mean + entropy.clamp(min=0.0))
    token_losses = -adv * torch.exp(lp - old_lp) * weight
    loss = agg_loss(token_losses, mask, loss_agg_mode, **config.global_batch_info)
    metrics = {f"actor/{FOURTH}/weight_mean": share(torch.where(mask, weight, 0.0).sum(), torch.count_nonzero(mask))}
    return loss, {**to_floats(metrics), f"actor/{FOURTH}/entropy_mean": float(entropy_mean)}


# ---------------------------------------------------------------- cases derived from the specs

NAMES = sorted(loss_specs())
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
VERL_METRICS = frozenset({"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"})
#: Settings of a loss's own blocks that change its code path, beyond what the spec derives (per-loss test data).
EXTRA_SETTINGS: dict[str, list[dict]] = {
    "espo": [{"espo": {"grouping": "token"}}, {"espo": {"aggregation": "actor"}}],
    "egspo": [{"egspo": {"gate": "sequence", "phi_source": "current"}}],
}
LENGTHS = [0, 1, 11, 5, 3, 10, 0, 1, 7, 11, 4, 9]
EXPERT = [False, False, False, True, True, True, False, True, False, True, False, True]
#: Per data-parallel rank, the rows of each of its micro-batches (a rank may hold no expert row, or only those).
SPLITS = {
    "micro4": [[[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]],
    "dp2": [[[0, 1, 2], [3, 4, 5]], [[6, 7], [8, 9, 10, 11]]],
}


def settings(name: str) -> list[dict]:
    """The block settings to test ``name`` under: its defaults, its step threshold switched on, and extras."""
    spec = loss_spec(name)
    out: list[dict] = [{}]
    st = spec.step_threshold
    if st is not None and PluginPolicyLossConfig(loss_mode=name)[st.block][st.key] != st.value:
        out.append({st.block: {st.key: st.value}})
    return out + EXTRA_SETTINGS.get(name, [])


CASES = [
    pytest.param(name, setting, hybrid, id=f"{name}-{i}{'-hybrid' if hybrid else ''}")
    for name in NAMES
    for i, setting in enumerate(settings(name))
    for hybrid in ((False, True) if loss_spec(name).expert_rows else (False,))
]


def actor_config(name: str, setting: dict, loss_agg_mode: str = "token-mean") -> FSDPActorConfig:
    config = FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=0.1,
        clip_ratio_high=0.15,
        clip_ratio_c=2.0,
        loss_agg_mode=loss_agg_mode,
        policy_loss=PluginPolicyLossConfig(loss_mode=name, **setting),
    )
    config.model_config = _Model()  # what the actor loss hands a loss that reads the model config (|V|)
    return config


class _Model:
    hf_config = type("HFConfig", (), {"vocab_size": 100})()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def make_batch(seed: int = 0, dtype=torch.float64) -> dict:
    batch = random_batch(B=len(LENGTHS), T=11, seed=seed, lengths=LENGTHS, dtype=dtype, scale=0.4)
    batch["log_prob"] = batch["log_prob"].clamp(max=-0.01)  # valid probabilities
    return batch


def step_inputs(config: FSDPActorConfig, batch: dict, hybrid: bool) -> dict:
    """The inputs the trainer and actor loss hand this loss for the whole step ``batch``."""
    spec = loss_spec(config.policy_loss.loss_mode)
    mask = batch["response_mask"]
    expert = torch.tensor(EXPERT) if hybrid else torch.zeros(mask.shape[0], dtype=torch.bool)
    extras: dict[str, Any] = {}
    if spec.old_entropy:
        extras["old_entropy"] = batch["old_entropy"]
    rho = step_threshold_ratio(config.policy_loss)
    if rho is not None:  # over the step's rollout tokens, as the trainer computes it
        extras["entropy_threshold"] = batch_entropy_threshold(batch["old_entropy"], mask & ~expert[:, None], rho)
    step = TensorDict(
        {"response_mask": mask, "entropy": batch["old_entropy"], "old_log_probs": batch["old_log_prob"]},
        batch_size=mask.shape[0],
    )  # the step's fields under veRL's names, as the trainer reads them
    threshold = extras.get("entropy_threshold")
    for statistic, value in compute_step_statistics(config.policy_loss, step, expert, threshold).items():
        extras[statistic.name] = value
    if hybrid:
        extras.update(expert_mask=expert, mu=0.3, hybrid_counts=hybrid_counts(mask.sum(-1), expert))
    return extras


def run(config, batch: dict, extras: dict, rows=slice(None)) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One micro-batch (``rows`` of ``batch``) through the actor loss's channel: loss, gradient, metrics."""
    part = {k: v[rows] for k, v in batch.items()}
    part_extras = {k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in extras.items()}
    lp = part["log_prob"].detach().clone().requires_grad_(True)
    loss_fn = get_policy_loss_fn(config.policy_loss.loss_mode)
    with policy_loss_extras(**part_extras):
        loss, metrics = loss_fn(
            part["old_log_prob"], lp, part["advantages"], part["response_mask"], config.loss_agg_mode, config, None
        )
    loss.backward()
    return loss.detach(), lp.grad, metrics


def global_info(config, batch: dict, dp_size: int = 1) -> None:
    """``global_batch_info`` as veRL's ``ppo_loss`` sets it for every micro-batch of the mini-batch ``batch``."""
    mask = batch["response_mask"]
    config.global_batch_info.update(
        dp_size=dp_size, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0], loss_scale_factor=None
    )


# ---------------------------------------------------------------- the contract


def test_every_plugin_loss_and_the_fourth_are_declared():
    assert {"espo", "egspo", "chord", "gmpo", FOURTH} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_declared_consistently(name):
    spec = loss_spec(name)
    assert spec.name == name and spec.label
    get_policy_loss_fn(name)  # registered in veRL's registry
    blocks = PluginPolicyLossConfig(loss_mode=name)
    for block in spec.config_blocks:
        assert block in blocks, f"{name}: config block {block!r} is not a PluginPolicyLossConfig field"
    if spec.step_threshold is not None:
        block = blocks[spec.step_threshold.block]
        assert spec.step_threshold.key in block and spec.step_threshold.ratio_key in block
    for statistic in spec.step_statistics:
        assert not statistic.block or statistic.key in blocks[statistic.block]
        assert set(statistic.fields) <= {"entropy", "old_log_probs"}, "fields the contract's step batch holds"
    for plot in spec.plots:
        assert plot.key.startswith("actor/") and plot.file and plot.panel
    for label, key in spec.columns:
        assert label and " " not in label and key.startswith("actor/")


@pytest.mark.parametrize(("name", "setting", "hybrid"), CASES)
def test_declared_metrics_are_present_and_finite(name, setting, hybrid):
    spec = loss_spec(name)
    config = actor_config(name, setting)
    batch = make_batch(seed=1)
    loss, grad, metrics = run(config, batch, step_inputs(config, batch, hybrid))
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    shared = {key.rsplit("/", 1)[0] + "/" for key in (*spec.sum_metrics, *(p.key for p in spec.plots))}
    prefixes = (spec.metric_prefix, *shared)
    for key, value in metrics.items():
        assert key in VERL_METRICS or key.startswith(prefixes), f"{name}: undeclared metric {key}"
        assert math.isfinite(value), (key, value)
    if hybrid or not spec.expert_rows:
        assert spec.sum_metrics <= metrics.keys()


@pytest.mark.parametrize(("name", "setting", "hybrid"), CASES)
def test_padding_gets_zero_gradient_and_its_values_do_not_leak(name, setting, hybrid):
    config = actor_config(name, setting)
    clean = make_batch(seed=2, dtype=torch.float32)
    extras = step_inputs(config, clean, hybrid)
    want_loss, want_grad, _ = run(config, clean, extras)
    padding = ~clean["response_mask"]
    assert torch.equal(want_grad[padding], torch.zeros_like(want_grad[padding]))
    for key, values in (
        ("log_prob", [-math.inf, math.nan]),
        ("old_log_prob", [math.nan, math.inf]),
        ("advantages", [math.nan, -math.inf]),
        ("old_entropy", [math.nan, math.inf]),
    ):
        for value in values:
            dirty = {**clean, key: clean[key].masked_fill(padding, value)}
            dirty_extras = dict(extras, old_entropy=dirty["old_entropy"]) if "old_entropy" in extras else extras
            loss, grad, metrics = run(config, dirty, dirty_extras)
            assert torch.equal(loss, want_loss), (key, value)
            assert torch.equal(grad, want_grad), (key, value)
            assert all(math.isfinite(v) for v in metrics.values()), (key, value)


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize(("name", "setting", "hybrid"), CASES)
def test_micro_batch_and_data_parallel_splits_do_not_change_loss_or_gradient(name, setting, hybrid, agg, split):
    batch = make_batch(seed=3)
    whole = actor_config(name, setting, agg)
    global_info(whole, batch)
    extras = step_inputs(whole, batch, hybrid)
    want_loss, want_grad, _ = run(whole, batch, extras)

    ranks = SPLITS[split]
    config = actor_config(name, setting, agg)
    loss, grad = torch.zeros((), dtype=torch.float64), torch.zeros_like(batch["log_prob"])
    for micro_batches in ranks:  # FSDP: micro-batch losses add up on a rank, gradients average over ranks
        for rows in micro_batches:
            global_info(config, batch, dp_size=len(ranks))
            part_loss, part_grad, _ = run(config, batch, extras, rows)
            loss += part_loss / len(ranks)
            grad[rows] += part_grad / len(ranks)
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("name", "setting", "hybrid"), CASES)
def test_bf16_inputs_give_finite_float32_results(name, setting, hybrid):
    config = actor_config(name, setting)
    batch = make_batch(seed=4, dtype=torch.float32)
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    as_fp32 = {k: v.float() if v.is_floating_point() else v for k, v in bf16.items()}  # the same values in fp32
    loss, grad, metrics = run(config, bf16, step_inputs(config, bf16, hybrid))
    want_loss, want_grad, _ = run(config, as_fp32, step_inputs(config, as_fp32, hybrid))
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert all(math.isfinite(v) for v in metrics.values())
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.float(), want_grad, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize(("name", "setting", "hybrid"), CASES)
def test_a_missing_input_is_named_in_the_error(name, setting, hybrid):
    config = actor_config(name, setting)
    batch = make_batch(seed=5)
    extras = step_inputs(config, batch, hybrid)
    threshold = loss_spec(name).step_threshold
    expected = {"old_entropy": "old_entropy", "mu": "`mu`"}
    if "entropy_threshold" in extras:  # the message names the input and the key that asked for it
        expected["entropy_threshold"] = rf"{threshold.block}\.{threshold.key}={threshold.value}.*entropy_threshold"
    for key, message in expected.items():
        if key in extras:
            with pytest.raises(MissingLossInputError, match=message):
                run(config, batch, {k: v for k, v in extras.items() if k != key})
    inside_worker = ["hybrid_counts"] if hybrid else []  # inside veRL's workers these must come from the trainer
    inside_worker += [statistic.name for statistic in step_statistics(config.policy_loss)]
    global_info(config, batch)
    for key in inside_worker:
        with pytest.raises(MissingLossInputError, match=key):
            run(config, batch, {k: v for k, v in extras.items() if k != key})


# ---------------------------------------------------------------- the fourth loss through config, trainer, actor loss


def test_a_fourth_loss_composes_and_runs_through_the_trainer_checks_and_the_actor_loss():
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(config_name="espo_trainer", overrides=[f"actor_rollout_ref.actor.policy_loss.loss_mode={FOURTH}"])
    with open_dict(cfg):
        cfg.actor_rollout_ref.actor.strategy = "fsdp2"
        cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 1
    check_trainer_config(cfg)  # the trainer accepts it
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.policy_loss.loss_mode == FOURTH

    loss_fn = make_actor_loss_fn(cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.model)
    data, out = micro_batch(seed=6)
    with pytest.raises(MissingLossInputError, match="entropy_mean"):  # its step statistic comes from the trainer
        loss_fn(out, data)
    # the trainer's step statistics over the step's nested fields, handed over as the batch's non-tensor data
    no_expert = torch.zeros(5, dtype=torch.bool)
    values = compute_step_statistics(cfg.actor_rollout_ref.actor.policy_loss, data, no_expert, None)
    assert list(values) == list(FOURTH_SPEC.step_statistics)
    (value,) = values.values()
    assert value == pytest.approx(float(data["entropy"].values().double().mean()), rel=1e-12)
    tu.assign_non_tensor(data, **{FOURTH_SPEC.statistic_key(s): v for s, v in values.items()})
    loss, metrics = loss_fn(out, data)
    loss.backward()
    assert torch.isfinite(out["log_probs"].grad.values()).all()
    assert f"actor/{FOURTH}/weight_mean" in metrics and f"actor/{FOURTH}/old_entropy" in metrics
    assert metrics[f"actor/{FOURTH}/entropy_mean"].values == [value]  # it reached the loss

    data, out = micro_batch(seed=6, with_entropy=False)  # the actor loss hands over what the batch holds
    with pytest.raises(MissingLossInputError, match="old_entropy"):
        entropy_aware_ppo_loss(loss_fn.config, out, data)

    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(
            config_name="espo_trainer",
            overrides=[f"actor_rollout_ref.actor.policy_loss.loss_mode={FOURTH}", "trainer.v1.trainer_mode=sync"],
        )
    with open_dict(cfg):
        cfg.actor_rollout_ref.actor.strategy = "fsdp2"
        cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 1
    with pytest.raises(Exception, match="needs the old policy's per-token entropy"):  # its spec asks for it
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
