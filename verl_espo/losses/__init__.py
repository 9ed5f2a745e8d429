"""Policy losses the plugin registers in veRL's registry (importing this package registers them): ``espo``,
``egspo``, ``chord``, and ``gmpo`` (the recipes' GMPO baseline, normalised over the mini-batch).

Each module registers its function with veRL's ``@register_policy_loss`` and reads its settings through the
loss's :class:`~verl_espo.loss_inputs.LossSpec` (what the trainer, the actor loss, the config checks and the
reports need to know about it), declared with its tensor math in :mod:`verl_espo.core` (free of veRL). Shared
wiring: :mod:`~verl_espo.losses.common` (config blocks, clip range) and :mod:`~verl_espo.losses.hybrid` (expert
rows, CHORD's SFT term).
"""

from __future__ import annotations

from verl_espo.loss_inputs import MissingLossInputError, loss_spec, loss_specs
from verl_espo.losses.chord import compute_policy_loss_chord
from verl_espo.losses.egspo import compute_policy_loss_egspo
from verl_espo.losses.espo import compute_policy_loss_espo
from verl_espo.losses.gmpo import compute_policy_loss_gmpo

__all__ = [
    "compute_policy_loss_espo",
    "compute_policy_loss_egspo",
    "compute_policy_loss_chord",
    "compute_policy_loss_gmpo",
    "MissingLossInputError",
    "loss_spec",
    "loss_specs",
]
