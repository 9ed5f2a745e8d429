"""Rollout backends the plugin adds to veRL: ``hf`` (Hugging Face ``generate``), selected with
``actor_rollout_ref.rollout.name=hf``. Importing this package registers it; the implementation modules
are imported lazily by veRL when a run selects the backend.
"""

from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry

__all__ = ["BACKEND_NAME", "register"]

BACKEND_NAME = "hf"


def _load_hf_replica():
    from verl_espo.rollout.hf_replica import HFReplica

    return HFReplica


def register() -> None:
    """Register the ``hf`` backend in veRL's two rollout registries (idempotent)."""
    RolloutReplicaRegistry.register(BACKEND_NAME, _load_hf_replica)
    _ROLLOUT_REGISTRY[(BACKEND_NAME, "async")] = "verl_espo.rollout.hf_adapter.ServerAdapter"


register()
