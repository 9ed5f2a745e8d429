"""EGSPO / CHORD configs: Hydra composition of ``pkg://verl_espo.config`` and validation before any worker starts."""

from __future__ import annotations

import pytest
import verl  # noqa: F401
from hydra import compose, initialize_config_module
from hydra.errors import InstantiationException
from omegaconf import open_dict
from verl.utils.config import omega_conf_to_dataclass

from verl_espo.config import EGSPOConfig, HybridConfig, PluginPolicyLossConfig
from verl_espo.trainer.checks import check_trainer_config, expert_data_config
from verl_espo.trainer.expert_data import ExpertDataConfig

PL = "actor_rollout_ref.actor.policy_loss"


def compose_cfg(name: str, *overrides: str):
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(config_name=name, overrides=list(overrides))
    with open_dict(cfg):  # what a launcher sets; kept where an override gave its own value
        cfg.actor_rollout_ref.actor.strategy = "fsdp2"
        for section, key in (
            (cfg.actor_rollout_ref.actor, "ppo_micro_batch_size_per_gpu"),
            (cfg.actor_rollout_ref.rollout, "log_prob_micro_batch_size_per_gpu"),
        ):
            if section.get(key) is None:
                section[key] = 1
    return cfg


@pytest.mark.parametrize("name,loss_mode", [("egspo_trainer", "egspo"), ("chord_trainer", "chord")])
def test_trainer_configs_compose_with_documented_defaults(name, loss_mode):
    cfg = compose_cfg(name)
    assert cfg.trainer.v1.trainer_mode == "plugin_sync"
    assert cfg.algorithm.adv_estimator == "hybrid_grpo"
    assert cfg.data.expert.files is None  # pure RL until expert data is configured
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, PluginPolicyLossConfig)
    assert actor.policy_loss.loss_mode == loss_mode
    assert actor.policy_loss.egspo == EGSPOConfig()  # the YAML states the dataclass defaults
    assert actor.policy_loss.hybrid == HybridConfig()
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.2, 3.0)
    assert actor.loss_agg_mode == "token-mean" and not actor.use_kl_loss and actor.entropy_coeff == 0.0
    assert expert_data_config(cfg) == ExpertDataConfig()
    check_trainer_config(cfg)


def test_egspo_and_chord_differ_only_in_the_loss_mode():
    egspo, chord = compose_cfg("egspo_trainer"), compose_cfg("chord_trainer")
    with open_dict(chord):
        chord.actor_rollout_ref.actor.policy_loss.loss_mode = "egspo"
    assert egspo == chord


@pytest.mark.parametrize(
    "override,message",
    [
        ("egspo.gate=token", "egspo.gate must be one of"),
        ("egspo.gate=threshold", "egspo.threshold (a finite entropy in nats)"),
        ("egspo.threshold=0.5", "egspo.threshold is only used with gate=threshold"),
        ("egspo.high_entropy_ratio=0", "egspo.high_entropy_ratio must be in (0, 1]"),
        ("egspo.phi_source=new", "egspo.phi_source must be one of"),
        ("egspo.phi_scale=0", "egspo.phi_scale must be > 0"),
        ("hybrid.mu_peak=1.5", "hybrid.mu_peak must be in [0, 1]"),
        ("hybrid.mu_valley=-0.1", "hybrid.mu_valley must be in [0, 1]"),
        ("hybrid.mu_decay_steps=-1", "hybrid.mu_decay_steps must be an integer >= 0"),
    ],
)
def test_bad_values_fail_at_config_time_naming_the_key(override, message):
    cfg = compose_cfg("egspo_trainer", f"{PL}.{override}")
    with pytest.raises(InstantiationException) as info:
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert f"{PL}.{override.split('=')[0]}" in str(info.value)
    assert message in str(info.value)


def test_threshold_gate_with_a_threshold_is_valid():
    cfg = compose_cfg("egspo_trainer", f"{PL}.egspo.gate=threshold", f"{PL}.egspo.threshold=0.7")
    assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor).policy_loss.egspo.threshold == 0.7


def _hybrid(name="egspo_trainer", *overrides):
    return compose_cfg(
        name,
        "data.expert.files=[/data/expert.parquet]",
        "data.train_batch_size=32",
        "actor_rollout_ref.actor.ppo_mini_batch_size=32",
        "actor_rollout_ref.rollout.n=8",
        *overrides,
    )


def test_hybrid_settings_are_checked_before_workers_start():
    check_trainer_config(_hybrid())  # CHORD's math shape: 32 x 8 + 64 expert rows, one mini-batch
    assert expert_data_config(_hybrid()).files == ["/data/expert.parquet"]
    with pytest.raises(ValueError, match=r"ppo_mini_batch_size=32 \(= data.train_batch_size"):
        check_trainer_config(_hybrid("egspo_trainer", "actor_rollout_ref.actor.ppo_mini_batch_size=8"))
    with pytest.raises(ValueError, match="does not train on expert rows"):
        check_trainer_config(_hybrid("egspo_trainer", f"{PL}.loss_mode=vanilla"))
    with pytest.raises(ValueError, match="320 rows, which actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3"):
        check_trainer_config(_hybrid("chord_trainer", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3"))
    # dynamic batch sizes lift the divisibility requirement
    check_trainer_config(
        _hybrid(
            "chord_trainer",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3",
            "actor_rollout_ref.actor.use_dynamic_bsz=true",
            "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
        )
    )
    with pytest.raises(ValueError, match="data.expert.batch_size must be an integer >= 1"):
        check_trainer_config(_hybrid("egspo_trainer", "data.expert.batch_size=0"))
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['bogus'\] in data.expert"):
        check_trainer_config(_hybrid("egspo_trainer", "+data.expert.bogus=1"))


@pytest.mark.parametrize("name", ["espo_trainer", "egspo_trainer"])
@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.use_v1=false", "trainer.use_v1=false is not supported"),
        (
            "trainer.v1.trainer_mode=sync",
            "trainer.v1.trainer_mode=sync cannot. Set trainer.v1.trainer_mode=plugin_sync",
        ),
        ("trainer.v1.trainer_mode=colocate_async", "trainer.v1.trainer_mode=colocate_async cannot"),
        ("algorithm.rollout_correction.bypass_mode=true", "set algorithm.rollout_correction.bypass_mode=false"),
    ],
)
def test_settings_that_drop_the_old_entropy_fail_at_config_time(name, override, message):
    cfg = compose_cfg(name, override)
    with pytest.raises(InstantiationException, match="needs the old policy's per-token entropy") as info:
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # what the driver's validate_config does
    assert message in str(info.value)


def test_chord_without_expert_rows_runs_on_any_trainer():
    cfg = compose_cfg("chord_trainer", "trainer.v1.trainer_mode=sync")
    assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor).policy_loss.loss_mode == "chord"
