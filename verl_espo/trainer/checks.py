"""Start-up checks of the plugin's trainer: settings it cannot honour fail before any worker starts."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from verl.utils.config import omega_conf_to_dataclass

from verl_espo.config.loss import PluginPolicyLossConfig
from verl_espo.loss_inputs import loss_spec, loss_specs
from verl_espo.trainer.expert_data import EXPERT_DATA_KEY, ExpertDataConfig

__all__ = ["check_trainer_config", "expert_data_config"]


def expert_data_config(config: DictConfig) -> ExpertDataConfig:
    """The validated ``data.expert`` block (disabled when absent or ``files: null``)."""
    block = config.data.get("expert", None)
    return ExpertDataConfig.from_mapping(OmegaConf.to_container(block, resolve=True) if block is not None else None)


def check_trainer_config(config: DictConfig) -> None:
    """Raise ``ValueError`` naming the key and the fix for settings the plugin's trainer cannot honour."""
    actor = config.actor_rollout_ref.actor
    loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
    spec = loss_spec(loss_mode)
    rollout_correction = config.algorithm.get("rollout_correction", None)
    if spec is not None and spec.old_entropy and rollout_correction and rollout_correction.get("bypass_mode", False):
        raise ValueError(
            f"policy_loss.loss_mode={loss_mode} needs the old policy's entropy, which veRL computes in the "
            "old-log-prob pass that algorithm.rollout_correction.bypass_mode=true skips (it also replaces the "
            "loss with veRL's `bypass_mode` loss). Set algorithm.rollout_correction.bypass_mode=false."
        )
    distillation = config.get("distillation", None)
    if distillation is not None and distillation.get("enabled", False):
        raise ValueError(
            "the plugin's trainer (trainer.v1.trainer_mode=plugin_sync) installs the plugin's actor loss, which would "
            "replace veRL's distillation loss; on-policy distillation is not supported with it."
        )
    if spec is not None and spec.config_blocks:
        actor_config = omega_conf_to_dataclass(actor)  # runs the config dataclasses' validation
        if not isinstance(actor_config.policy_loss, PluginPolicyLossConfig):
            raise ValueError(
                f"policy_loss.loss_mode={loss_mode} needs actor_rollout_ref.actor.policy_loss._target_="
                f"verl_espo.config.PluginPolicyLossConfig (set by pkg://verl_espo.config/{loss_mode}_trainer)"
            )

    expert = expert_data_config(config)
    if not expert.enabled:
        return
    if spec is None or not spec.expert_rows:
        hybrid = sorted(name for name, other in loss_specs().items() if other.expert_rows)
        raise ValueError(
            f"{EXPERT_DATA_KEY}.files is set, but policy_loss.loss_mode={loss_mode} does not train on expert rows; use "
            f"loss_mode in {hybrid} or set {EXPERT_DATA_KEY}.files=null"
        )
    train_batch_size = int(config.data.train_batch_size)
    if int(actor.ppo_mini_batch_size) != train_batch_size:
        raise ValueError(
            f"hybrid training ({EXPERT_DATA_KEY}.files set) normalises the RL and SFT parts over the whole step, so it "
            f"needs one PPO mini-batch per step: set actor_rollout_ref.actor.ppo_mini_batch_size={train_batch_size} "
            f"(= data.train_batch_size; got {actor.ppo_mini_batch_size}). CHORD trains this way."
        )
    rows = train_batch_size * int(config.actor_rollout_ref.rollout.n) + expert.batch_size
    world = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    for key, section in (
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", actor),
        ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", config.actor_rollout_ref.rollout),
    ):
        micro = section.get(key.rsplit(".", 1)[1], None)
        dynamic = section.get("use_dynamic_bsz", False) or section.get("log_prob_use_dynamic_bsz", False)
        if micro and not dynamic and rows % (int(micro) * world):
            raise ValueError(
                f"a hybrid step holds data.train_batch_size x rollout.n + {EXPERT_DATA_KEY}.batch_size = {rows} rows, "
                f"which {key}={micro} x {world} GPUs does not divide; choose sizes that divide it or use dynamic "
                "batch sizes (use_dynamic_bsz / log_prob_use_dynamic_bsz)"
            )
