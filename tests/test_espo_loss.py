"""The registered ``espo`` policy loss against the float64 loop reference in ``espo_reference.py``."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through the entry point)
from conftest import make_actor_config, random_batch
from espo_reference import reference_batch_threshold, reference_espo, reference_high_sets
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_espo.core.entropy import (
    batch_entropy_threshold,
    high_entropy_count,
    sequence_high_entropy_mask,
)

espo_loss = get_policy_loss_fn("espo")


def _call(batch, config, **kw):
    return espo_loss(
        old_log_prob=batch["old_log_prob"],
        log_prob=batch["log_prob"],
        advantages=batch["advantages"],
        response_mask=batch["response_mask"],
        loss_agg_mode=config.loss_agg_mode,
        config=config,
        old_entropy=batch["old_entropy"],
        **kw,
    )


def _loss_and_grad(batch, config, **kw):
    lp = batch["log_prob"].detach().clone().requires_grad_(True)
    loss, metrics = _call({**batch, "log_prob": lp}, config, **kw)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def _reference_loss_and_grad(batch, **kw):
    lp = batch["log_prob"].detach().clone().double().requires_grad_(True)
    loss = reference_espo(
        lp,
        batch["old_log_prob"].double(),
        batch["advantages"].double(),
        batch["response_mask"],
        batch["old_entropy"].double(),
        **kw,
    )
    loss.backward()
    return loss.detach(), lp.grad


# ---------------------------------------------------------------- grouping


def test_high_entropy_count_is_an_exact_ceiling():
    for rho_text in ("0.05", "0.1", "0.2", "0.3", "0.35", "0.7", "0.9", "1.0"):
        rho = float(rho_text)
        lengths = torch.arange(0, 201)
        got = high_entropy_count(rho, lengths)
        want = [max(1, min(n, math.ceil(Fraction(rho_text) * n))) for n in range(201)]
        assert got.tolist() == want, rho_text
    assert high_entropy_count(0.2, torch.tensor([15])).item() == 3  # 0.2 * 15 = 3.0000000000000004


@pytest.mark.parametrize("rho", [0.1, 0.2, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_sequence_grouping_matches_reference(rho, ties):
    batch = random_batch(B=10, T=17, seed=3, tie_entropy=ties)
    got = sequence_high_entropy_mask(batch["old_entropy"], batch["response_mask"], rho)
    want = reference_high_sets(batch["old_entropy"], batch["response_mask"], rho)
    for i, positions in enumerate(want):
        assert set(torch.nonzero(got[i]).flatten().tolist()) == positions
    assert not (got & ~batch["response_mask"]).any()


def test_equal_entropy_row_is_one_group():
    mask = torch.ones(2, 6, dtype=torch.bool)
    ent = torch.full((2, 6), 0.7)
    assert sequence_high_entropy_mask(ent, mask, 0.2).all()


@pytest.mark.parametrize("rho", [0.2, 0.45, 1.0])
def test_batch_threshold_matches_reference(rho):
    batch = random_batch(B=9, T=13, seed=5, tie_entropy=True)
    got = batch_entropy_threshold(batch["old_entropy"], batch["response_mask"], rho)
    assert got == reference_batch_threshold(batch["old_entropy"], batch["response_mask"], rho)
    assert batch_entropy_threshold(batch["old_entropy"], torch.zeros_like(batch["response_mask"]), rho) == math.inf


# ---------------------------------------------------------------- loss values and gradients


CASES = [
    dict(ratio=r, clip=c, aggregation=a, high_entropy_ratio=rho, grouping=g)
    for r in ("gspo_token", "literal")
    for c in ("adaptive", "fixed")
    for a in ("paper", "actor")
    for rho in (0.2, 0.8, 1.0)
    for g in ("sequence", "batch")
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradient_match_reference(case, seed):
    # Fixed clip with a tiny range makes many tokens clip, so both branches are exercised.
    config = make_actor_config(clip_ratio_low=0.01, clip_ratio_high=0.02, alpha=0.2, **case)
    batch = random_batch(B=8, T=11, seed=seed, tie_entropy=seed == 1)
    kw = {}
    threshold = None
    if case["grouping"] == "batch":
        threshold = reference_batch_threshold(batch["old_entropy"], batch["response_mask"], case["high_entropy_ratio"])
        kw["entropy_threshold"] = threshold
    loss, grad, metrics = _loss_and_grad(batch, config, **kw)
    ref_loss, ref_grad = _reference_loss_and_grad(
        batch,
        rho=case["high_entropy_ratio"],
        grouping=case["grouping"],
        threshold=threshold,
        ratio=case["ratio"],
        clip=case["clip"],
        alpha=0.2,
        vocab_size=100,
        clip_low=0.01,
        clip_high=0.02,
        aggregation=case["aggregation"],
        loss_agg_mode="token-mean",
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert grad[~batch["response_mask"]].abs().max() == 0
    assert 0.0 < metrics["actor/pg_clipfrac"] < 1.0  # both branches were taken


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_actor_aggregation_modes_match_reference(mode):
    config = make_actor_config(aggregation="actor", loss_agg_mode=mode)
    batch = random_batch(B=7, T=9, seed=11)
    loss, grad, _ = _loss_and_grad(batch, config)
    ref_loss, ref_grad = _reference_loss_and_grad(batch, aggregation="actor", loss_agg_mode=mode)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_rollout_is_weights_multiply_token_losses():
    config = make_actor_config()
    batch = random_batch(B=6, T=8, seed=2)
    w = torch.rand(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    lp = batch["log_prob"].clone().requires_grad_(True)
    loss, _ = espo_loss(
        batch["old_log_prob"],
        lp,
        batch["advantages"],
        batch["response_mask"],
        "token-mean",
        config,
        w,
        old_entropy=batch["old_entropy"],
    )
    loss.backward()
    ref_loss, ref_grad = _reference_loss_and_grad(batch, rollout_is_weights=w)
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lp.grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_extreme_log_ratios_stay_finite_and_match_reference():
    config = make_actor_config(clip="fixed")
    batch = random_batch(B=6, T=10, seed=4, scale=40.0)  # group log-ratios far beyond the clamp at 10
    loss, grad, metrics = _loss_and_grad(batch, config)
    ref_loss, ref_grad = _reference_loss_and_grad(batch, clip="fixed", clip_low=0.2, clip_high=0.28)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-9)
    assert metrics["actor/espo/high/log_ratio_abs_max"] > 10
    # Gradient utilisation counts clamped tokens (log s > 10, zero gradient) as lost, besides clipped ones.
    high = sequence_high_entropy_mask(batch["old_entropy"], batch["response_mask"], 0.2)
    lost = clamped = 0
    for i in range(6):
        for grp in (high[i], batch["response_mask"][i] & ~high[i]):
            if not grp.any():
                continue
            lr = float((batch["log_prob"][i] - batch["old_log_prob"][i])[grp].mean())
            s = math.exp(min(lr, 10.0))
            for t in torch.nonzero(grp).flatten().tolist():
                a = float(batch["advantages"][i, t])
                clipped = (a > 0 and s > 1.28) or (a < 0 and s < 0.8)
                lost += int(clipped or lr > 10)
                clamped += int(lr > 10 and not clipped)
    assert clamped > 0
    n_valid = int(batch["response_mask"].sum())
    assert metrics["actor/espo/grad_utilization"] == pytest.approx(1 - lost / n_valid)


def test_on_policy_gradient_is_the_policy_gradient():
    """At log_prob == old_log_prob nothing clips: the gradient is -A * w_t (Eq. 5 weights)."""
    config = make_actor_config()
    batch = random_batch(B=5, T=7, seed=9)
    batch["log_prob"] = batch["old_log_prob"].clone()
    _, grad, metrics = _loss_and_grad(batch, config)
    _, ref_grad = _reference_loss_and_grad(batch)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/espo/grad_utilization"] == 1.0


# ---------------------------------------------------------------- identities and invariances


def test_single_group_fixed_clip_equals_verl_gspo():
    """rho=1, clip=fixed, aggregation=paper is veRL's gspo with seq-mean-token-mean (value and gradient)."""
    config = make_actor_config(high_entropy_ratio=1.0, clip="fixed", loss_agg_mode="seq-mean-token-mean")
    gspo = get_policy_loss_fn("gspo")
    batch = random_batch(B=8, T=12, seed=12, dtype=torch.float32, scale=0.05)
    batch["response_mask"][0, 0] = True  # no empty row: both sides skip empty rows, but keep it simple
    lp1 = batch["log_prob"].clone().requires_grad_(True)
    lp2 = batch["log_prob"].clone().requires_grad_(True)
    loss1, m1 = _call({**batch, "log_prob": lp1}, config)
    loss2, m2 = gspo(
        batch["old_log_prob"], lp2, batch["advantages"], batch["response_mask"], "seq-mean-token-mean", config
    )
    loss1.backward()
    loss2.backward()
    torch.testing.assert_close(loss1, loss2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lp1.grad, lp2.grad, rtol=1e-6, atol=1e-7)
    assert m1["actor/pg_clipfrac"] == pytest.approx(m2["actor/pg_clipfrac"])
    assert m1["actor/ppo_kl"] == pytest.approx(m2["actor/ppo_kl"], rel=1e-5)
    assert m1["actor/espo/low/token_frac"] == 0.0


