"""Named tensors <-> byte buckets: the wire format of the plugin's ``gloo`` checkpoint engine, on veRL's chunking.

veRL's ``split_weight_chunks`` cuts each tensor into byte chunks of at most the bucket size (described by
``TensorMeta``: name, shape, dtype, ``chunk_offset``, ``chunk_size``) and ``merge_weight_chunks`` joins them
back, as veRL's NCCL/HCCL/NIXL engines do. This module packs the chunks into buckets: one flat ``uint8``
payload per bucket, each chunk at an ``offset`` aligned to :data:`ALIGN` bytes (so a tensor that fits in one
chunk comes out as a view of the payload), plus a JSON header listing the chunks. The transport lives in
:mod:`verl_espo.checkpoint_engine.gloo`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Optional, Union

import torch
from verl.checkpoint_engine.base import TensorMeta, split_weight_chunks
from verl.workers.rollout.utils import ensure_async_iterator

__all__ = ["ALIGN", "Bucket", "WireFormatError", "check_chunks", "decode_header", "encode_header", "iter_buckets"]

#: Byte alignment of every chunk in a payload (covers every torch dtype's element size).
ALIGN = 64

Weights = Union[Iterable[tuple[str, torch.Tensor]], AsyncIterator[tuple[str, torch.Tensor]]]


class WireFormatError(RuntimeError):
    """A bucket that does not follow the format (a sender/receiver mismatch or a corrupted transfer)."""


@dataclass
class Bucket:
    """One transfer: its chunks, the payload, whether it ends the update, the update's step, and the bucket size
    the sender chunked with (what ``merge_weight_chunks`` needs to tell whole tensors from split ones)."""

    chunks: list[TensorMeta]
    payload: torch.Tensor  # flat uint8 on CPU
    last: bool
    bucket_bytes: int
    global_steps: Optional[int] = None


def _nbytes(meta: TensorMeta) -> int:
    return meta.shape.numel() * meta.dtype.itemsize


def encode_header(bucket: Bucket) -> bytes:
    """The bucket's header as UTF-8 JSON (the payload travels separately)."""
    chunks = [
        [m.name, str(m.dtype).removeprefix("torch."), list(m.shape), m.chunk_offset, m.chunk_size, m.offset]
        for m in bucket.chunks
    ]
    header = {
        "chunks": chunks,
        "last": bucket.last,
        "bucket_bytes": bucket.bucket_bytes,
        "global_steps": bucket.global_steps,
    }
    return json.dumps(header | {"payload_bytes": int(bucket.payload.numel())}, separators=(",", ":")).encode()


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise WireFormatError(f"unknown dtype {name!r} in a weight bucket")
    return dtype


def decode_header(data: bytes) -> tuple[Bucket, int]:
    """The bucket of a header written by :func:`encode_header` (an empty payload) and its payload's size."""
    try:
        header = json.loads(data.decode())
        chunks = [
            TensorMeta(name, torch.Size(shape), _dtype(dtype), int(start), int(size), int(offset))
            for name, dtype, shape, start, size, offset in header["chunks"]
        ]
        bucket = Bucket(chunks, torch.empty(0, dtype=torch.uint8), bool(header["last"]), int(header["bucket_bytes"]),
                        header["global_steps"])  # fmt: skip
        return bucket, int(header["payload_bytes"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise WireFormatError(f"malformed weight-bucket header ({type(exc).__name__}: {exc})") from exc


async def _chunks(weights: Weights, bucket_bytes: int) -> AsyncIterator[tuple[TensorMeta, torch.Tensor]]:
    """veRL's chunks of each tensor, taken to CPU and made contiguous; an empty tensor is one empty chunk."""
    seen: set[str] = set()
    async for name, tensor in ensure_async_iterator(weights):
        if name in seen:
            raise ValueError(f"weight {name!r} appears twice in one update")
        seen.add(name)
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.numel() == 0:
            yield TensorMeta(name, tensor.shape, tensor.dtype, 0, 0, None), torch.empty(0, dtype=torch.uint8)
            continue
        async for item in split_weight_chunks([(name, tensor)], bucket_bytes):
            yield item


async def iter_buckets(
    weights: Weights, bucket_bytes: int, global_steps: Optional[int] = None
) -> AsyncIterator[Bucket]:
    """Pack ``(name, tensor)`` pairs into buckets of at most ``bucket_bytes`` payload bytes.

    Tensors are consumed one at a time (the source may be a collective generator, e.g. FSDP's full-tensor
    stream); a bucket is emitted as soon as the next chunk would not fit, so only tensors larger than a bucket
    are split. The last bucket has ``last=True``, even when there are no tensors (an empty update still tells
    the receivers it is over).
    """
    if bucket_bytes < ALIGN:
        raise ValueError(f"bucket_bytes must be at least {ALIGN}, got {bucket_bytes}")
    chunks: list[TensorMeta] = []
    pieces: list[torch.Tensor] = []
    used = 0

    def flush(last: bool) -> Bucket:
        payload = torch.zeros(used, dtype=torch.uint8)
        for meta, data in zip(chunks, pieces, strict=True):
            payload[meta.offset : meta.offset + meta.chunk_size] = data
        return Bucket(list(chunks), payload, last, bucket_bytes, global_steps)

    async for meta, data in _chunks(weights, bucket_bytes):
        offset = -(-used // ALIGN) * ALIGN
        if chunks and offset + meta.chunk_size > bucket_bytes:
            yield flush(last=False)
            chunks, pieces, offset = [], [], 0
        meta.offset = offset
        chunks.append(meta)
        pieces.append(data)
        used = offset + meta.chunk_size
    yield flush(last=True)


def check_chunks(
    chunks: list[TensorMeta], payload: torch.Tensor, pending: Optional[TensorMeta]
) -> Optional[TensorMeta]:
    """Check a received bucket's chunks against the payload and the sender's order, before veRL's
    ``merge_weight_chunks`` joins them; returns the chunk of a tensor still waiting for its next bytes."""
    for meta in chunks:
        if meta.offset % ALIGN or meta.offset + meta.chunk_size > payload.numel():
            raise WireFormatError(f"chunk of {meta.name!r} at bytes {meta.offset}+{meta.chunk_size} is out of bounds")
        expected = (pending.name, pending.chunk_offset + pending.chunk_size) if pending else (meta.name, 0)
        if (meta.name, meta.chunk_offset) != expected:
            raise WireFormatError(
                f"expected bytes from {expected[1]} of weight {expected[0]!r}, got {meta.name!r} from byte "
                f"{meta.chunk_offset}"
            )
        pending = meta if meta.chunk_offset + meta.chunk_size < _nbytes(meta) else None
    return pending
