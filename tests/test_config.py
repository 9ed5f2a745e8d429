"""Hydra composition of ``pkg://verl_espo.config`` and config-time validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import verl  # noqa: F401
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import OmegaConf, open_dict
from verl.utils.config import omega_conf_to_dataclass

from verl_espo import runner
from verl_espo.config import ESPOConfig, PluginPolicyLossConfig
from verl_espo.trainer.checks import check_trainer_config


def compose_espo(*overrides: str):
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        return compose(config_name="espo_trainer", overrides=list(overrides))


def actor_dataclass(cfg):
    with open_dict(cfg):
        cfg.actor_rollout_ref.actor.strategy = "fsdp2"
        cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 1
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_espo_trainer_composes_on_top_of_ppo_trainer():
    cfg = compose_espo()
    assert cfg.trainer.v1.trainer_mode == "plugin_sync"
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "espo"
    assert "critic" in cfg and "data" in cfg  # the rest of veRL's ppo_trainer is there
    actor = actor_dataclass(cfg)
    assert isinstance(actor.policy_loss, PluginPolicyLossConfig)
    assert actor.policy_loss.espo == ESPOConfig()  # the YAML states the dataclass defaults


def test_overrides_need_no_plus_and_are_typed():
    cfg = compose_espo(
        "actor_rollout_ref.actor.policy_loss.espo.alpha=0.05",
        "actor_rollout_ref.actor.policy_loss.espo.high_entropy_ratio=0.4",
        "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
        "actor_rollout_ref.actor.policy_loss.espo.ratio=literal",
        "actor_rollout_ref.actor.policy_loss.espo.clip=fixed",
        "actor_rollout_ref.actor.policy_loss.espo.aggregation=actor",
        "actor_rollout_ref.actor.policy_loss.espo.vocab_size=151936",
    )
    espo = actor_dataclass(cfg).policy_loss.espo
    assert (espo.alpha, espo.high_entropy_ratio, espo.grouping, espo.ratio, espo.clip, espo.aggregation) == (
        0.05,
        0.4,
        "batch",
        "literal",
        "fixed",
        "actor",
    )
    assert espo.vocab_size == 151936


@pytest.mark.parametrize(
    "override,message",
    [
        ("high_entropy_ratio=0", "high_entropy_ratio must be in (0, 1]"),
        ("high_entropy_ratio=1.5", "high_entropy_ratio must be in (0, 1]"),
        ("alpha=0", "alpha must be > 0"),
        ("alpha=-0.1", "alpha must be > 0"),
        ("grouping=tokens", "grouping must be one of"),
        ("ratio=gspo", "ratio must be one of"),
        ("clip=dynamic", "clip must be one of"),
        ("aggregation=mean", "aggregation must be one of"),
        ("vocab_size=1", "vocab_size must be null or an integer >= 2"),
    ],
)
def test_out_of_range_values_fail_at_config_time_naming_the_key(override, message):
    cfg = compose_espo(f"actor_rollout_ref.actor.policy_loss.espo.{override}")
    with pytest.raises(InstantiationException) as info:
        actor_dataclass(cfg)
    assert "actor_rollout_ref.actor.policy_loss.espo." + override.split("=")[0] in str(info.value)
    assert message in str(info.value)


def test_unknown_keys_fail_at_config_time():
    with pytest.raises(ConfigCompositionException, match="espo.bogus"):
        compose_espo("actor_rollout_ref.actor.policy_loss.espo.bogus=1")
    cfg = compose_espo("+actor_rollout_ref.actor.policy_loss.espo.bogus=1")
    with pytest.raises(
        InstantiationException, match=r"Unknown key\(s\) \['bogus'\] in actor_rollout_ref.actor.policy_loss.espo"
    ):
        actor_dataclass(cfg)


def test_blocks_are_built_from_their_mappings_and_checked():
    assert PluginPolicyLossConfig(espo={"alpha": 0.5}).espo.alpha == 0.5
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['nope'\] in actor_rollout_ref.actor.policy_loss.espo"):
        PluginPolicyLossConfig(espo={"nope": 1})
    with pytest.raises(ValueError, match="alpha must be > 0"):
        PluginPolicyLossConfig(espo={"alpha": 0})
    assert PluginPolicyLossConfig(espo={"_target_": "verl_espo.config.ESPOConfig", "alpha": 0.5}).espo.alpha == 0.5
    cfg = compose_espo("actor_rollout_ref.actor.policy_loss.espo.alpha=0.3")
    assert "_target_" not in cfg.actor_rollout_ref.actor.policy_loss.espo
    assert actor_dataclass(cfg).policy_loss.espo == ESPOConfig(alpha=0.3)


def test_trainer_refuses_bypass_mode_and_distillation():
    cfg = compose_espo()
    with open_dict(cfg):
        cfg.algorithm.rollout_correction.bypass_mode = True
    with pytest.raises(ValueError, match="bypass_mode"):
        check_trainer_config(cfg)
    cfg = compose_espo()
    with open_dict(cfg):
        cfg.distillation = OmegaConf.create({"enabled": True})
    with pytest.raises(ValueError, match="distillation"):
        check_trainer_config(cfg)


def test_trainer_requires_the_plugin_loss_config():
    cfg = compose_espo("actor_rollout_ref.actor.policy_loss._target_=verl.workers.config.PolicyLossConfig")
    with open_dict(cfg):
        cfg.actor_rollout_ref.actor.strategy = "fsdp2"
        cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 1
        for key in ("espo", "run_trainer_mode", "run_use_v1", "run_bypass_mode"):
            del cfg.actor_rollout_ref.actor.policy_loss[key]
    with pytest.raises(ValueError, match="PluginPolicyLossConfig"):
        check_trainer_config(cfg)


def test_stock_cli_rejects_bad_values_before_starting_ray(tmp_path):
    """`python -m verl.trainer.main_ppo` fails in its config validation, with the key in the message."""
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://verl_espo.config",
        "--config-name=espo_trainer",
        "actor_rollout_ref.actor.policy_loss.espo.alpha=-1",
        "actor_rollout_ref.model.path=/nonexistent",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    ]
    rc, _ = runner.run(cmd, runner.trainer_env(extra={"RAY_ADDRESS": ""}), log=tmp_path / "log", timeout_s=300)
    output = (tmp_path / "log").read_text()
    assert rc not in (0, runner.TIMEOUT_RETURNCODE), output[-3000:]
    assert "actor_rollout_ref.actor.policy_loss.espo.alpha must be > 0, got -1" in output
    assert "ray init kwargs" not in output


def test_gpu_example_composes(tmp_path):
    """examples/espo_gsm8k_qwen2.5_0.5b.sh passes only valid keys (Hydra prints the config, runs nothing)."""
    script = Path(__file__).parents[1] / "examples" / "espo_gsm8k_qwen2.5_0.5b.sh"
    for loss in ("espo", "grpo"):
        proc = subprocess.run(
            ["bash", str(script), "--cfg", "job"], capture_output=True, text=True, timeout=300,
            env={**os.environ, "LOSS": loss, "DATA_DIR": str(tmp_path),
                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        expected = "loss_mode: espo" if loss == "espo" else "loss_mode: vanilla"
        assert expected in proc.stdout
