"""The plugin's actor loss against veRL's own ``ppo_loss`` on micro-batches in veRL's nested layout."""

from __future__ import annotations

import pytest
import torch
import verl  # noqa: F401
from conftest import make_actor_config
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss

from verl_espo.loss_inputs import MissingLossInputError
from verl_espo.losses.espo import MissingOldEntropyError, compute_policy_loss_espo
from verl_espo.workers.actor_loss import ENTROPY_THRESHOLD_KEY, entropy_aware_ppo_loss, padded_old_entropy


def micro_batch(seed=0, n=5, with_entropy=True):
    """A micro-batch as veRL's FSDP engine hands it to the loss: nested tensors + global batch info."""
    g = torch.Generator().manual_seed(seed)
    rows, full_lp, full_ent = [], [], []
    for i in range(n):
        p_len, r_len = 2 + i % 3, 1 + (3 * i) % 7
        rows.append(
            {
                "prompts": torch.randint(3, 90, (p_len,), generator=g),
                "responses": torch.randint(3, 90, (r_len,), generator=g),
                "response_mask": torch.ones(r_len, dtype=torch.int64),
                "old_log_probs": -torch.rand(r_len, generator=g) * 2,
                "advantages": torch.full((r_len,), float(torch.randn(1, generator=g))),
                "ref_log_prob": -torch.rand(r_len, generator=g) * 2,
                "entropy": torch.rand(r_len, generator=g) * 3,
            }
        )
        if not with_entropy:
            rows[-1].pop("entropy")
        full_lp.append(-torch.rand(p_len + r_len, generator=g) * 2)
        full_ent.append(torch.rand(p_len + r_len, generator=g) * 3)
    data = tu.list_of_dict_to_tensordict(rows)
    n_tokens = int(sum(r["responses"].numel() for r in rows))
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=n_tokens + 3, global_batch_size=n + 1)
    log_probs = torch.nested.as_nested_tensor(full_lp, layout=torch.jagged).requires_grad_(True)
    model_output = {
        "log_probs": log_probs,
        "entropy": torch.nested.as_nested_tensor(full_ent, layout=torch.jagged),
    }
    return data, model_output


def _values(metrics):
    return {k: (v.aggregation, v.values) if isinstance(v, Metric) else v for k, v in metrics.items()}


@pytest.mark.parametrize("loss_mode", ["vanilla", "gspo"])
def test_other_loss_modes_are_bit_for_bit_verl(loss_mode):
    config_ours = make_actor_config(loss_mode=loss_mode)
    config_verl = make_actor_config(loss_mode=loss_mode)
    for cfg in (config_ours, config_verl):
        object.__setattr__(cfg, "use_kl_loss", True)
        object.__setattr__(cfg, "entropy_coeff", 0.01)
    data1, out1 = micro_batch(seed=1)
    data2, out2 = micro_batch(seed=1)
    loss1, m1 = entropy_aware_ppo_loss(config_ours, out1, data1)
    loss2, m2 = ppo_loss(config_verl, out2, data2)
    loss1.backward()
    loss2.backward()
    assert torch.equal(loss1, loss2)
    assert torch.equal(out1["log_probs"].grad.values(), out2["log_probs"].grad.values())
    assert _values(m1) == _values(m2)
    assert "kl_loss" in m1 and "actor/entropy_loss" in m1


def test_espo_gets_the_old_entropy_from_the_batch():
    config = make_actor_config(loss_mode="espo")
    data, out = micro_batch(seed=2)
    loss, metrics = entropy_aware_ppo_loss(config, out, data)

    padded = data.select("old_log_probs", "advantages", "response_mask").to_padded_tensor()
    lp_direct = out["log_probs"].detach().clone()
    from verl.workers.utils.padding import no_padding_2_padding

    direct, _ = compute_policy_loss_espo(
        padded["old_log_probs"],
        no_padding_2_padding(lp_direct, data),
        padded["advantages"],
        padded["response_mask"].bool(),
        config.loss_agg_mode,
        config,
        old_entropy=padded_old_entropy(data),
    )
    torch.testing.assert_close(metrics["actor/pg_loss"].values[0], direct.item())
    # No KL, no entropy bonus in this config: the actor loss is the policy loss.
    torch.testing.assert_close(loss, direct)

    # The loss-side old entropy: token-mean over the global token count, summed over micro-batches.
    old_entropy = metrics["actor/espo/old_entropy"]
    assert old_entropy.aggregation == AggregationType.SUM
    mask = padded["response_mask"].bool()
    expected = float((padded_old_entropy(data) * mask).sum() / data["batch_num_tokens"])
    assert old_entropy.values[0] == pytest.approx(expected)

    # Maxima aggregate as maxima; everything else as veRL does (means).
    assert metrics["actor/espo/high/log_ratio_abs_max"].aggregation == AggregationType.MAX
    assert metrics["actor/espo/high/clipfrac_upper"].aggregation == AggregationType.MEAN


def test_batch_threshold_travels_as_non_tensor_data():
    config = make_actor_config(loss_mode="espo", grouping="batch")
    data, out = micro_batch(seed=3)
    with pytest.raises(MissingLossInputError, match="grouping=batch"):
        entropy_aware_ppo_loss(config, out, data)
    tu.assign_non_tensor(data, **{ENTROPY_THRESHOLD_KEY: 1.5})
    _, metrics = entropy_aware_ppo_loss(config, out, data)
    assert metrics["actor/espo/entropy_threshold"].values == [1.5]


def test_missing_old_entropy_is_an_error_not_a_default():
    config = make_actor_config(loss_mode="espo")
    data, out = micro_batch(seed=4, with_entropy=False)
    with pytest.raises(MissingOldEntropyError, match="bypass_mode"):
        entropy_aware_ppo_loss(config, out, data)
    # veRL's own ppo_loss (the stock trainer) reaches the same error.
    with pytest.raises(MissingOldEntropyError):
        ppo_loss(config, out, data)


def test_the_loss_shipped_to_workers_is_light_and_reads_the_vocabulary_from_the_model_config(tmp_path):
    """make_actor_loss_fn ships plain containers (no tokenizer, no HFModelConfig); a worker rebuilds the actor
    config on first call and reads |V| from the model's Hugging Face config only."""
    import pickle

    from hydra import compose, initialize_config_module

    from verl_espo.toy.assets import build_tiny_model, build_tokenizer
    from verl_espo.workers.actor_loss import ActorLossFn, make_actor_loss_fn

    model_dir = tmp_path / "model"
    build_tiny_model(model_dir, build_tokenizer(model_dir))
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(
            config_name="espo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                "actor_rollout_ref.actor.strategy=fsdp2",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
            ],
        )
    fn = make_actor_loss_fn(cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.model)
    shipped = pickle.dumps(fn)
    assert len(shipped) < 20_000 and b"tokenizer" not in shipped
    worker_fn = pickle.loads(shipped)
    assert isinstance(worker_fn, ActorLossFn) and worker_fn._config is None
    from verl_espo.losses.espo import resolve_vocab_size

    config = worker_fn.config
    assert config.policy_loss.loss_mode == "espo" and config.policy_loss.run_trainer_mode == "plugin_sync"
    from transformers import AutoConfig

    assert resolve_vocab_size(config, config.policy_loss.espo) == AutoConfig.from_pretrained(model_dir).vocab_size
