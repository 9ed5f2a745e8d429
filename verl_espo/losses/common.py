"""veRL wiring shared by the plugin's policy losses: their config blocks and the actor's PPO clip range."""

from __future__ import annotations

from typing import Any, Optional

from verl.workers.config import ActorConfig

from verl_espo.loss_inputs import LossSpec

__all__ = ["config_blocks", "clip_ratios"]


def config_blocks(config: Optional[ActorConfig], spec: LossSpec) -> tuple[Any, ...]:
    """The ``policy_loss.<block>`` settings of ``spec.config_blocks``, in that order; an error naming the fix when
    the actor config is missing or its policy loss is not the plugin's config class."""
    if config is None:
        raise ValueError(f"the {spec.name} policy loss needs the actor config (`config=`)")
    policy_loss = config.policy_loss
    from verl_espo.config.loss import PluginPolicyLossConfig

    if not isinstance(policy_loss, PluginPolicyLossConfig):
        raise ValueError(
            f"loss_mode={spec.name} needs actor_rollout_ref.actor.policy_loss._target_="
            "verl_espo.config.PluginPolicyLossConfig (set by the plugin's configs, "
            f"`--config-path=pkg://verl_espo.config --config-name={spec.name}_trainer`); got policy_loss of type "
            f"{type(policy_loss).__name__}"
        )
    return tuple(getattr(policy_loss, block) for block in spec.config_blocks)


def clip_ratios(config: ActorConfig) -> tuple[float, float]:
    """The actor's PPO clip range ``(clip_ratio_low, clip_ratio_high)``, each falling back to ``clip_ratio``."""
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return low, high
