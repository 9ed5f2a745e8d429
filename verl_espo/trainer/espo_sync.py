"""``espo_sync``: veRL's V1 synchronous trainer with the plugin's entropy-aware actor loss.

Selected with ``trainer.v1.trainer_mode=espo_sync`` (the default of ``pkg://verl_espo.config/espo_trainer``).
It behaves exactly like veRL's ``sync`` trainer, plus:

1. at start-up it refuses settings under which the old policy's entropy cannot reach the loss
   (``algorithm.rollout_correction.bypass_mode``) or under which the plugin's actor loss would replace
   another one (on-policy distillation), and validates the actor config;
2. after the workers are built it installs :func:`~verl_espo.workers.actor_loss.entropy_aware_ppo_loss`
   through veRL's public ``ActorRolloutRefWorker.set_loss_fn``;
3. for ``espo.grouping=batch`` it computes the entropy threshold once per training step, over the whole
   step's batch, before the actor update, and passes it to every micro-batch and rank.
"""

from __future__ import annotations

import logging

import transfer_queue as tq
from omegaconf import DictConfig
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.config import omega_conf_to_dataclass

from verl_espo.config.loss import ESPO_KEY_PREFIX, ESPOConfig
from verl_espo.core.espo import batch_entropy_threshold
from verl_espo.losses import ENTROPY_AWARE_LOSS_MODES
from verl_espo.workers.actor_loss import ENTROPY_THRESHOLD_KEY, OLD_ENTROPY_KEY, make_actor_loss_fn

__all__ = ["ESPOTrainerSync", "check_trainer_config"]

logger = logging.getLogger(__name__)


def check_trainer_config(config: DictConfig) -> None:
    """Raise ``ValueError`` for settings the plugin's trainer cannot honour (called before any worker starts)."""
    actor = config.actor_rollout_ref.actor
    loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
    rollout_correction = config.algorithm.get("rollout_correction", None)
    if loss_mode in ENTROPY_AWARE_LOSS_MODES and rollout_correction and rollout_correction.get("bypass_mode", False):
        raise ValueError(
            f"policy_loss.loss_mode={loss_mode} needs the old policy's entropy, which veRL computes in the "
            "old-log-prob pass that algorithm.rollout_correction.bypass_mode=true skips (it also replaces the "
            "loss with veRL's `bypass_mode` loss). Set algorithm.rollout_correction.bypass_mode=false."
        )
    distillation = config.get("distillation", None)
    if distillation is not None and distillation.get("enabled", False):
        raise ValueError(
            "trainer.v1.trainer_mode=espo_sync installs the plugin's actor loss, which would replace veRL's "
            "distillation loss; on-policy distillation is not supported with it."
        )
    if loss_mode in ENTROPY_AWARE_LOSS_MODES:
        actor_config = omega_conf_to_dataclass(actor)  # runs the config dataclasses' validation
        params = actor_config.policy_loss.get("espo", None)
        if loss_mode == "espo" and not isinstance(params, ESPOConfig):
            raise ValueError(
                "policy_loss.loss_mode=espo needs actor_rollout_ref.actor.policy_loss._target_="
                "verl_espo.config.ESPOPolicyLossConfig (set by pkg://verl_espo.config/espo_trainer)"
            )


@register_trainer("espo_sync")
class ESPOTrainerSync(PPOTrainerSync):
    """veRL's synchronous V1 trainer with the entropy-aware actor loss (see the module docstring)."""

    def __init__(self, config: DictConfig):
        check_trainer_config(config)
        super().__init__(config)

    # veRL's base trainer switches on `self.trainer_mode == "sync"` (replay buffer, dataloader, checkpoints);
    # this trainer is the sync trainer, whatever name selected it.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.selected_trainer_mode = value

    def on_init_end(self) -> None:
        loss_fn = make_actor_loss_fn(self.config.actor_rollout_ref.actor, self.config.actor_rollout_ref.model)
        self.actor_rollout_wg.set_loss_fn(loss_fn)
        logger.info("verl_espo: installed entropy_aware_ppo_loss in the actor workers")
        super().on_init_end()

    def _espo_batch_grouping(self) -> ESPOConfig | None:
        policy_loss = self.config.actor_rollout_ref.actor.policy_loss
        if policy_loss.get("loss_mode", "vanilla") != "espo":
            return None
        espo = policy_loss.get("espo", None)
        if espo is None or espo.get("grouping", "sequence") != "batch":
            return None
        return espo

    def _update_actor(self, batch, metrics: dict):
        espo = self._espo_batch_grouping()
        if espo is not None:
            data = tq.kv_batch_get(
                keys=batch.keys, partition_id=batch.partition_id, select_fields=[OLD_ENTROPY_KEY, "response_mask"]
            )
            if OLD_ENTROPY_KEY not in data.keys():
                raise RuntimeError(f"{ESPO_KEY_PREFIX}.grouping=batch: the batch has no old-policy `entropy`")
            entropy, mask = data[OLD_ENTROPY_KEY], data["response_mask"]
            if entropy.is_nested:
                entropy, mask = entropy.values(), mask.values()
            threshold = batch_entropy_threshold(entropy, mask, float(espo.high_entropy_ratio))
            batch.extra_info[ENTROPY_THRESHOLD_KEY] = threshold
        return super()._update_actor(batch, metrics)
