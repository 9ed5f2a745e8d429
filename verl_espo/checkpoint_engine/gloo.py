"""``gloo``: a veRL checkpoint engine that broadcasts the trainer's weights to rollout workers over gloo (TCP).

veRL's ``separate_async`` trainer ships weights from the actor to standalone rollout replicas through a
checkpoint engine (``actor_rollout_ref.rollout.checkpoint_engine.backend``); veRL's own engines need GPUs and
NCCL / NIXL / Mooncake. This one needs only torch's gloo backend, so it runs on CPU machines and CPU clusters
(and, slowly, on GPU machines for debugging: tensors go through host memory).

One weight update (driven by ``verl.checkpoint_engine.CheckpointEngineManager.update_weights``):

1. ``prepare`` on every worker: actor rank 0 (``is_master``) opens a ``TCPStore`` on a free port;
2. ``build_topology``: a group of actor rank 0 (gloo rank 0, the only sender) plus every rollout worker
   (ranks ``1..R``); the other actor ranks get rank -1 and only drain their weight generator, which is
   collective over the actor group (FSDP's ``full_tensor``);
3. ``init_process_group``: each member joins a fresh ``ProcessGroupGloo`` through that store;
4. ``send_weights`` / ``receive_weights``: rank 0 packs the tensors into buckets of
   ``update_weights_bucket_megabytes`` (veRL's ``split_weight_chunks``, packed by
   :mod:`~verl_espo.checkpoint_engine.buckets`) and broadcasts each as ``[header length, payload length]``,
   the JSON header, then the payload; receivers join the chunks with veRL's ``merge_weight_chunks`` and yield
   ``(name, tensor)`` pairs (CPU tensors, the sender's dtypes and shapes) to their rollout's
   ``ServerAdapter.update_weights``;
5. ``finalize``: the group and the store are dropped (the next update builds them anew, so replicas may come
   and go between updates).

Options (``checkpoint_engine.engine_kwargs.gloo``): ``timeout_s`` (default 1800), how long any member waits
for the others to join or for the next bucket; ``host``, the address actor rank 0 advertises (default: its Ray
node IP). Set ``GLOO_SOCKET_IFNAME`` on hosts whose default interface cannot reach the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist
from verl.checkpoint_engine.base import CheckpointEngine, TensorMeta, merge_weight_chunks
from verl.workers.rollout.utils import ensure_async_iterator

from verl_espo.checkpoint_engine.buckets import (
    Bucket,
    Weights,
    WireFormatError,
    check_chunks,
    decode_header,
    encode_header,
    iter_buckets,
)

__all__ = ["BACKEND_NAME", "GlooCheckpointEngine", "CheckpointEngineError"]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

BACKEND_NAME = "gloo"
DEFAULT_TIMEOUT_S = 1800.0


class CheckpointEngineError(RuntimeError):
    """A weight update through the ``gloo`` engine failed; the message says at which stage and on which rank."""


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address().strip("[]")


class GlooCheckpointEngine(CheckpointEngine):
    """Checkpoint engine over a gloo process group between actor rank 0 and the rollout workers (module doc).

    Args:
        bucket_size: payload bytes per broadcast (veRL passes ``update_weights_bucket_megabytes << 20``).
        is_master: True on actor rank 0, the sender (veRL passes it to the actor workers' engines only).
        timeout_s: seconds to wait for the group to form and for each broadcast.
        host: address the master advertises to the receivers (default: its Ray node IP).
    """

    wire_format = "named_tensors"

    def __init__(
        self,
        bucket_size: int,
        is_master: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        host: Optional[str] = None,
    ) -> None:
        if int(bucket_size) < 1 << 10:
            raise ValueError(
                f"gloo checkpoint engine: bucket_size={bucket_size} bytes is too small; set "
                "actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes >= 1"
            )
        if float(timeout_s) <= 0:
            raise ValueError(f"gloo checkpoint engine: timeout_s must be positive, got {timeout_s}")
        self.bucket_size = int(bucket_size)
        self.is_master = bool(is_master)
        self.timeout = timedelta(seconds=float(timeout_s))
        self.host = host
        self.rank: Optional[int] = None  # None: no group; -1: an actor rank outside the group
        self.world_size: Optional[int] = None
        self._store: Optional[dist.TCPStore] = None
        self._group: Optional[dist.ProcessGroup] = None

    # ------------------------------------------------------------------ topology
    def prepare(self) -> dict[str, Any]:
        """Open the rendezvous store on the master; every worker reports whether it is the master, and where."""
        if not self.is_master:
            return {"is_master": False}
        host = self.host or _node_ip()
        self._close_store()
        try:
            self._store = dist.TCPStore(host, 0, None, is_master=True, timeout=self.timeout, wait_for_workers=False)
        except Exception as exc:  # noqa: BLE001  re-raised with what was attempted
            raise CheckpointEngineError(f"gloo checkpoint engine: the master could not open a TCPStore: {exc}") from exc
        return {"is_master": True, "host": host, "port": int(self._store.port)}

    @classmethod
    def build_topology(
        cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict]
    ) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Actor rank 0 is gloo rank 0; other actor ranks sit out (rank -1); rollout workers are ranks 1..R."""
        if len(metadata) != actor_wg_world_size + rollout_world_size:
            raise CheckpointEngineError(
                f"gloo checkpoint engine: {len(metadata)} prepare() results for {actor_wg_world_size} actor and "
                f"{rollout_world_size} rollout workers"
            )
        if actor_wg_world_size < 1 or rollout_world_size < 1:
            raise CheckpointEngineError(
                f"gloo checkpoint engine: needs at least one actor and one rollout worker, got {actor_wg_world_size} "
                f"and {rollout_world_size} (is actor_rollout_ref.rollout.nnodes / n_gpus_per_node set?)"
            )
        masters = [i for i, m in enumerate(metadata) if m.get("is_master")]
        if masters != [0]:
            raise CheckpointEngineError(
                f"gloo checkpoint engine: the sender must be actor rank 0 and only it, but the masters are workers "
                f"{masters}; veRL builds the actor workers' engines with is_master=(rank == 0)"
            )
        master = metadata[0]
        world_size = 1 + rollout_world_size
        common = {"world_size": world_size, "master_host": master["host"], "master_port": master["port"]}
        actor = {"rank": [0] + [-1] * (actor_wg_world_size - 1)}
        rollout = {"rank": list(range(1, world_size))}
        for key, value in common.items():
            actor[key] = [value] * actor_wg_world_size
            rollout[key] = [value] * rollout_world_size
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master_host: str, master_port: int) -> None:
        """Join the weight-sync group (blocks until all ``world_size`` members have joined)."""
        self.finalize_group()
        self.rank, self.world_size = int(rank), int(world_size)
        if self.rank < 0:
            return
        if self.rank == 0 and self._store is None:
            raise CheckpointEngineError("gloo checkpoint engine: rank 0 joined the group without prepare()")
        try:
            store = self._store
            if store is None:
                store = dist.TCPStore(master_host, int(master_port), None, is_master=False, timeout=self.timeout)
            self._group = dist.ProcessGroupGloo(store, self.rank, self.world_size, self.timeout)
        except Exception as exc:  # noqa: BLE001
            self.rank = None
            raise CheckpointEngineError(
                f"gloo checkpoint engine: rank {rank} of {world_size} could not join the weight-sync group at "
                f"{master_host}:{master_port} within {self.timeout.total_seconds():.0f} s: {exc}. Check that the "
                "rollout workers reach actor rank 0's node (engine_kwargs.gloo.host, GLOO_SOCKET_IFNAME)"
            ) from exc
        logger.debug("gloo checkpoint engine: rank %d of %d joined", self.rank, self.world_size)

    def finalize(self) -> None:
        """Drop the group and the store after an update."""
        self.finalize_group()
        self._close_store()
        self.rank = self.world_size = None

    def finalize_group(self) -> None:
        self._group = None

    def _close_store(self) -> None:
        self._store = None  # the TCPStore server stops when its last reference goes

    # ------------------------------------------------------------------ transfer
    def _require_group(self, role: str) -> None:
        """Raise unless ``init_process_group`` ran (the group is None on actor ranks outside it, rank -1)."""
        if self.rank is None:
            raise CheckpointEngineError(
                f"gloo checkpoint engine: {role} before init_process_group (veRL's CheckpointEngineManager "
                "calls prepare, build_topology and init_process_group first)"
            )

    def _broadcast(self, tensor: torch.Tensor, what: str) -> None:
        try:
            self._group.broadcast(tensor, 0).wait()
        except Exception as exc:  # noqa: BLE001
            side = "sending" if self.rank == 0 else "receiving"
            raise CheckpointEngineError(
                f"gloo checkpoint engine: rank {self.rank} of {self.world_size} failed {side} {what} (timeout "
                f"{self.timeout.total_seconds():.0f} s): {exc}"
            ) from exc

    async def _send_bucket(self, bucket: Bucket) -> None:
        header = torch.frombuffer(bytearray(encode_header(bucket)), dtype=torch.uint8)
        sizes = torch.tensor([header.numel(), bucket.payload.numel()], dtype=torch.int64)
        await asyncio.to_thread(self._broadcast, sizes, "a bucket's sizes")
        await asyncio.to_thread(self._broadcast, header, "a bucket's header")
        if bucket.payload.numel():
            await asyncio.to_thread(self._broadcast, bucket.payload, "a bucket's payload")

    async def _receive_bucket(self) -> Bucket:
        sizes = torch.zeros(2, dtype=torch.int64)
        await asyncio.to_thread(self._broadcast, sizes, "a bucket's sizes")
        header_len, payload_len = (int(v) for v in sizes.tolist())
        header = torch.empty(header_len, dtype=torch.uint8)
        await asyncio.to_thread(self._broadcast, header, "a bucket's header")
        bucket, payload_bytes = decode_header(header.numpy().tobytes())
        if payload_bytes != payload_len:
            raise WireFormatError(f"header says {payload_bytes} payload bytes, the sizes {payload_len}")
        bucket.payload = torch.empty(payload_len, dtype=torch.uint8)
        if payload_len:
            await asyncio.to_thread(self._broadcast, bucket.payload, "a bucket's payload")
        return bucket

    @torch.no_grad()
    async def send_weights(self, weights: Weights, global_steps: Optional[int] = None) -> dict[str, float]:
        """Actor side: rank 0 broadcasts every tensor; the other actor ranks drain the generator."""
        self._require_group("send_weights")
        if self.rank > 0:
            raise CheckpointEngineError(f"gloo checkpoint engine: rank {self.rank} is a receiver, not a sender")
        if self.rank < 0:
            async for _ in ensure_async_iterator(weights):
                pass
            return {}
        start, tensors, nbytes, buckets = time.perf_counter(), 0, 0, 0
        async for bucket in iter_buckets(weights, self.bucket_size, global_steps):
            await self._send_bucket(bucket)
            tensors += sum(1 for c in bucket.chunks if c.chunk_offset == 0)
            nbytes += bucket.payload.numel()
            buckets += 1
        seconds = time.perf_counter() - start
        logger.info(
            "gloo checkpoint engine: sent %d tensors (%.1f MB, %d buckets) to %d rollout workers (step %s) in %.2fs",
            tensors, nbytes / 2**20, buckets, self.world_size - 1, global_steps, seconds,
        )  # fmt: skip
        return {
            "weight_sync/gloo/tensors": float(tensors),
            "weight_sync/gloo/megabytes": nbytes / 2**20,
            "weight_sync/gloo/seconds": seconds,
        }

    @torch.no_grad()
    async def receive_weights(self, global_steps: Optional[int] = None) -> AsyncIterator[tuple[str, torch.Tensor]]:
        """Rollout side: yield the sender's ``(name, tensor)`` pairs, in its order, until its last bucket."""
        self._require_group("receive_weights")
        if self.rank <= 0:
            raise CheckpointEngineError(f"gloo checkpoint engine: rank {self.rank} sends; it cannot receive")
        async for item in merge_weight_chunks(self._received_chunks(global_steps), self.bucket_size):
            yield item

    async def _received_chunks(self, global_steps: Optional[int]) -> AsyncIterator[tuple[TensorMeta, torch.Tensor]]:
        """The chunks of every bucket until the sender's last, each checked (:func:`check_chunks`)."""
        pending = None
        while True:
            bucket = await self._receive_bucket()
            if global_steps is not None and bucket.global_steps is not None and bucket.global_steps != global_steps:
                raise CheckpointEngineError(
                    f"gloo checkpoint engine: received the weights of step {bucket.global_steps} while updating "
                    f"to step {global_steps}"
                )
            if bucket.bucket_bytes != self.bucket_size:
                raise CheckpointEngineError(
                    f"gloo checkpoint engine: the sender chunks by {bucket.bucket_bytes} bytes, this receiver by "
                    f"{self.bucket_size}: set one actor_rollout_ref.rollout.checkpoint_engine."
                    "update_weights_bucket_megabytes for both"
                )
            pending = check_chunks(bucket.chunks, bucket.payload, pending)
            for meta in bucket.chunks:
                yield meta, bucket.payload[meta.offset : meta.offset + meta.chunk_size]
            if bucket.last:
                break
        if pending is not None:
            raise WireFormatError(f"the update ended in the middle of weight {pending.name!r}")
