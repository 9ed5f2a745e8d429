"""Policy losses the plugin registers in veRL's registry (importing this package registers them), and the table
of the inputs each one needs beyond veRL's ``PolicyLossFn`` arguments.

The plugin's trainer reads :data:`LOSS_INPUTS` to know what to compute once per step and refuses, before any
worker starts, settings under which an input cannot reach the loss; the plugin's actor loss hands the inputs
over (:mod:`verl_espo.losses.extras`).
"""

from __future__ import annotations

from verl_espo.losses.egspo import compute_policy_loss_chord, compute_policy_loss_egspo
from verl_espo.losses.errors import MissingLossInputError
from verl_espo.losses.espo import compute_policy_loss_espo

#: ``loss_mode`` -> inputs it needs beyond veRL's arguments. ``old_entropy``: the old policy's per-token
#: entropy; ``step_threshold``: a per-step entropy threshold (when the ESPO grouping / EGSPO gate is ``batch``);
#: ``expert_rows``: it accepts expert-demonstration rows (hybrid SFT + RL with ``mu``).
LOSS_INPUTS: dict[str, frozenset[str]] = {
    "espo": frozenset({"old_entropy", "step_threshold"}),
    "egspo": frozenset({"old_entropy", "step_threshold", "expert_rows"}),
    "chord": frozenset({"expert_rows"}),
}

#: ``loss_mode`` values whose policy loss needs the old policy's entropy from the plugin's actor loss.
ENTROPY_AWARE_LOSS_MODES = frozenset(mode for mode, inputs in LOSS_INPUTS.items() if "old_entropy" in inputs)
#: ``loss_mode`` values that need the plugin's actor loss and trainer at all.
PLUGIN_LOSS_MODES = frozenset(LOSS_INPUTS)
#: ``loss_mode`` values that accept expert rows.
HYBRID_LOSS_MODES = frozenset(mode for mode, inputs in LOSS_INPUTS.items() if "expert_rows" in inputs)

__all__ = [
    "compute_policy_loss_espo",
    "compute_policy_loss_egspo",
    "compute_policy_loss_chord",
    "MissingLossInputError",
    "LOSS_INPUTS",
    "ENTROPY_AWARE_LOSS_MODES",
    "PLUGIN_LOSS_MODES",
    "HYBRID_LOSS_MODES",
]
