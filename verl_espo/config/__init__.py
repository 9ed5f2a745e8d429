"""Hydra configs (``pkg://verl_espo.config``) and the config dataclasses they instantiate."""

# veRL first: importing it loads the plugin (the `verl.plugins` entry point), whose losses import
# `verl_espo.config.loss`; importing veRL from inside that module instead would find it half-initialised.
import verl  # noqa: F401,I001

from verl_espo.config.loss import (
    EGSPOConfig,
    ESPOConfig,
    HybridConfig,
    PluginPolicyLossConfig,
)

__all__ = ["ESPOConfig", "EGSPOConfig", "HybridConfig", "PluginPolicyLossConfig"]
