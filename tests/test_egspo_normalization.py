"""``egspo.rl_normalization=gate_weight``: the RL part divided by the sum of the gate's weights instead of the
rollout-token count, against the float64 loop reference (``tests/reference/egspo_reference.py``), split over
micro-batches and data-parallel ranks with veRL's ``global_batch_info``, and its config and error paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from reference.egspo_reference import (
    reference_counts,
    reference_high_sets,
    reference_loss,
    reference_weights,
)
from test_egspo_config import PL, compose_cfg
from test_egspo_loss import (
    CLIP_C,
    CLIP_HIGH,
    CLIP_LOW,
    EXPERT,
    T,
    assert_same,
    gate_inputs,
    loss_and_grad,
    make_batch,
    plugin_config,
)
from verl.utils.config import omega_conf_to_dataclass

from verl_espo.config import EGSPOConfig
from verl_espo.core.egspo import step_gate_weight_mean
from verl_espo.loss_inputs import MissingLossInputError, step_statistics


def needs_gate_weight_mean(policy_loss) -> bool:
    """Whether the trainer computes the step's mean gate weight for ``policy_loss`` (its loss's step statistics)."""
    return [statistic.name for statistic in step_statistics(policy_loss)] == ["gate_weight_mean"]


SPLIT_LENGTHS = [0, 1, T, 5, 3, T - 1, 0, 1, 7, T, 4, 9]
SPLIT_EXPERT = [False, False, False, True, True, True, False, True, False, True, False, True]
SPLITS = {
    # 4 micro-batches on one rank: the first without expert rows, the second all expert rows.
    "micro4": [[[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]],
    # 2 ranks with uneven micro-batches: rank 0 = no-expert + all-expert, rank 1 = 2 rows + 4 rows.
    "dp2": [[[0, 1, 2], [3, 4, 5]], [[6, 7], [8, 9, 10, 11]]],
}

ROOT = Path(__file__).resolve().parents[1]
GATES = ["batch", "sequence", "threshold"]
MU = 0.25


def reference_weight_stats(batch, egspo_ref: dict, expert=None) -> tuple[float, int]:
    """(``sum w_t``, rollout-token count) of the whole batch from the reference's own gate and weights (old policy)."""
    mask = batch["response_mask"]
    highs = reference_high_sets(
        batch["old_entropy"].double(),
        mask,
        egspo_ref["gate"],
        egspo_ref.get("rho", 0.2),
        egspo_ref.get("threshold"),
        expert,
    )
    weights = reference_weights(batch["log_prob"], batch["old_log_prob"], mask, highs, "egspo", "old", 1.0)
    return sum(weights.values()), len(weights)


def ref_gate_weight(batch, gate_ref: dict, expert=None, mu=None, dp_size=1):
    """The reference loss and gradient with the RL denominator replaced by the reference's own ``sum w_t``."""
    w_sum, _ = reference_weight_stats(batch, gate_ref, expert)
    lp = batch["log_prob"].detach().clone().double().requires_grad_(True)
    kw = dict(entropy=batch["old_entropy"].double(), clip_low=CLIP_LOW, clip_high=CLIP_HIGH, clip_c=CLIP_C, **gate_ref)
    if expert is None:
        kw["batch_num_tokens"] = w_sum
    else:
        counts = dict(reference_counts(batch["response_mask"], expert), rollout_tokens=w_sum)
        kw.update(expert=expert, mu=mu, counts=counts)
    loss = reference_loss(lp, batch["old_log_prob"].double(), batch["advantages"].double(), batch["response_mask"],
                          dp_size=dp_size, **kw)  # fmt: skip
    loss.backward()
    return loss.detach(), lp.grad


@pytest.mark.parametrize("hybrid", [False, True], ids=["rl", "hybrid"])
@pytest.mark.parametrize("gate", GATES)
def test_gate_weight_normalisation_matches_reference(gate, hybrid):
    batch = make_batch(seed=31 + GATES.index(gate))
    expert = torch.tensor(EXPERT) if hybrid else None
    egspo, gate_kw, gate_ref = gate_inputs(gate, batch, expert)
    config = plugin_config(egspo={**egspo, "rl_normalization": "gate_weight"})
    mix_kw = {"expert_mask": expert, "mu": MU} if hybrid else {}
    loss, grad, metrics = loss_and_grad("egspo", batch, config, **gate_kw, **mix_kw)
    want_loss, want_grad = ref_gate_weight(batch, gate_ref, expert, MU)
    assert_same(loss, want_loss)
    assert_same(grad, want_grad)
    w_sum, n = reference_weight_stats(batch, gate_ref, expert)
    assert metrics["actor/egspo/gate_weight_mean"] == pytest.approx(w_sum / n, rel=1e-12)
    assert w_sum / n < 0.9  # the gate attenuates: the two normalisations really differ on this batch


