"""Policy losses the plugin registers in veRL's registry (importing this package registers them): ``espo``,
``egspo``, ``chord``, and ``gmpo`` (the recipes' GMPO baseline, normalised over the mini-batch).

What each loss needs beyond veRL's ``PolicyLossFn`` arguments, and the channel that hands it over, live in
:mod:`verl_espo.loss_inputs` (shared with the trainer and the actor loss, which must not depend on this package:
a veRL change that breaks the loss registry must leave them registered).
"""

from __future__ import annotations

from verl_espo.loss_inputs import (
    ENTROPY_AWARE_LOSS_MODES,
    HYBRID_LOSS_MODES,
    LOSS_INPUTS,
    PLUGIN_LOSS_MODES,
    MissingLossInputError,
)
from verl_espo.losses.egspo import compute_policy_loss_chord, compute_policy_loss_egspo
from verl_espo.losses.espo import compute_policy_loss_espo
from verl_espo.losses.gmpo import compute_policy_loss_gmpo

__all__ = [
    "compute_policy_loss_espo",
    "compute_policy_loss_egspo",
    "compute_policy_loss_chord",
    "compute_policy_loss_gmpo",
    "MissingLossInputError",
    "LOSS_INPUTS",
    "ENTROPY_AWARE_LOSS_MODES",
    "PLUGIN_LOSS_MODES",
    "HYBRID_LOSS_MODES",
]
