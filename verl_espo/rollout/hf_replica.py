"""``HFReplica``: veRL's ``RolloutReplica`` for the ``hf`` backend (one :class:`HFRolloutServer` per node).

veRL creates replicas through ``RolloutReplicaRegistry`` (``rollout.name=hf``) and calls
``init_hybrid`` / ``init_colocated`` / ``init_standalone``; each ends in :meth:`HFReplica.launch_servers`.
The server is placed on its workers' node and uses their accelerator(s), like veRL's vLLM server.
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutReplica

from verl_espo.rollout.hf_server import HFRolloutServer, server_actor_name

__all__ = ["HFReplica"]


def _node_and_device(worker_self) -> tuple[str, str]:
    """(node id, accelerator id) of a Ray worker; runs inside the worker via ``__ray_call__``."""
    from verl.utils.device import get_resource_name

    context = ray.get_runtime_context()
    ids = context.get_accelerator_ids().get(get_resource_name(), [])
    return context.get_node_id(), str(ids[0]) if ids else ""


class HFReplica(RolloutReplica):
    """A rollout replica served by Hugging Face ``generate`` (text-only, for tests and debugging)."""

    async def launch_servers(self) -> None:
        if len(self.workers) != self.world_size:
            raise RuntimeError(f"hf rollout: {len(self.workers)} workers for a replica of world size {self.world_size}")
        infos = await asyncio.gather(*[w.__ray_call__.remote(_node_and_device) for w in self.workers])
        server_cls = ray.remote(HFRolloutServer)
        per_node = self.gpus_per_replica_node
        for node_rank in range(self.nnodes):
            node_infos = infos[node_rank * per_node : (node_rank + 1) * per_node]
            name = server_actor_name(self.replica_rank, node_rank, self._role_suffix())
            server = server_cls.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_infos[0][0], soft=False),
                name=name,
                max_concurrency=self.max_concurrency,
            ).remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
                node_rank=node_rank,
                visible_devices=",".join(d for _, d in node_infos if d),
                name=name,
            )
            self.servers.append(server)
        addresses = await asyncio.gather(*[s.launch_server.remote() for s in self.servers])
        self._server_handle = self.servers[0]
        self._server_address = addresses[0]  # a unique key for veRL's load balancer (there is no HTTP server)

    def _role_suffix(self) -> str:
        role = "_reward" if self.is_reward_model else "_teacher" if self.is_teacher_model else ""
        return f"{role}{self.name_suffix}"