# ---------------------------------------------------------------- metrics


def test_metrics_describe_the_groups():
    config = make_actor_config(clip="fixed", clip_ratio_low=0.01, clip_ratio_high=0.01)
    batch = random_batch(B=8, T=20, seed=14, lengths=[20, 10, 5, 1, 0, 20, 15, 7])
    _, _, m = _loss_and_grad(batch, config)
    high = sequence_high_entropy_mask(batch["old_entropy"], batch["response_mask"], 0.2)
    n_valid = int(batch["response_mask"].sum())
    assert m["actor/espo/high/token_frac"] == pytest.approx(int(high.sum()) / n_valid)
    assert m["actor/espo/high/token_frac"] + m["actor/espo/low/token_frac"] == pytest.approx(1.0)
    non_empty = 7
    assert m["actor/espo/high/group_size_mean"] == pytest.approx(int(high.sum()) / non_empty)
    # Rows of length 1 have only a high group.
    assert m["actor/espo/num_groups_mean"] == pytest.approx(13 / 7)
    assert m["actor/espo/high/eps_mean"] == pytest.approx(0.01)
    # Count clipped tokens by hand: s_t = exp(group log-ratio) for gspo_token.
    lr, old, adv = batch["log_prob"], batch["old_log_prob"], batch["advantages"]
    upper = lower = 0
    for i in range(8):
        for grp in (high[i], batch["response_mask"][i] & ~high[i]):
            if not grp.any():
                continue
            s = math.exp(float((lr[i] - old[i])[grp].mean()))
            for t in torch.nonzero(grp).flatten().tolist():
                a = float(adv[i, t])
                upper += int(a > 0 and s > 1.01)
                lower += int(a < 0 and s < 0.99)
    assert m["actor/pg_clipfrac"] == pytest.approx((upper + lower) / n_valid)
    assert m["actor/espo/grad_utilization"] == pytest.approx(1 - (upper + lower) / n_valid)
    for key, value in m.items():
        assert math.isfinite(value), key
        if "clipfrac" in key or "token_frac" in key:
            assert 0.0 <= value <= 1.0, key


