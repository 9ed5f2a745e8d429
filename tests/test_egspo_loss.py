"""The registered ``egspo`` and ``chord`` losses against the float64 loop reference in
``tests/reference/egspo_reference.py``, veRL's ``vanilla`` loss and hand-counted metrics (split invariance, padding,
bf16 and missing inputs: ``tests/test_loss_contract.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through the entry point)
from conftest import random_batch
from reference.egspo_reference import (
    reference_batch_threshold,
    reference_counts,
    reference_high_sets,
    reference_loss,
    reference_weights,
)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import FSDPActorConfig, PolicyLossConfig

from verl_espo.config import EGSPOConfig, HybridConfig, PluginPolicyLossConfig
from verl_espo.loss_inputs import policy_loss_extras

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
RHO = 0.3
FIXED_THRESHOLD = 1.0  # entropies are uniform in [0, 3); with ties they are the integers 0..3
#: Tight clip and a low dual-clip bound so that every branch of the PPO token loss is taken.
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.05, 0.08, 1.5
T = 11
#: Rows: empty, length 1 and full ones among both rollout and expert rows.
LENGTHS = [0, 1, T, 5, 3, T - 1, 0, 1, 7, T]
EXPERT = [False, False, False, True, False, False, True, True, False, True]
RTOL, ATOL = 1e-9, 1e-12


def plugin_config(
    loss_mode="egspo",
    loss_agg_mode="token-mean",
    clip_ratio_low=CLIP_LOW,
    clip_ratio_high=CLIP_HIGH,
    clip_ratio_c=CLIP_C,
    egspo=None,
    hybrid=None,
):
    """An ``FSDPActorConfig`` whose policy loss is the plugin's config class, as Hydra builds it."""
    return FSDPActorConfig(
        strategy="fsdp2",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        clip_ratio_c=clip_ratio_c,
        loss_agg_mode=loss_agg_mode,
        policy_loss=PluginPolicyLossConfig(
            loss_mode=loss_mode, egspo=EGSPOConfig(**(egspo or {})), hybrid=HybridConfig(**(hybrid or {}))
        ),
    )


def make_batch(seed=0, lengths=LENGTHS, ties=False, scale=0.3, dtype=torch.float64):
    """``random_batch`` with valid log-probabilities (<= 0, so that ``p (1 - p) >= 0``)."""
    batch = random_batch(B=len(lengths), T=T, seed=seed, lengths=lengths, tie_entropy=ties, scale=scale, dtype=dtype)
    batch["log_prob"] = batch["log_prob"].clamp(max=-0.01)
    return batch


def call(loss_mode, batch, config, log_prob=None, **kw):
    if loss_mode == "egspo":
        kw.setdefault("old_entropy", batch["old_entropy"])
    return get_policy_loss_fn(loss_mode)(
        old_log_prob=batch["old_log_prob"],
        log_prob=batch["log_prob"] if log_prob is None else log_prob,
        advantages=batch["advantages"],
        response_mask=batch["response_mask"],
        loss_agg_mode="token-mean" if config is None else config.loss_agg_mode,
        config=config,
        **kw,
    )


def loss_and_grad(loss_mode, batch, config, **kw):
    lp = batch["log_prob"].detach().clone().requires_grad_(True)
    loss, metrics = call(loss_mode, batch, config, log_prob=lp, **kw)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def ref_loss_and_grad(batch, **kw):
    lp = batch["log_prob"].detach().clone().double().requires_grad_(True)
    loss = reference_loss(
        lp,
        batch["old_log_prob"].double(),
        batch["advantages"].double(),
        batch["response_mask"],
        entropy=batch["old_entropy"].double(),
        clip_low=CLIP_LOW,
        clip_high=CLIP_HIGH,
        clip_c=CLIP_C,
        **kw,
    )
    loss.backward()
    return loss.detach(), lp.grad


