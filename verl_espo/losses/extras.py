"""The channel through which the plugin's actor loss hands extra per-batch inputs to a policy loss.

veRL's ``ppo_loss`` calls a registered policy loss with a fixed set of arguments. The plugin's actor loss
(:func:`verl_espo.workers.actor_loss.entropy_aware_ppo_loss`) calls veRL's own ``ppo_loss`` unchanged,
inside :func:`policy_loss_extras`, so that the policy loss can read the old policy's entropy and the
trainer's step-level statistics without a copy of ``ppo_loss``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

__all__ = ["policy_loss_extras", "current_extras"]

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
