"""Named tensors <-> byte buckets: the wire format of the plugin's ``gloo`` checkpoint engine.

A bucket is one flat ``uint8`` payload plus a JSON header listing its chunks. Each chunk is a byte range of
one tensor (``start``/``size`` within the tensor's bytes) placed at ``offset`` in the payload; a tensor larger
than the bucket is split over consecutive buckets. Offsets are aligned to :data:`ALIGN` bytes, so a tensor
that fits in one chunk is handed out as a view of the payload without a copy. Pure torch, no process group:
the transport lives in :mod:`verl_espo.checkpoint_engine.gloo`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch

__all__ = [
    "ALIGN",
    "Bucket",
    "Chunk",
    "TensorAssembler",
    "WireFormatError",
    "aiter_weights",
    "decode_header",
    "encode_header",
    "iter_buckets",
]

#: Byte alignment of every chunk in a payload (covers every torch dtype's element size).
ALIGN = 64

Weights = Union[Iterable[tuple[str, torch.Tensor]], AsyncIterator[tuple[str, torch.Tensor]]]


class WireFormatError(RuntimeError):
    """A bucket that does not follow the format (a sender/receiver mismatch or a corrupted transfer)."""


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, start + size)`` of tensor ``name`` (``dtype``, ``shape``), at ``offset`` in the payload."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    size: int
    offset: int

    @property
    def nbytes(self) -> int:
        """Byte size of the whole tensor."""
        return _numel(self.shape) * _dtype(self.dtype).itemsize


@dataclass
class Bucket:
    """One transfer: its chunks, the payload, whether it ends the update, and the update's step."""

    chunks: list[Chunk]
    payload: torch.Tensor  # flat uint8 on CPU
    last: bool
    global_steps: Optional[int] = None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise WireFormatError(f"unknown dtype {name!r} in a weight bucket")
    return dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def encode_header(bucket: Bucket) -> bytes:
    """The bucket's header as UTF-8 JSON (the payload travels separately)."""
    header = {
        "chunks": [asdict(c) for c in bucket.chunks],
        "last": bucket.last,
        "global_steps": bucket.global_steps,
        "payload_bytes": int(bucket.payload.numel()),
    }
    return json.dumps(header, separators=(",", ":")).encode()


def decode_header(data: bytes) -> tuple[list[Chunk], bool, Optional[int], int]:
    """``(chunks, last, global_steps, payload_bytes)`` of a header written by :func:`encode_header`."""
    try:
        header = json.loads(data.decode())
        chunks = [Chunk(**{**c, "shape": tuple(c["shape"])}) for c in header["chunks"]]
        return chunks, bool(header["last"]), header["global_steps"], int(header["payload_bytes"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise WireFormatError(f"malformed weight-bucket header ({type(exc).__name__}: {exc})") from exc


def _flat_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat CPU ``uint8`` tensor (a view when it already is CPU and contiguous)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    return t.contiguous().reshape(-1).view(torch.uint8)


async def aiter_weights(weights: Weights) -> AsyncIterator[tuple[str, torch.Tensor]]:
    """Iterate a sync or async ``(name, tensor)`` source asynchronously."""
    if hasattr(weights, "__aiter__"):
        async for item in weights:
            yield item
    else:
        for item in weights:
            yield item


async def iter_buckets(
    weights: Weights, bucket_bytes: int, global_steps: Optional[int] = None
) -> AsyncIterator[Bucket]:
    """Pack ``(name, tensor)`` pairs into buckets of at most ``bucket_bytes`` payload bytes.

    Tensors are consumed one at a time (the source may be a collective generator, e.g. FSDP's full-tensor
    stream); a bucket is emitted as soon as the next chunk would not fit. The last bucket has ``last=True``,
    even when there are no tensors (an empty update still tells the receivers it is over).
    """
    if bucket_bytes < ALIGN:
        raise ValueError(f"bucket_bytes must be at least {ALIGN}, got {bucket_bytes}")
    chunks: list[Chunk] = []
    pieces: list[tuple[int, torch.Tensor]] = []  # (offset, bytes)
    used = 0

    def flush(last: bool) -> Bucket:
        payload = torch.zeros(used, dtype=torch.uint8)
        for offset, data in pieces:
            payload[offset : offset + data.numel()] = data
        return Bucket(chunks=list(chunks), payload=payload, last=last, global_steps=global_steps)

    seen: set[str] = set()
    async for name, tensor in aiter_weights(weights):
        if name in seen:
            raise ValueError(f"weight {name!r} appears twice in one update")
        seen.add(name)
        data = _flat_bytes(tensor)
        dtype, shape, total = _dtype_name(tensor.dtype), tuple(int(d) for d in tensor.shape), data.numel()
        start = 0
        while True:
            offset, remaining = _aligned(used), total - start
            # Flush when the bucket is full, or before a tensor that fits whole in a fresh bucket but not here.
            splits_needlessly = start == 0 and remaining <= bucket_bytes < offset + remaining
            if chunks and (offset >= bucket_bytes or splits_needlessly):
                yield flush(last=False)
                chunks, pieces, used, offset = [], [], 0, 0
            size = min(remaining, bucket_bytes - offset)
            chunks.append(Chunk(name=name, dtype=dtype, shape=shape, start=start, size=size, offset=offset))
            pieces.append((offset, data[start : start + size]))
            used = offset + size
            start += size
            if start >= total:
                break
    yield flush(last=True)


class TensorAssembler:
    """Receiver side: turns each bucket's chunks back into ``(name, tensor)`` pairs, in the sender's order.

    A tensor that fits in one chunk is a view of that bucket's payload (each bucket has its own payload, so the
    view stays valid); a tensor split over buckets is copied into a new tensor as its chunks arrive.
    """

    def __init__(self) -> None:
        self._partial: Optional[tuple[Chunk, torch.Tensor, int]] = None  # (first chunk, tensor, bytes so far)

    @property
    def pending(self) -> Optional[str]:
        """Name of a tensor whose chunks are not all in yet."""
        return self._partial[0].name if self._partial else None

    def add(self, chunks: list[Chunk], payload: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield the tensors that this bucket completes."""
        for chunk in chunks:
            if chunk.offset % ALIGN or chunk.offset + chunk.size > payload.numel():
                raise WireFormatError(f"chunk of {chunk.name!r} at bytes {chunk.offset}+{chunk.size} is out of bounds")
            data = payload[chunk.offset : chunk.offset + chunk.size]
            dtype, total = _dtype(chunk.dtype), chunk.nbytes
            if self._partial is None:
                if chunk.start != 0:
                    raise WireFormatError(f"weight {chunk.name!r} starts at byte {chunk.start}, expected 0")
                if chunk.size == total:
                    yield chunk.name, data.view(dtype).reshape(chunk.shape)
                    continue
                self._partial = (chunk, torch.empty(chunk.shape, dtype=dtype), 0)
            first, tensor, done = self._partial
            if (chunk.name, chunk.dtype, chunk.shape, chunk.start) != (first.name, first.dtype, first.shape, done):
                raise WireFormatError(
                    f"expected bytes from {done} of weight {first.name!r}, got {chunk.name!r} from byte {chunk.start}"
                )
            tensor.reshape(-1).view(torch.uint8)[done : done + chunk.size] = data
            done += chunk.size
            if done == total:
                self._partial = None
                yield first.name, tensor
            else:
                self._partial = (first, tensor, done)