@pytest.mark.parametrize("gate", GATES)
def test_step_mean_weight_matches_reference(gate):
    batch = make_batch(seed=41, lengths=SPLIT_LENGTHS)
    expert = torch.tensor(SPLIT_EXPERT)
    egspo, gate_kw, gate_ref = gate_inputs(gate, batch, expert)
    rollout = batch["response_mask"] & ~expert.unsqueeze(-1)
    got = step_gate_weight_mean(
        EGSPOConfig(**egspo, rl_normalization="gate_weight"),
        batch["old_entropy"],
        batch["old_log_prob"],
        rollout,
        gate_kw.get("entropy_threshold"),
    )
    w_sum, n = reference_weight_stats(batch, gate_ref, expert)
    assert got == pytest.approx(w_sum / n, rel=1e-12)


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("hybrid", [False, True], ids=["rl", "hybrid"])
@pytest.mark.parametrize("gate", ["batch", "sequence"])
def test_split_over_micro_batches_and_ranks_equals_whole_batch(gate, hybrid, split):
    """Each micro-batch gets veRL's ``global_batch_info`` and the step's mean weight, as the trainer hands it."""
    batch = make_batch(seed=17, lengths=SPLIT_LENGTHS)
    mask = batch["response_mask"]
    expert = torch.tensor(SPLIT_EXPERT) if hybrid else None
    egspo, gate_kw, gate_ref = gate_inputs(gate, batch, expert)
    egspo["rl_normalization"] = "gate_weight"
    rollout = mask & ~expert.unsqueeze(-1) if hybrid else mask
    mean = step_gate_weight_mean(
        EGSPOConfig(**egspo), batch["old_entropy"], batch["old_log_prob"], rollout, gate_kw.get("entropy_threshold")
    )
    ranks = SPLITS[split]
    dp = len(ranks)
    info = {"dp_size": dp, "batch_num_tokens": int(mask.sum()), "global_batch_size": mask.shape[0]}
    config = plugin_config(egspo=egspo)
    kw = dict(gate_kw, gate_weight_mean=mean)
    if hybrid:
        kw.update(mu=MU, hybrid_counts=reference_counts(mask, expert))
    total, grad = torch.zeros((), dtype=torch.float64), torch.zeros_like(batch["log_prob"])
    for micro_batches in ranks:
        for rows in micro_batches:
            config.global_batch_info.update(info, loss_scale_factor=None)
            part = {k: v[rows] for k, v in batch.items()}
            part_kw = dict(kw, expert_mask=expert[rows]) if hybrid else kw
            loss, g, _ = loss_and_grad("egspo", part, config, **part_kw)
            total += loss / dp
            grad[rows] += g / dp
    want_loss, want_grad = ref_gate_weight(batch, gate_ref, expert, MU)
    assert_same(total, want_loss)
    assert_same(grad, want_grad)


@pytest.mark.parametrize("hybrid", [False, True], ids=["rl", "hybrid"])
def test_gate_weight_is_the_token_normalisation_over_the_mean_weight(hybrid):
    """Same batch, both switches: the RL part (and its gradient) scales by exactly 1 / mean(w)."""
    batch = make_batch(seed=5)
    expert = torch.tensor(EXPERT) if hybrid else None
    egspo, gate_kw, gate_ref = gate_inputs("batch", batch, expert)
    mix_kw = {"expert_mask": expert, "mu": 0.0} if hybrid else {}  # mu = 0: the RL part alone
    by_tokens, g_tokens, _ = loss_and_grad("egspo", batch, plugin_config(egspo=egspo), **gate_kw, **mix_kw)
    config = plugin_config(egspo={**egspo, "rl_normalization": "gate_weight"})
    by_weight, g_weight, metrics = loss_and_grad("egspo", batch, config, **gate_kw, **mix_kw)
    mean = metrics["actor/egspo/gate_weight_mean"]
    assert_same(by_weight, by_tokens / mean)
    assert_same(g_weight, g_tokens / mean)


def test_every_token_gated_high_makes_both_normalisations_equal():
    batch = make_batch(seed=9)
    egspo = {"gate": "sequence", "high_entropy_ratio": 1.0}
    a, ga, _ = loss_and_grad("egspo", batch, plugin_config(egspo=egspo))
    b, gb, _ = loss_and_grad("egspo", batch, plugin_config(egspo={**egspo, "rl_normalization": "gate_weight"}))
    assert_same(a, b)
    assert_same(ga, gb)


