"""Hydra configs (``pkg://verl_espo.config``) and the config dataclasses they instantiate."""

from verl_espo.config.loss import ESPOConfig, ESPOPolicyLossConfig

__all__ = ["ESPOConfig", "ESPOPolicyLossConfig"]
