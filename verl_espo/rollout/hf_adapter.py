"""``ServerAdapter`` for the ``hf`` rollout backend: the trainer-worker side of weight sync.

veRL builds it in every actor/rollout worker (``get_rollout_class("hf", "async")``,
``verl/workers/engine_workers.py`` ``init_model``). After every actor update the V1 trainer calls
``CheckpointEngineManager.update_weights`` -> ``ActorRolloutRefWorker.update_weights`` (naive backend in
hybrid mode) -> :meth:`ServerAdapter.update_weights` with the engine's full-tensor generator. Every rank
must drain that generator (FSDP's ``full_tensor()`` is a collective); the first rank of each node of a
replica also ships the tensors, in buckets of ``checkpoint_engine.update_weights_bucket_megabytes``, to its
:class:`~verl_espo.rollout.hf_server.HFRolloutServer` through Ray's object store.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, AsyncIterator, Iterable, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.utils import ensure_async_iterator

from verl_espo.rollout.hf_server import server_actor_name

__all__ = ["ServerAdapter"]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


class ServerAdapter(BaseRollout):
    """Client of one :class:`HFRolloutServer`: weight updates and sleep / wake-up."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any = None, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        local_world_size = int(os.environ.get("RAY_LOCAL_WORLD_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1")))
        cfg = self.config
        rollout_world_size = cfg.tensor_model_parallel_size * cfg.data_parallel_size * cfg.pipeline_model_parallel_size
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        per_node = max(1, min(local_world_size, rollout_world_size))
        self.node_rank = self.rollout_rank // per_node
        self.is_leader_rank = self.rollout_rank % per_node == 0  # one server (full model copy) per node
        self.server_handle: Optional[ray.actor.ActorHandle] = None

    def _server(self) -> Optional[ray.actor.ActorHandle]:
        """This rank's server, or None if another rank of the node talks to it (looked up lazily: the
        servers start after the workers)."""
        if not self.is_leader_rank:
            return None
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank, self.node_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        server = self._server()
        if server is not None and self.config.free_cache_engine:
            await server.wake_up.remote(tags=tags)

    async def release(self) -> None:
        server = self._server()
        if server is not None and self.config.free_cache_engine:
            await server.sleep.remote()

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterator[tuple[str, torch.Tensor]],
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        **kwargs: Any,
    ) -> None:
        """Send full HF-named tensors to the server in buckets; non-leader ranks only drain the generator."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf rollout takes full tensors only (wire_format={wire_format!r})")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("the hf rollout takes merged weights only (set model.lora.merge=true)")
        server = self._server()
        start = time.time()
        limit = max(1, self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        bucket: list[tuple[str, torch.Tensor]] = []
        size = sent = 0
        async for name, tensor in ensure_async_iterator(weights):
            if server is None:
                continue
            tensor = tensor.detach().to("cpu", copy=True).contiguous()
            bucket.append((name, tensor))
            size += tensor.nbytes
            if size >= limit:
                sent += await server.load_weights.remote(bucket)
                bucket, size = [], 0
        if server is None:
            return
        if bucket:
            sent += await server.load_weights.remote(bucket)
        await server.finish_weight_update.remote(global_steps)
        logger.info(
            "hf rollout: synced %d tensors to replica %d (step %s) in %.2fs",
            sent,
            self.replica_rank,
            global_steps,
            time.time() - start,
        )

    def generate_sequences(self, prompts: Any) -> Any:
        raise NotImplementedError("the hf rollout serves the agent loop through its server; see HFReplica")