def assert_same(got, want, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def gate_inputs(gate, batch, expert=None):
    """(EGSPOConfig kwargs, loss kwargs, reference kwargs) of a gate; the batch threshold spans the whole step."""
    egspo = {"gate": gate}
    if gate == "threshold":
        egspo["threshold"] = FIXED_THRESHOLD
        return egspo, {}, {"gate": gate, "threshold": FIXED_THRESHOLD}
    egspo["high_entropy_ratio"] = RHO
    if gate == "sequence":
        return egspo, {}, {"gate": gate, "rho": RHO}
    tau = reference_batch_threshold(batch["old_entropy"], batch["response_mask"], RHO, expert)
    return egspo, {"entropy_threshold": tau}, {"gate": gate, "threshold": tau}


MIXES = [None] + [(sft_phi, mu) for sft_phi in (True, False) for mu in (0.0, 0.1, 0.9, 1.0)]


def mix_id(mix):
    return "rl" if mix is None else f"{'sftphi' if mix[0] else 'sft'}-mu{mix[1]}"


def mix_inputs(mix):
    """(HybridConfig kwargs, loss kwargs, reference kwargs) of pure RL or a hybrid batch with ``EXPERT`` rows."""
    if mix is None:
        return {}, {}, {}
    sft_phi, mu = mix
    expert = torch.tensor(EXPERT)
    return {"sft_phi": sft_phi}, {"expert_mask": expert, "mu": mu}, {"expert": expert, "mu": mu, "sft_phi": sft_phi}


# ---------------------------------------------------------------- values and gradients against the reference


@pytest.mark.parametrize("mix", MIXES, ids=mix_id)
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("phi_scale", [1.0, 4.0])
@pytest.mark.parametrize("phi_source", ["old", "current"])
@pytest.mark.parametrize("gate", ["batch", "sequence", "threshold"])
def test_egspo_matches_reference(gate, phi_source, phi_scale, agg, mix):
    batch = make_batch(seed=int(phi_scale) + 2 * AGG_MODES.index(agg), ties=phi_source == "current")
    hybrid, mix_kw, mix_ref = mix_inputs(mix)
    egspo, gate_kw, gate_ref = gate_inputs(gate, batch, mix_kw.get("expert_mask"))
    config = plugin_config(
        loss_agg_mode=agg, egspo={**egspo, "phi_source": phi_source, "phi_scale": phi_scale}, hybrid=hybrid
    )
    loss, grad, _ = loss_and_grad("egspo", batch, config, **gate_kw, **mix_kw)
    ref_loss, ref_grad = ref_loss_and_grad(
        batch, phi_source=phi_source, phi_scale=phi_scale, loss_agg_mode=agg, **gate_ref, **mix_ref
    )
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)
    assert grad[~batch["response_mask"]].abs().max() == 0


@pytest.mark.parametrize("mix", MIXES, ids=mix_id)
@pytest.mark.parametrize("agg", AGG_MODES)
def test_chord_matches_reference(agg, mix):
    batch = make_batch(seed=7 + AGG_MODES.index(agg))
    hybrid, mix_kw, mix_ref = mix_inputs(mix)
    config = plugin_config("chord", loss_agg_mode=agg, hybrid=hybrid)
    loss, grad, metrics = loss_and_grad("chord", batch, config, **mix_kw)
    ref_loss, ref_grad = ref_loss_and_grad(batch, loss_mode="chord", loss_agg_mode=agg, **mix_ref)
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)
    assert not any(k.startswith("actor/egspo/") for k in metrics)


def test_clip_and_dual_clip_branches_are_exercised():
    """The batches above take the PPO clip and the dual clip (else the reference tests would not test them)."""
    batch = make_batch(seed=1)
    _, _, metrics = loss_and_grad("chord", batch, plugin_config("chord"))
    assert 0.0 < metrics["actor/pg_clipfrac"] < 1.0
    assert metrics["actor/pg_clipfrac_lower"] > 0.0


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.35, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("gate", ["batch", "sequence"])
@pytest.mark.parametrize("ties", [False, True])
def test_gate_share_and_ties_match_reference(rho, gate, ties):
    """The gate per definition for several rho, with many tied entropies (ties with the k-th all join)."""
    batch = make_batch(seed=11, ties=ties)
    expert = torch.tensor(EXPERT)
    tau = reference_batch_threshold(batch["old_entropy"], batch["response_mask"], rho, expert)
    kw = {"entropy_threshold": tau} if gate == "batch" else {}
    config = plugin_config(egspo={"gate": gate, "high_entropy_ratio": rho}, hybrid={"sft_phi": True})
    loss, grad, metrics = loss_and_grad("egspo", batch, config, expert_mask=expert, mu=0.1, **kw)
    ref_loss, ref_grad = ref_loss_and_grad(batch, gate=gate, rho=rho, threshold=tau, expert=expert, mu=0.1)
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)
    highs = reference_high_sets(batch["old_entropy"], batch["response_mask"], gate, rho, tau, expert)
    n_rollout = sum(len(v) for v in _rollout_positions(batch, expert).values())
    assert metrics["actor/egspo/high_token_frac"] == pytest.approx(sum(map(len, highs.values())) / n_rollout)


