"""Hydra configs (``pkg://verl_espo.config``) and the config dataclasses they instantiate."""

from verl_espo.config.loss import (
    EGSPOConfig,
    ESPOConfig,
    ESPOPolicyLossConfig,
    HybridConfig,
    PluginPolicyLossConfig,
)

__all__ = ["ESPOConfig", "EGSPOConfig", "HybridConfig", "PluginPolicyLossConfig", "ESPOPolicyLossConfig"]
