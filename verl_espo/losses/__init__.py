"""Policy losses the plugin registers in veRL's registry (importing this package registers them)."""

from verl_espo.losses.espo import compute_policy_loss_espo

#: ``loss_mode`` values whose policy loss needs the old policy's entropy from the plugin's actor loss.
ENTROPY_AWARE_LOSS_MODES = frozenset({"espo"})

__all__ = ["compute_policy_loss_espo", "ENTROPY_AWARE_LOSS_MODES"]
