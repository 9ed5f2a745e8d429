"""What the plugin's policy losses need beyond veRL's ``PolicyLossFn`` arguments, and how they get it.

This module is shared by the three pieces that deal with those inputs, and imports none of them, nor veRL:

* the table :data:`LOSS_INPUTS`, which the trainer reads to know what to compute once per step and which
  settings to refuse before any worker starts;
* the channel :func:`policy_loss_extras` / :func:`current_extras`, through which the plugin's actor loss
  (:mod:`verl_espo.workers.actor_loss`) hands the inputs to a policy loss (:mod:`verl_espo.losses`): veRL's
  ``ppo_loss`` calls a registered policy loss with a fixed set of arguments, so the actor loss calls veRL's own
  ``ppo_loss`` unchanged inside :func:`policy_loss_extras` and the policy loss reads them from there;
* :class:`MissingLossInputError`, raised by a loss that did not get an input.

Keeping them here lets the trainer and the losses register independently: a veRL change that breaks the loss
registry leaves the trainer registered, and the other way round (``verl_espo._plugin``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

__all__ = [
    "LOSS_INPUTS",
    "ENTROPY_AWARE_LOSS_MODES",
    "PLUGIN_LOSS_MODES",
    "HYBRID_LOSS_MODES",
    "MissingLossInputError",
    "missing_old_entropy_message",
    "policy_loss_extras",
    "current_extras",
]

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


# ----------------------------------------------------------------------------- errors
class MissingLossInputError(RuntimeError):
    """A plugin loss was called without an input that the plugin's trainer and actor loss hand over."""


def missing_old_entropy_message(what: str, loss_mode: str) -> str:
    """The error text for a loss that needs the old policy's per-token entropy and did not get it."""
    return (
        f"{what} the old policy's entropy, but no `old_entropy` reached the `{loss_mode}` loss. Train with the "
        "plugin's trainer, `trainer.v1.trainer_mode=plugin_sync` (the default of `--config-path=pkg://verl_espo.config "
        f"--config-name={loss_mode}_trainer`), which installs the entropy-aware actor loss. The old entropy is "
        "computed in veRL's V1 old-log-prob pass; `algorithm.rollout_correction.bypass_mode=true` skips that pass and "
        "the legacy trainer (`trainer.use_v1=false`) drops the entropy, so neither can run this loss. When calling "
        "the loss directly, pass `old_entropy=` (shape (batch, response_length))."
    )


# ----------------------------------------------------------------------------- the channel
_EXTRAS: ContextVar[Mapping[str, Any]] = ContextVar("verl_espo_policy_loss_extras", default=MappingProxyType({}))


@contextmanager
def policy_loss_extras(**extras: Any) -> Iterator[None]:
    """Make ``extras`` (e.g. ``old_entropy=...``) visible to policy losses called inside the block."""
    token = _EXTRAS.set(MappingProxyType(dict(extras)))
    try:
        yield
    finally:
        _EXTRAS.reset(token)


def current_extras() -> Mapping[str, Any]:
    """The extras of the innermost :func:`policy_loss_extras` block (empty outside one)."""
    return _EXTRAS.get()