def _rollout_positions(batch, expert):
    mask = batch["response_mask"]
    return {i: [t for t in range(T) if mask[i, t]] for i in range(mask.shape[0]) if not expert[i]}


def test_rollout_is_weights_multiply_the_rollout_token_losses():
    batch = make_batch(seed=5)
    w = torch.rand(len(LENGTHS), T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5
    expert = torch.tensor(EXPERT)
    egspo, gate_kw, gate_ref = gate_inputs("batch", batch, expert)
    config = plugin_config(egspo=egspo, loss_agg_mode="seq-mean-token-mean")
    loss, grad, _ = loss_and_grad("egspo", batch, config, rollout_is_weights=w, expert_mask=expert, mu=0.1, **gate_kw)
    ref_loss, ref_grad = ref_loss_and_grad(
        batch, rollout_is_weights=w, expert=expert, mu=0.1, loss_agg_mode="seq-mean-token-mean", **gate_ref
    )
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)


@pytest.mark.parametrize("key", ["advantages", "old_log_prob", "old_entropy"])
@pytest.mark.parametrize("loss_mode", ["egspo", "chord"])
def test_expert_rows_ignore_advantages_old_log_probs_and_entropies(loss_mode, key):
    """The RL inputs of expert rows (the trainer sets A = 0 there) do not enter the loss; non-finite old log-probs
    and entropies there change nothing either (non-finite advantages: see the padding test, same code path)."""
    batch = make_batch(seed=3)
    expert = torch.tensor(EXPERT)
    egspo, gate_kw, _ = gate_inputs("batch", batch, expert)
    config = plugin_config(loss_mode, egspo=egspo)
    kw = dict(expert_mask=expert, mu=0.3, **(gate_kw if loss_mode == "egspo" else {}))
    loss, grad, _ = loss_and_grad(loss_mode, batch, config, **kw)
    for value in (7.0, -9.0) if key == "advantages" else (7.0, -9.0, math.nan, math.inf, -math.inf):
        other = {**batch, key: torch.where(expert.unsqueeze(-1), torch.full_like(batch[key], value), batch[key])}
        loss2, grad2, _ = loss_and_grad(loss_mode, other, config, **kw)
        assert torch.equal(loss, loss2), value
        assert torch.equal(grad, grad2), (value, grad2[expert])


@pytest.mark.parametrize("loss_mode", ["egspo", "chord"])
def test_expert_rows_without_tokens_leave_pure_rl(loss_mode):
    """A step whose expert rows hold no token has no SFT part: the loss is L_RL (token-mean: the pure-RL loss)."""
    batch = make_batch(seed=6)
    expert = torch.tensor([i == 6 for i in range(len(LENGTHS))])  # row 6 is empty
    config = plugin_config(loss_mode, egspo={"gate": "sequence", "high_entropy_ratio": RHO})
    loss, grad, metrics = loss_and_grad(loss_mode, batch, config, expert_mask=expert, mu=0.5)
    want_loss, want_grad, _ = loss_and_grad(loss_mode, batch, config)
    assert_same(loss, want_loss, rtol=0, atol=1e-15)
    assert_same(grad, want_grad, rtol=0, atol=1e-15)
    assert metrics["actor/hybrid/expert_tokens"] == 0 and metrics["actor/hybrid/expert_rows"] == 1


def test_inputs_through_the_actor_loss_channel_equal_keywords():
    batch = make_batch(seed=4)
    expert = torch.tensor(EXPERT)
    egspo, gate_kw, _ = gate_inputs("batch", batch, expert)
    config = plugin_config(egspo=egspo)
    counts = reference_counts(batch["response_mask"], expert)
    kw = dict(expert_mask=expert, mu=0.2, hybrid_counts=counts, **gate_kw)
    loss, grad, _ = loss_and_grad("egspo", batch, config, **kw)
    with policy_loss_extras(old_entropy=batch["old_entropy"], **kw):
        loss2, grad2, _ = loss_and_grad("egspo", batch, config, old_entropy=None)
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2)


# ---------------------------------------------------------------- identities


def _vanilla_config(agg):
    return plugin_config("vanilla", loss_agg_mode=agg)  # veRL's vanilla reads only the actor's clip settings