# ---------------------------------------------------------------- errors


def test_bad_inputs_are_rejected():
    config = make_actor_config()
    batch = random_batch()
    with pytest.raises(ValueError, match="old_entropy has shape"):
        _call({**batch, "old_entropy": batch["old_entropy"][:, :-1]}, config)
    with pytest.raises(ValueError, match="needs the actor config"):
        espo_loss(
            batch["old_log_prob"],
            batch["log_prob"],
            batch["advantages"],
            batch["response_mask"],
            "token-mean",
            None,
            old_entropy=batch["old_entropy"],
        )


def test_vocab_size_comes_from_the_model_config():
    from types import SimpleNamespace

    config = make_actor_config(vocab_size=None)
    batch = random_batch()
    with pytest.raises(ValueError, match="vocab_size is unset"):
        _call(batch, config)
    config.model_config = SimpleNamespace(hf_config=SimpleNamespace(vocab_size=100))
    loss_auto, _ = _call(batch, config)
    loss_explicit, _ = _call(batch, make_actor_config(vocab_size=100))
    torch.testing.assert_close(loss_auto, loss_explicit)


# ---------------------------------------------------------------- ties, eps floor, the paper's scale


def _bf16_entropies(B: int, T: int, seed: int) -> torch.Tensor:
    """Entropies as veRL computes them from bf16 logits: many near zero, bf16-rounded, so ties are common."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.distributions.Exponential(torch.tensor(2.0)).sample((B, T)) * (torch.rand(B, T, generator=g) < 0.4)
    return raw.to(torch.bfloat16).to(torch.float64)


@pytest.mark.parametrize("rho", [0.1, 0.2, 0.4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_position_ties_give_exactly_k_tokens_on_bf16_entropies(rho, seed):
    torch.manual_seed(seed)
    entropy = _bf16_entropies(12, 40, seed)
    mask = torch.ones(12, 40, dtype=torch.bool)
    mask[3, 25:] = False
    mask[7, 1:] = False  # a length-1 row
    got = sequence_high_entropy_mask(entropy, mask, rho, ties="position")
    want = reference_high_sets(entropy, mask, rho, ties="position")
    for i, positions in enumerate(want):
        assert set(torch.nonzero(got[i]).flatten().tolist()) == positions
    k = high_entropy_count(rho, mask.sum(-1))
    assert torch.equal(got.sum(-1), k)
    join = sequence_high_entropy_mask(entropy, mask, rho, ties="join")
    assert (got <= join).all() and (join.sum(-1) >= k).all()  # position keeps a subset of the tied set


def test_tie_collapse_is_logged_and_position_ties_keep_two_groups():
    batch = random_batch(B=4, T=10, seed=2, lengths=[10, 10, 5, 1])
    batch["old_entropy"][0] = 0.5  # all tied: "join" makes the row a single group
    batch["old_entropy"][2] = 0.0
    _, _, joined = _loss_and_grad(batch, make_actor_config(ties="join"))
    _, _, positional = _loss_and_grad(batch, make_actor_config(ties="position"))
    # rows 0 and 2 collapse under "join"; row 3 (length 1) has k = L and is not counted
    assert joined["actor/espo/tie_collapse_frac"] == pytest.approx(2 / 4)
    assert positional["actor/espo/tie_collapse_frac"] == 0.0
    assert positional["actor/espo/num_groups_mean"] > joined["actor/espo/num_groups_mean"]


@pytest.mark.parametrize("ties", ["join", "position"])
def test_position_ties_loss_matches_reference(ties):
    batch = random_batch(B=8, T=11, seed=4, tie_entropy=True)
    loss, grad, _ = _loss_and_grad(batch, make_actor_config(alpha=0.2, ties=ties))
    ref_loss, ref_grad = _reference_loss_and_grad(batch, ties=ties, alpha=0.2, vocab_size=100)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_eps_is_never_negative_and_eps_min_floors_it():
    batch = random_batch(B=6, T=9, seed=6)
    batch["old_entropy"] = batch["old_entropy"] - 1.5  # some groups' mean entropy below zero (rounding)
    batch["old_entropy"][1] = 0.0
    for eps_min in (0.0, 1e-3):
        config = make_actor_config(alpha=0.5, eps_min=eps_min)
        loss, grad, metrics = _loss_and_grad(batch, config)
        assert metrics["actor/espo/low/eps_mean"] >= eps_min and metrics["actor/espo/high/eps_mean"] >= eps_min
        ref_loss, ref_grad = _reference_loss_and_grad(batch, alpha=0.5, vocab_size=100, eps_min=eps_min)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
        assert torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="eps_min must be in"):
        make_actor_config(eps_min=-0.1)


@pytest.mark.parametrize("grouping", ["sequence", "batch"])
@pytest.mark.parametrize("ties", ["join", "position"])
def test_paper_scale_clip_decisions_match_reference(grouping, ties):
    """alpha 0.02, |V| 151,936: eps between 1e-4 and 4e-3, log-ratios of the same size, so clip decisions sit
    next to the bounds; entropies include zeros, negatives (rounding) and all-equal rows."""
    g = torch.Generator().manual_seed(11)
    B, T = 16, 48
    batch = random_batch(B=B, T=T, seed=11, lengths=[T, 1, 0, 17, T, 30, 5, T, 9, T, 2, T, 40, T, 33, 12])
    entropy = _bf16_entropies(B, T, 11) * 1.2
    entropy[4] = 0.0  # zero entropy: eps = 0, every moved token clips
    entropy[5] = -1e-3  # rounded below zero: eps clamped at 0
    entropy[7] = 0.75  # all equal
    batch["old_entropy"] = entropy
    batch["log_prob"] = batch["old_log_prob"] + torch.randn(B, T, generator=g, dtype=torch.float64) * 2e-3
    eps = 0.02 * entropy[entropy > 0] / math.log(151936)
    assert 1e-4 < float(eps.median()) < 4e-3
    kw = {}
    threshold = None
    if grouping == "batch":
        threshold = reference_batch_threshold(entropy, batch["response_mask"], 0.2)
        kw["entropy_threshold"] = threshold
    config = make_actor_config(alpha=0.02, vocab_size=151936, grouping=grouping, ties=ties)
    loss, grad, metrics = _loss_and_grad(batch, config, **kw)
    ref_loss, ref_grad = _reference_loss_and_grad(
        batch, grouping=grouping, threshold=threshold, ties=ties, alpha=0.02, vocab_size=151936
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-15)
    assert 0.05 < metrics["actor/pg_clipfrac"] < 0.95  # many decisions on each side of the bounds


# ---------------------------------------------------------------- grouping=token ("w/o entropy grouping", Sec. 4.4)

AGGREGATIONS = [("paper", "token-mean")] + [
    ("actor", mode)
    for mode in ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
]
TOKEN_CASES = [
    dict(ratio=r, clip=c, aggregation=a, loss_agg_mode=m)
    for r in ("gspo_token", "literal")
    for c in ("adaptive", "fixed")
    for a, m in AGGREGATIONS
]


@pytest.mark.parametrize("case", TOKEN_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("seed", [0, 1])
def test_token_grouping_loss_and_gradient_match_reference(case, seed):
    config = make_actor_config(
        clip_ratio_low=0.01,
        clip_ratio_high=0.02,
        alpha=0.2,
        grouping="token",
        loss_agg_mode=case["loss_agg_mode"],
        ratio=case["ratio"],
        clip=case["clip"],
        aggregation=case["aggregation"],
    )
    batch = random_batch(B=8, T=11, seed=seed, tie_entropy=seed == 1)
    loss, grad, metrics = _loss_and_grad(batch, config)  # no entropy_threshold: token groups need none
    ref_loss, ref_grad = _reference_loss_and_grad(
        batch, grouping="token", alpha=0.2, vocab_size=100, clip_low=0.01, clip_high=0.02, **case
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert grad[~batch["response_mask"]].abs().max() == 0
    assert 0.0 < metrics["actor/pg_clipfrac"] < 1.0  # both branches were taken


def test_token_grouping_paper_aggregation_is_seq_mean_token_mean():
    """Eq. 5 with n_g = 1 and K = L weighs each token 1/L: the actor's seq-mean-token-mean."""
    batch = random_batch(B=8, T=11, seed=3)
    paper, paper_grad, _ = _loss_and_grad(batch, make_actor_config(grouping="token"))
    actor, actor_grad, _ = _loss_and_grad(
        batch, make_actor_config(grouping="token", aggregation="actor", loss_agg_mode="seq-mean-token-mean")
    )
    torch.testing.assert_close(paper, actor, rtol=1e-12, atol=0)
    torch.testing.assert_close(paper_grad, actor_grad, rtol=1e-12, atol=0)
    # and every token of a response gets the same weight: on-policy, the gradient is -A_t / L_i
    batch["log_prob"] = batch["old_log_prob"].clone()
    _, grad, _ = _loss_and_grad(batch, make_actor_config(grouping="token"))
    mask = batch["response_mask"]
    lengths = mask.sum(-1, keepdim=True).clamp(min=1).double()
    rows = int((mask.sum(-1) > 0).sum())
    want = torch.where(mask, -batch["advantages"] / lengths / rows, 0.0)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-15)