def test_chord_ignores_the_switch():
    batch = make_batch(seed=9)
    a, ga, _ = loss_and_grad("chord", batch, plugin_config("chord"))
    b, gb, _ = loss_and_grad("chord", batch, plugin_config("chord", egspo={"rl_normalization": "gate_weight"}))
    assert_same(a, b)
    assert_same(ga, gb)


# ---------------------------------------------------------------- errors and configuration


def test_inside_a_worker_the_step_mean_is_required():
    batch = make_batch(seed=3)
    config = plugin_config(egspo={"gate": "sequence", "rl_normalization": "gate_weight"})
    config.global_batch_info.update(dp_size=1, batch_num_tokens=int(batch["response_mask"].sum()))
    with pytest.raises(MissingLossInputError, match="gate_weight_mean"):
        loss_and_grad("egspo", batch, config)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum"])
def test_other_aggregations_are_refused(agg):
    config = plugin_config(loss_agg_mode=agg, egspo={"gate": "sequence", "rl_normalization": "gate_weight"})
    with pytest.raises(ValueError, match="loss_agg_mode=token-mean"):
        loss_and_grad("egspo", make_batch(seed=3), config)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["egspo.rl_normalization=weights"], "egspo.rl_normalization must be one of"),
        (["egspo.rl_normalization=gate_weight", "egspo.phi_source=current"], "needs"),
    ],
)
def test_bad_values_fail_at_config_time(overrides, message):
    cfg = compose_cfg("egspo_trainer", *(f"{PL}.{o}" for o in overrides))
    with pytest.raises(InstantiationException) as info:
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert f"{PL}.egspo.rl_normalization" in str(info.value) and message in str(info.value)


def test_yaml_dataclass_trainer_and_docs_agree():
    cfg = compose_cfg("egspo_trainer", f"{PL}.egspo.rl_normalization=gate_weight")
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.policy_loss.egspo.rl_normalization == "gate_weight"
    assert needs_gate_weight_mean(cfg.actor_rollout_ref.actor.policy_loss)
    assert not needs_gate_weight_mean(compose_cfg("egspo_trainer").actor_rollout_ref.actor.policy_loss)
    chord = compose_cfg("chord_trainer", f"{PL}.egspo.rl_normalization=gate_weight")
    assert not needs_gate_weight_mean(chord.actor_rollout_ref.actor.policy_loss)
    docs = (ROOT / "docs" / "egspo.md").read_text()
    table = docs[docs.index("`actor_rollout_ref.actor.policy_loss.egspo`") :]
    for name in EGSPOConfig.__dataclass_fields__:
        if name != "_target_":
            assert re.search(rf"^\| `{name}` \| `{getattr(EGSPOConfig(), name)}`".replace("`None`", "`null`"),
                             table, re.M), name  # fmt: skip


@pytest.mark.parametrize("gate", ["batch", "sequence"])
def test_the_trainer_computes_the_step_mean_from_its_nested_batch(gate):
    """The trainer's step statistics (``compute_step_statistics``) on the step's fields in the nested layout the
    trainer reads them in (expert rows left out, a zero in a response mask), against the reference's own weights."""
    from omegaconf import OmegaConf
    from verl.utils import tensordict_utils as tu

    from verl_espo.trainer.sync import compute_step_statistics

    batch = make_batch(seed=23, lengths=SPLIT_LENGTHS, scale=1.0)
    # the trainer holds float32 fields: round once, so that both sides (and the batch threshold) see the same values
    batch = {k: v.float().double() if v.is_floating_point() else v for k, v in batch.items()}
    mask = batch["response_mask"].clone()
    mask[2, 4] = False  # a masked token inside a response
    expert = torch.tensor(SPLIT_EXPERT)
    rows = []
    for i in range(mask.shape[0]):
        n = max(int(batch["response_mask"][i].sum()), 1)  # the trainer's rows hold at least one token
        rows.append({"response_mask": mask[i, :n].long(), "entropy": batch["old_entropy"][i, :n].float(),
                     "old_log_probs": batch["old_log_prob"][i, :n].float()})  # fmt: skip
    data = tu.list_of_dict_to_tensordict(rows)
    egspo, gate_kw, gate_ref = gate_inputs(gate, {**batch, "response_mask": mask}, expert)
    block = {"_target_": "verl_espo.config.EGSPOConfig", **egspo, "rl_normalization": "gate_weight"}
    policy_loss = OmegaConf.create({"_target_": "verl_espo.config.PluginPolicyLossConfig", "loss_mode": "egspo",
                                    "egspo": block})  # fmt: skip
    (got,) = compute_step_statistics(policy_loss, data, expert, gate_kw.get("entropy_threshold")).values()
    w_sum, n = reference_weight_stats({**batch, "response_mask": mask}, gate_ref, expert)
    assert got == pytest.approx(w_sum / n, rel=1e-12)