RHO_ONE_GATES = [
    ("batch", {"gate": "batch", "high_entropy_ratio": 1.0}),
    ("sequence", {"gate": "sequence", "high_entropy_ratio": 1.0}),
    ("threshold-below-all", {"gate": "threshold", "threshold": -1.0}),
]


@pytest.mark.parametrize("in_worker", [False, True], ids=["local", "worker"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name,egspo", RHO_ONE_GATES, ids=[g[0] for g in RHO_ONE_GATES])
def test_rho_one_is_vanilla(name, egspo, agg, dtype, in_worker):
    """rho = 1 (every rollout token high) is veRL's ``vanilla``, value and gradient, bit for bit."""
    batch = make_batch(seed=12, dtype=dtype)
    vanilla = _vanilla_config(agg)
    config = plugin_config(loss_agg_mode=agg, egspo={**egspo, "phi_source": "current", "phi_scale": 4.0})
    if in_worker:  # what veRL's ppo_loss sets in a worker (here: 2 ranks, this is one of them)
        info = {"dp_size": 2, "batch_num_tokens": 97, "global_batch_size": 23, "loss_scale_factor": None}
        vanilla.global_batch_info.update(info)
        config.global_batch_info.update(info)
    kw = {}
    if egspo["gate"] == "batch":
        kw["entropy_threshold"] = reference_batch_threshold(batch["old_entropy"], batch["response_mask"], 1.0)
    loss, grad, metrics = loss_and_grad("egspo", batch, config, **kw)
    want_loss, want_grad, want_metrics = loss_and_grad("vanilla", batch, vanilla)
    assert loss.dtype == want_loss.dtype == dtype
    assert torch.equal(loss, want_loss), (loss - want_loss).item()
    assert torch.equal(grad, want_grad), (grad - want_grad).abs().max().item()
    assert metrics["actor/egspo/high_token_frac"] == 1.0
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
        assert metrics[key] == pytest.approx(want_metrics[key], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("agg", AGG_MODES)
def test_chord_without_experts_is_vanilla(agg):
    batch = make_batch(seed=13)
    loss, grad, metrics = loss_and_grad("chord", batch, plugin_config("chord", loss_agg_mode=agg))
    want_loss, want_grad, want_metrics = loss_and_grad("vanilla", batch, _vanilla_config(agg))
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)
    assert metrics == pytest.approx(want_metrics)


@pytest.mark.parametrize("mix", MIXES[1:], ids=mix_id)
def test_rho_one_egspo_is_chord_in_hybrid_training(mix):
    batch = make_batch(seed=14)
    hybrid, mix_kw, _ = mix_inputs(mix)
    egspo = {"gate": "sequence", "high_entropy_ratio": 1.0}
    loss, grad, _ = loss_and_grad("egspo", batch, plugin_config(egspo=egspo, hybrid=hybrid), **mix_kw)
    want_loss, want_grad, _ = loss_and_grad("chord", batch, plugin_config("chord", hybrid=hybrid), **mix_kw)
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)


@pytest.mark.parametrize("phi_source", ["old", "current"])
def test_egspo_and_chord_differ_only_on_low_entropy_rollout_tokens(phi_source):
    batch = make_batch(seed=15, scale=0.02)  # few clipped tokens: most low-entropy tokens have a gradient
    expert = torch.tensor(EXPERT)
    mask = batch["response_mask"]
    egspo = {"gate": "sequence", "high_entropy_ratio": RHO, "phi_source": phi_source}
    kw = dict(expert_mask=expert, mu=0.1)
    _, grad, _ = loss_and_grad("egspo", batch, plugin_config(egspo=egspo), **kw)
    _, chord_grad, _ = loss_and_grad("chord", batch, plugin_config("chord"), **kw)
    highs = reference_high_sets(batch["old_entropy"], mask, "sequence", RHO, expert=expert)
    weights = reference_weights(batch["log_prob"], batch["old_log_prob"], mask, highs, "egspo", phi_source, 1.0)
    n_low_differ = 0
    for i in range(mask.shape[0]):
        for t in range(T):
            if not mask[i, t] or expert[i] or t in highs[i]:  # expert tokens, high tokens, padding: identical
                assert grad[i, t] == chord_grad[i, t], (i, t)
            else:  # token-mean with the same denominators: the gradient is scaled by w_t
                assert 0.0 <= weights[i, t] <= 0.25
                assert grad[i, t].item() == pytest.approx(weights[i, t] * chord_grad[i, t].item(), rel=1e-12, abs=0)
                n_low_differ += int(chord_grad[i, t] != 0)
    assert n_low_differ > 5


def test_advantage_sign_is_kept_on_low_entropy_tokens():
    """``w_t >= 0``: wherever the token's ratio is not clipped, d loss / d log_prob has the sign of ``-A``."""
    batch = make_batch(seed=16, scale=0.01)  # ratios inside the clip range
    egspo = {"gate": "sequence", "high_entropy_ratio": RHO, "phi_source": "current", "phi_scale": 4.0}
    _, grad, metrics = loss_and_grad("egspo", batch, plugin_config(egspo=egspo))
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/egspo/high_token_frac"] < 0.5
    mask = batch["response_mask"]
    sign = torch.sign(grad[mask])
    assert torch.equal(sign, -torch.sign(batch["advantages"][mask]))


# ---------------------------------------------------------------- numerics


def _extreme_batch():
    """Valid log-probs with log-ratios of +-50 (beyond veRL's clamp at 20) and both advantage signs."""
    batch = make_batch(seed=18)
    lp, old = batch["log_prob"].clone(), batch["old_log_prob"].clone()
    for i, t in ((2, 0), (2, 3), (5, 1), (8, 2), (9, 4), (10 - 1, 6)):
        old[i, t], lp[i, t] = -50.1, -0.1  # ratio e^50
    for i, t in ((2, 1), (5, 4), (8, 5), (3, 2)):
        old[i, t], lp[i, t] = -0.1, -50.1  # ratio e^-50
    batch["advantages"][5] = -batch["advantages"][2]  # the row signs differ
    return {**batch, "log_prob": lp, "old_log_prob": old}


@pytest.mark.parametrize("phi_source", ["old", "current"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_extreme_log_ratios_give_finite_gradients(phi_source, agg):
    batch = _extreme_batch()
    expert = torch.tensor(EXPERT)
    egspo, gate_kw, gate_ref = gate_inputs("batch", batch, expert)
    config = plugin_config(loss_agg_mode=agg, egspo={**egspo, "phi_source": phi_source})
    loss, grad, _ = loss_and_grad("egspo", batch, config, expert_mask=expert, mu=0.1, **gate_kw)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    ref_loss, ref_grad = ref_loss_and_grad(
        batch, phi_source=phi_source, loss_agg_mode=agg, expert=expert, mu=0.1, **gate_ref
    )
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)


# ---------------------------------------------------------------- metrics on a hand-counted case


def test_metrics_on_a_hand_counted_case():
    """Two rollout rows and one expert row; ratio 1 everywhere, so each rollout token's PPO loss is ``-A``.

    Row 0 (A = +1): entropies 2.0, 0.5, 1.0, 0.1 with p = 0.5, 0.2, 0.9, 0.6. Row 1 (A = -1): entropies 1.5, 0.2 with
    p = 0.3, 0.5. Row 2 (expert): p = 0.5, 0.25, 0.8. Gate ``threshold=1.0`` (ties join): high = row 0 t0, t2 and
    row 1 t0; low = row 0 t1 (p 0.2), t3 (p 0.6) and row 1 t1 (p 0.5), with phi = 0.16, 0.24, 0.25.
    """
    probs = [[0.5, 0.2, 0.9, 0.6], [0.3, 0.5, 1.0, 1.0], [0.5, 0.25, 0.8, 1.0]]
    lp = torch.tensor(probs, dtype=torch.float64).log()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    ent = torch.tensor([[2.0, 0.5, 1.0, 0.1], [1.5, 0.2, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0] * 4, [-1.0] * 4, [0.0] * 4], dtype=torch.float64)
    batch = {"log_prob": lp, "old_log_prob": lp.clone(), "advantages": adv, "response_mask": mask, "old_entropy": ent}
    expert = torch.tensor([False, False, True])
    config = plugin_config(egspo={"gate": "threshold", "threshold": 1.0, "phi_scale": 2.0})
    loss, metrics = call("egspo", batch, config, expert_mask=expert, mu=0.1)

    assert metrics["actor/egspo/high_token_frac"] == pytest.approx(3 / 6)
    assert metrics["actor/egspo/phi_mean_low"] == pytest.approx(2.0 * (0.16 + 0.24 + 0.25) / 3)
    assert metrics["actor/egspo/low_neg_adv_frac"] == pytest.approx(1 / 3)
    assert metrics["actor/egspo/weight_mean"] == pytest.approx((3 + 2.0 * 0.65) / 6)
    assert metrics["actor/egspo/entropy_threshold"] == 1.0
    # rl = token mean of w * (-A): row 0: -(1 + 0.32 + 1 + 0.48), row 1: +(1 + 0.5)
    rl = (-(1 + 0.32 + 1 + 0.48) + (1 + 0.5)) / 6
    # SFT-phi over the expert tokens: -sum(p (1 - p) log p) / 3
    sft = (0.25 * math.log(2) + 0.1875 * math.log(4) + 0.16 * math.log(1.25)) / 3
    assert metrics["actor/hybrid/rl_loss"] == pytest.approx(rl, rel=1e-12)
    assert metrics["actor/hybrid/sft_loss"] == pytest.approx(sft, rel=1e-12)
    assert loss.item() == pytest.approx(0.9 * rl + 0.1 * sft, rel=1e-12)
    assert metrics["actor/hybrid/mu"] == 0.1
    assert metrics["actor/hybrid/sft_weight_mean"] == pytest.approx((0.25 + 0.1875 + 0.16) / 3)
    assert metrics["actor/hybrid/expert_nll"] == pytest.approx(math.log(10) / 3)
    counts = {"rollout_tokens": 6, "expert_tokens": 3, "rollout_rows": 2, "expert_rows": 1}
    for key, value in counts.items():
        assert metrics[f"actor/hybrid/{key}"] == value
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/ppo_kl"] == 0.0

    _, plain = call(
        "egspo",
        batch,
        plugin_config(egspo={"gate": "threshold", "threshold": 1.0}, hybrid={"sft_phi": False}),
        expert_mask=expert,
        mu=0.1,
    )
    assert plain["actor/hybrid/sft_weight_mean"] == 1.0
    assert plain["actor/hybrid/sft_loss"] == pytest.approx(math.log(10) / 3, rel=1e-12)


# ---------------------------------------------------------------- errors


def _hybrid_kw():
    return {"expert_mask": torch.tensor(EXPERT), "mu": 0.1}


def test_mismatched_or_incomplete_counts_are_errors():
    batch = make_batch()
    counts = reference_counts(batch["response_mask"], torch.tensor(EXPERT))
    config = plugin_config(egspo={"gate": "sequence"})
    config.global_batch_info.update(dp_size=1, batch_num_tokens=counts["rollout_tokens"] + counts["expert_tokens"] + 1)
    with pytest.raises(ValueError, match="differ from the mini-batch"):
        call("egspo", batch, config, hybrid_counts=counts, **_hybrid_kw())
    with pytest.raises(ValueError, match="rollout_rows"):
        call(
            "egspo",
            batch,
            config,
            hybrid_counts={k: v for k, v in counts.items() if k != "rollout_rows"},
            **_hybrid_kw(),
        )


def test_bad_direct_inputs_are_errors():
    batch = make_batch()
    config = plugin_config(egspo={"gate": "sequence"})
    with pytest.raises(ValueError, match="mu must be in"):
        call("egspo", batch, config, expert_mask=torch.tensor(EXPERT), mu=1.5)
    with pytest.raises(ValueError, match="expert_mask has 3 rows"):
        call("egspo", batch, config, expert_mask=torch.tensor([True, False, True]), mu=0.1)
    with pytest.raises(ValueError, match="old_entropy has shape"):
        call("egspo", batch, config, old_entropy=batch["old_entropy"][:, :4])


def test_config_errors():
    batch = make_batch()
    vanilla_block = FSDPActorConfig(
        strategy="fsdp2", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=PolicyLossConfig(loss_mode="egspo")
    )
    with pytest.raises(ValueError, match="PluginPolicyLossConfig"):
        call("egspo", batch, vanilla_block)
    with pytest.raises(ValueError, match="needs the actor config"):
        call("chord", batch, None)
    with pytest.raises(ValueError, match=r"policy_loss\.egspo\.gate=threshold needs"):
        EGSPOConfig(gate="threshold")
    with pytest.raises(ValueError, match=r"policy_loss\.egspo\.threshold is only used"):
        EGSPOConfig(gate="batch", threshold=0.5)
    with pytest.raises(ValueError, match=r"policy_loss\.egspo\.phi_scale must be > 0"):
        EGSPOConfig(phi_scale=-1.0)
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['gat'\]"):
        PluginPolicyLossConfig(loss_mode="egspo", egspo={"gat": "batch"})