def _paper_scale_token_batch(seed: int) -> dict:
    """alpha 0.02, |V| 151,936: per-token eps between 1e-4 and 4e-3, each token's log-ratio within a few percent of
    its own bound (both sides), and the edge rows: length 1, empty, zero / negative / all-equal entropies."""
    g = torch.Generator().manual_seed(seed)
    B, T = 16, 48
    batch = random_batch(B=B, T=T, seed=seed, lengths=[T, 1, 0, 17, T, 30, 5, T, 9, T, 2, T, 40, T, 33, 12])
    # bf16-rounded entropies in [0.06, 2.4] nats (eps 1e-4 .. 4e-3), mostly small as in training
    entropy = (0.06 + 2.34 * torch.rand(B, T, generator=g, dtype=torch.float64) ** 2).to(torch.bfloat16).double()
    entropy[4] = 0.0  # zero entropy: eps = 0, every moved token clips
    entropy[5] = -1e-3  # rounded below zero: eps clamped at 0
    entropy[7] = 0.75  # all equal
    batch["old_entropy"] = entropy
    eps = 0.02 * entropy.clamp(min=0) / math.log(151936)
    near = 1.0 + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5) * 0.1  # 0.95 .. 1.05 of eps
    sign = torch.where(torch.rand(B, T, generator=g) < 0.5, -1.0, 1.0).double()
    batch["log_prob"] = batch["old_log_prob"] + torch.log1p(sign * eps * near) + (eps == 0) * 1e-4 * sign
    return batch


