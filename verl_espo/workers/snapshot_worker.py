"""``SnapshotDetachActorWorker``: veRL's ``DetachActorWorker`` whose saved ``pi_old`` is a real copy on CPU too.

veRL's ``separate_async`` trainer runs ``parameter_sync_step`` actor updates per weight sync; for updates after
the first it computes the old log-probs (and the old entropy the plugin's losses read) with the weights of the
last sync, ``pi_old``: ``save_model_to_cpu(0)`` before the first update, ``restore_model_from_cpu(0)`` later
(``verl/trainer/ppo/v1/trainer_separate_async.py:187-211``). The FSDP2 save helper takes each shard's
``.detach().cpu()`` (``verl/utils/fsdp_utils.py:1180``), which on a CPU device returns the live parameter's own
storage, so the "saved" ``pi_old`` follows the optimiser and the restore is a no-op: the second update's old
log-probs would come from the weights after the first update. This worker copies every saved tensor that
shares storage with a live parameter (on an accelerator none does, and nothing is copied).
"""

from __future__ import annotations

from typing import Any

import torch
from verl.experimental.separation.engine_workers import DetachActorWorker
from verl.single_controller.base.decorator import Dispatch, register

__all__ = ["SnapshotDetachActorWorker", "detach_from"]


def detach_from(saved: Any, live: set[int]) -> Any:
    """``saved`` (tensors nested in tuples, lists and dicts) with every tensor whose storage is in ``live``
    (``untyped_storage().data_ptr()`` values) replaced by a copy."""
    if isinstance(saved, torch.Tensor):
        return saved.clone() if saved.untyped_storage().data_ptr() in live else saved
    if isinstance(saved, dict):
        return {k: detach_from(v, live) for k, v in saved.items()}
    if isinstance(saved, (tuple, list)):
        return type(saved)(detach_from(v, live) for v in saved)
    return saved


def _live_storages(module: torch.nn.Module) -> set[int]:
    ptrs = set()
    for tensor in list(module.parameters()) + list(module.buffers()):
        local = getattr(tensor, "_local_tensor", tensor)  # a DTensor's shard
        ptrs.add(local.untyped_storage().data_ptr())
    return ptrs


class SnapshotDetachActorWorker(DetachActorWorker):
    """``DetachActorWorker`` whose ``save_model_to_cpu`` never aliases the live weights (module doc)."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_model_to_cpu(self, n):
        super().save_model_to_cpu(n)
        self.cpu_saved_models[n] = detach_from(self.cpu_saved_models[n], _live_storages(self.actor.engine.module))