@pytest.mark.parametrize(("aggregation", "mode"), AGGREGATIONS)
@pytest.mark.parametrize("ratio", ["gspo_token", "literal"])
def test_token_grouping_paper_scale_matches_reference(aggregation, mode, ratio):
    batch = _paper_scale_token_batch(seed=11)
    valid_eps = 0.02 * batch["old_entropy"][batch["response_mask"] & (batch["old_entropy"] > 0)] / math.log(151936)
    assert 1e-4 <= float(valid_eps.min()) < 2e-4 and 3e-3 < float(valid_eps.max()) <= 4.1e-3
    config = make_actor_config(
        alpha=0.02, vocab_size=151936, grouping="token", aggregation=aggregation, loss_agg_mode=mode, ratio=ratio
    )
    loss, grad, metrics = _loss_and_grad(batch, config)
    ref_loss, ref_grad = _reference_loss_and_grad(
        batch,
        grouping="token",
        alpha=0.02,
        vocab_size=151936,
        aggregation=aggregation,
        loss_agg_mode=mode,
        ratio=ratio,
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-15)
    if ratio == "gspo_token":  # the token ratios straddle their bounds: about half of the moved-up/down ones clip
        assert 0.1 < metrics["actor/pg_clipfrac"] < 0.9


def test_token_grouping_edge_cases_match_reference():
    """Length-1 and empty rows, zero / negative / all-equal entropies, +-50 log-ratios (clamped at +10)."""
    B, T = 8, 12
    batch = random_batch(B=B, T=T, seed=21, lengths=[1, 0, T, 5, 1, T, 7, 3])
    entropy = batch["old_entropy"]
    entropy[2] = 0.0
    entropy[3] = -0.5
    entropy[5] = 1.25
    batch["log_prob"][2, :6] = batch["old_log_prob"][2, :6] + 50.0
    batch["log_prob"][5, ::2] = batch["old_log_prob"][5, ::2] - 50.0
    batch["log_prob"][0, 0] = batch["old_log_prob"][0, 0] + 50.0  # a length-1 row beyond the clamp
    for ratio in ("gspo_token", "literal"):
        for eps_min in (0.0, 1e-3):
            config = make_actor_config(alpha=0.5, grouping="token", ratio=ratio, eps_min=eps_min)
            loss, grad, metrics = _loss_and_grad(batch, config)
            ref_loss, ref_grad = _reference_loss_and_grad(
                batch, grouping="token", alpha=0.5, vocab_size=100, ratio=ratio, eps_min=eps_min
            )
            assert torch.isfinite(loss) and torch.isfinite(grad).all()
            torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
            assert metrics["actor/espo/token/eps_mean"] >= eps_min
            assert metrics["actor/espo/token/log_ratio_abs_max"] == pytest.approx(50.0)
            assert grad[~batch["response_mask"]].abs().max() == 0
    # A micro-batch of empty rows (inside a mini-batch whose global counts veRL passes) adds zero, not NaN.
    empty = {**batch, "response_mask": torch.zeros_like(batch["response_mask"])}
    config = make_actor_config(grouping="token")
    config.global_batch_info.update(dp_size=1, batch_num_tokens=50, global_batch_size=8, loss_scale_factor=None)
    loss, grad, metrics = _loss_and_grad(empty, config)
    assert loss.item() == 0.0 and grad.abs().max() == 0
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize(("aggregation", "mode"), AGGREGATIONS)
def test_token_grouping_with_equal_entropies_is_verl_vanilla(aggregation, mode):
    """All entropies e: token grouping is veRL's vanilla PPO loss with clip eps = alpha * e / ln|V| (dual clip out of
    reach). Bit for bit with aggregation=actor; aggregation=paper is seq-mean-token-mean to 1e-12 (summation order)."""
    alpha, vocab, e = 0.02, 151936, 1.3
    eps = alpha * e / math.log(vocab)
    batch = random_batch(B=8, T=24, seed=17, dtype=torch.float64, scale=2 * eps)
    batch["old_entropy"] = torch.full_like(batch["old_entropy"], e)
    config = make_actor_config(
        clip_ratio_low=eps,
        clip_ratio_high=eps,
        loss_agg_mode=mode,
        alpha=alpha,
        vocab_size=vocab,
        grouping="token",
        aggregation=aggregation,
    )
    vanilla = get_policy_loss_fn("vanilla")
    vanilla_mode = "seq-mean-token-mean" if aggregation == "paper" else mode
    lp1 = batch["log_prob"].clone().requires_grad_(True)
    lp2 = batch["log_prob"].clone().requires_grad_(True)
    loss1, m1 = _call({**batch, "log_prob": lp1}, config)
    loss2, m2 = vanilla(batch["old_log_prob"], lp2, batch["advantages"], batch["response_mask"], vanilla_mode, config)
    loss1.backward()
    loss2.backward()
    if aggregation == "actor":
        assert torch.equal(loss1, loss2) and torch.equal(lp1.grad, lp2.grad)
    else:
        torch.testing.assert_close(loss1, loss2, rtol=1e-12, atol=0)
        torch.testing.assert_close(lp1.grad, lp2.grad, rtol=1e-12, atol=0)
    assert 0.2 < m2["actor/pg_clipfrac"] < 0.8 and m2["actor/pg_clipfrac_lower"] == 0.0
    assert m1["actor/pg_clipfrac"] == pytest.approx(m2["actor/pg_clipfrac"], abs=1e-6)
    assert m1["actor/ppo_kl"] == pytest.approx(m2["actor/ppo_kl"], rel=1e-5)
    assert m1["actor/espo/token/eps_mean"] == pytest.approx(eps, rel=1e-6)


def test_token_grouping_metrics():
    config = make_actor_config(grouping="token", alpha=0.5, eps_min=1e-3)
    batch = random_batch(B=8, T=20, seed=14, lengths=[20, 10, 5, 1, 0, 20, 15, 7])
    batch["old_entropy"][1] = -0.2  # eps floored at eps_min
    _, _, m = _loss_and_grad(batch, config)
    mask = batch["response_mask"]
    n_valid = int(mask.sum())
    assert not any(k.startswith(("actor/espo/high/", "actor/espo/low/")) for k in m)
    assert "actor/espo/tie_collapse_frac" not in m and "actor/espo/entropy_threshold" not in m
    assert "actor/espo/token/token_frac" not in m and "actor/espo/token/group_size_mean" not in m
    assert m["actor/espo/num_groups_mean"] == pytest.approx(n_valid / 7)  # mean L over the non-empty rows
    upper = lower = 0
    eps_sum = ent_sum = abs_sum = abs_max = 0.0
    for i, t in torch.nonzero(mask).tolist():
        h = float(batch["old_entropy"][i, t])
        eps = max(0.5 * h / math.log(100), 1e-3)
        lr = float(batch["log_prob"][i, t] - batch["old_log_prob"][i, t])
        s, a = math.exp(min(lr, 10.0)), float(batch["advantages"][i, t])
        upper += int(a > 0 and s > 1 + eps)
        lower += int(a < 0 and s < 1 - eps)
        eps_sum, ent_sum, abs_sum, abs_max = eps_sum + eps, ent_sum + h, abs_sum + abs(lr), max(abs_max, abs(lr))
    assert upper > 0 and lower > 0
    assert m["actor/espo/token/clipfrac_upper"] == pytest.approx(upper / n_valid)
    assert m["actor/espo/token/clipfrac_lower"] == pytest.approx(lower / n_valid)
    assert m["actor/pg_clipfrac"] == pytest.approx((upper + lower) / n_valid)
    assert m["actor/espo/grad_utilization"] == pytest.approx(1 - (upper + lower) / n_valid)
    assert m["actor/espo/token/eps_mean"] == pytest.approx(eps_sum / n_valid)
    assert m["actor/espo/token/entropy_mean"] == pytest.approx(ent_sum / n_valid)
    assert m["actor/espo/token/log_ratio_abs_mean"] == pytest.approx(abs_sum / n_valid)
    assert m["actor/espo/token/log_ratio_abs_max"] == pytest.approx(abs_max)
    assert m["actor/pg_clipfrac_lower"] == 0.0


def test_token_grouping_needs_no_step_threshold():
    from verl_espo.trainer.sync import step_threshold_ratio

    config = make_actor_config(grouping="token")
    assert step_threshold_ratio(config.policy_loss) is None  # the trainer computes no threshold for it
    assert step_threshold_ratio(make_actor_config(grouping="batch").policy_loss) == 0.2
    loss, _ = _call(random_batch(), config)  # no threshold passed, none in the extras
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("key", "value"), [("high_entropy_ratio", 0.4), ("high_entropy_ratio", 1.0), ("ties", "position")]
)
def test_token_grouping_refuses_keys_it_ignores(key, value):
    with pytest.raises(ValueError, match=rf"policy_loss\.espo\.{key} has no effect with .*grouping=token"):
        make_actor_config(grouping="token", **{key: value})
    make_actor_config(grouping="token", high_entropy_ratio=0.2, ties="join")  # the defaults are accepted
