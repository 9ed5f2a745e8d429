"""The plugin's ``gloo`` checkpoint engine (``verl_espo.checkpoint_engine``): the bucket format, the topology,
errors, and real transfers over gloo (to a second process, and to two receivers at once).

The end-to-end use (veRL's ``separate_async`` trainer shipping FSDP2 weights to a standalone ``hf`` replica) is
``tests/test_e2e_separate_async.py``.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing as mp
import threading

import pytest
import torch
import verl  # noqa: F401  loads the plugin, as in every veRL process
from verl.checkpoint_engine.base import TensorMeta, merge_weight_chunks

from verl_espo.checkpoint_engine import BACKEND_NAME, CheckpointEngineError, GlooCheckpointEngine
from verl_espo.checkpoint_engine.buckets import (
    ALIGN,
    WireFormatError,
    check_chunks,
    decode_header,
    encode_header,
    iter_buckets,
)

LOCALHOST = "127.0.0.1"


def _weights() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("embed.weight", torch.randn(7, 5, generator=g)),  # 140 bytes
        ("big", torch.randn(300, generator=g, dtype=torch.float64)),  # 2400 bytes: split over buckets
        ("half", torch.randn(3, 3, generator=g).to(torch.bfloat16)),
        ("ids", torch.arange(-5, 6, dtype=torch.int64)),
        ("flags", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5, dtype=torch.float16)),  # 0-d
        ("empty", torch.zeros(0, 4)),
        ("transposed", torch.randn(4, 6, generator=g).t()),  # non-contiguous
    ]


def _assert_same(sent, received):
    assert [n for n, _ in received] == [n for n, _ in sent]
    for (name, a), (_, b) in zip(sent, received):
        assert b.dtype == a.dtype and b.shape == a.shape, name
        assert torch.equal(b, a), name


async def _collect(aiter):
    return [item async for item in aiter]


def _merge(buckets, bucket_bytes):
    """What a receiver does: each bucket through the wire header, its chunks checked, veRL's merge."""

    async def chunks():
        pending = None
        for bucket in buckets:
            received, size = decode_header(encode_header(bucket))
            assert received.chunks == bucket.chunks and size == bucket.payload.numel()
            assert (received.last, received.bucket_bytes, received.global_steps) == (bucket.last, bucket_bytes, 4)
            pending = check_chunks(received.chunks, bucket.payload, pending)
            for meta in received.chunks:
                yield meta, bucket.payload[meta.offset : meta.offset + meta.chunk_size]
        assert pending is None

    return [(n, t.clone()) for n, t in asyncio.run(_collect(merge_weight_chunks(chunks(), bucket_bytes)))]


def _roundtrip(weights, bucket_bytes):
    buckets = asyncio.run(_collect(iter_buckets(iter(weights), bucket_bytes, global_steps=4)))
    return buckets, _merge(buckets, bucket_bytes)


# ----------------------------------------------------------------------------- bucket format
@pytest.mark.parametrize("bucket_bytes", [ALIGN, 256, 1000, 1 << 20])
def test_buckets_roundtrip_dtypes_shapes_and_values(bucket_bytes):
    weights = _weights()
    buckets, out = _roundtrip(weights, bucket_bytes)
    _assert_same(weights, out)
    assert [b.last for b in buckets] == [False] * (len(buckets) - 1) + [True]
    assert all(b.payload.numel() <= bucket_bytes for b in buckets)
    for b in buckets:
        assert all(c.offset % ALIGN == 0 for c in b.chunks)
    total = sum(t.numel() * t.element_size() for _, t in weights)
    assert sum(c.chunk_size for b in buckets for c in b.chunks) == total  # every byte sent exactly once


def test_tensors_that_fit_are_never_split_and_large_ones_are():
    buckets, _ = _roundtrip(_weights(), 256)
    chunks_per_tensor = {}
    for b in buckets:
        for c in b.chunks:
            chunks_per_tensor[c.name] = chunks_per_tensor.get(c.name, 0) + 1
    assert chunks_per_tensor["big"] == -(-2400 // 256)
    assert all(n == 1 for name, n in chunks_per_tensor.items() if name != "big")
    # One bucket holds everything when it can: a single broadcast per update for a small model.
    (only,) = asyncio.run(_collect(iter_buckets(iter(_weights()), 1 << 20)))
    assert only.last and len(only.chunks) == len(_weights())


def test_empty_update_still_ends():
    (bucket,) = asyncio.run(_collect(iter_buckets(iter([]), 1024)))
    assert bucket.last and bucket.chunks == [] and bucket.payload.numel() == 0


def test_async_sources_are_accepted():
    async def source():
        for item in _weights():
            yield item

    buckets = asyncio.run(_collect(iter_buckets(source(), 512, global_steps=4)))
    _assert_same(_weights(), _merge(buckets, 512))


def test_bucket_format_errors():
    with pytest.raises(ValueError, match="appears twice"):
        asyncio.run(_collect(iter_buckets(iter([("a", torch.ones(2)), ("a", torch.ones(2))]), 1024)))
    with pytest.raises(ValueError, match="at least"):
        asyncio.run(_collect(iter_buckets(iter([]), 8)))
    with pytest.raises(WireFormatError, match="malformed"):
        decode_header(b"{not json")
    header = (
        b'{"chunks":[["a","floaty",[1],0,4,0]],"last":true,"bucket_bytes":64,"global_steps":null,"payload_bytes":4}'
    )
    with pytest.raises(WireFormatError, match="unknown dtype 'floaty'"):
        decode_header(header)

    def meta(name, numel, start, size, offset=0):
        return TensorMeta(name, torch.Size([numel]), torch.float32, start, size, offset)

    with pytest.raises(WireFormatError, match="out of bounds"):
        check_chunks([meta("a", 4, 0, 16)], torch.zeros(8, dtype=torch.uint8), None)
    with pytest.raises(WireFormatError, match="out of bounds"):
        check_chunks([meta("a", 1, 0, 4, offset=4)], torch.zeros(128, dtype=torch.uint8), None)  # unaligned
    with pytest.raises(WireFormatError, match="expected bytes from 0 of weight 'a', got 'a' from byte 8"):
        check_chunks([meta("a", 4, 8, 8)], torch.zeros(8, dtype=torch.uint8), None)
    # another tensor in the middle of a split one
    pending = check_chunks([meta("a", 4, 0, 8)], torch.zeros(8, dtype=torch.uint8), None)
    assert pending.name == "a"
    with pytest.raises(WireFormatError, match="expected bytes from 8 of weight 'a', got 'b' from byte 0"):
        check_chunks([meta("b", 1, 0, 4)], torch.zeros(4, dtype=torch.uint8), pending)
    assert check_chunks([meta("a", 4, 8, 8)], torch.zeros(8, dtype=torch.uint8), pending) is None


# ----------------------------------------------------------------------------- engine: topology and errors
def test_backend_is_registered_in_verl():
    from verl.checkpoint_engine.base import CheckpointEngineRegistry

    assert BACKEND_NAME == "gloo"
    assert CheckpointEngineRegistry.get("gloo") is GlooCheckpointEngine
    engine = CheckpointEngineRegistry.new("gloo", bucket_size=1 << 20, is_master=False, timeout_s=5)
    assert engine.wire_format == "named_tensors" and engine.bucket_size == 1 << 20


def test_build_topology_one_sender_and_every_rollout_worker():
    metadata = [{"is_master": True, "host": "10.0.0.1", "port": 1234}] + [{"is_master": False}] * 5
    actor, rollout = GlooCheckpointEngine.build_topology(3, 3, metadata)
    assert actor["rank"] == [0, -1, -1] and rollout["rank"] == [1, 2, 3]
    assert actor["world_size"] == [4] * 3 and rollout["world_size"] == [4] * 3
    assert set(actor["master_host"] + rollout["master_host"]) == {"10.0.0.1"}
    assert set(actor["master_port"] + rollout["master_port"]) == {1234}


@pytest.mark.parametrize(
    "actor,rollout,metadata,match",
    [
        (2, 1, [{"is_master": False}, {"is_master": True, "host": "h", "port": 1}, {}], r"masters are workers \[1\]"),
        (1, 1, [{"is_master": True, "host": "h", "port": 1}], "1 prepare\\(\\) results for 1 actor and 1 rollout"),
        (1, 0, [{"is_master": True, "host": "h", "port": 1}], "at least one actor and one rollout worker"),
    ],
)
def test_build_topology_errors(actor, rollout, metadata, match):
    with pytest.raises(CheckpointEngineError, match=match):
        GlooCheckpointEngine.build_topology(actor, rollout, metadata)


def test_engine_errors_name_the_stage():
    with pytest.raises(ValueError, match="update_weights_bucket_megabytes"):
        GlooCheckpointEngine(bucket_size=16)
    with pytest.raises(ValueError, match="timeout_s"):
        GlooCheckpointEngine(bucket_size=1 << 20, timeout_s=0)
    engine = GlooCheckpointEngine(bucket_size=1 << 20)
    with pytest.raises(CheckpointEngineError, match="send_weights before init_process_group"):
        asyncio.run(engine.send_weights(iter(_weights())))
    with pytest.raises(CheckpointEngineError, match="receive_weights before init_process_group"):
        asyncio.run(_collect(engine.receive_weights()))
    with pytest.raises(CheckpointEngineError, match="rank 0 joined the group without prepare"):
        engine.init_process_group(rank=0, world_size=2, master_host=LOCALHOST, master_port=1)


def test_actor_ranks_outside_the_group_drain_the_generator():
    drained = []

    def weights():
        for name, tensor in _weights():
            drained.append(name)  # stands in for FSDP's collective full_tensor()
            yield name, tensor

    engine = GlooCheckpointEngine(bucket_size=1 << 20, is_master=False)
    engine.init_process_group(rank=-1, world_size=3, master_host=LOCALHOST, master_port=1)
    assert asyncio.run(engine.send_weights(weights(), global_steps=1)) == {}
    assert drained == [n for n, _ in _weights()]
    with pytest.raises(CheckpointEngineError, match="cannot receive"):
        asyncio.run(_collect(engine.receive_weights()))
    engine.finalize()
    assert engine.rank is None


def test_a_receiver_whose_sender_never_joins_times_out_with_a_clear_error():
    master = GlooCheckpointEngine(bucket_size=1 << 20, is_master=True, host=LOCALHOST, timeout_s=2)
    meta = master.prepare()
    receiver = GlooCheckpointEngine(bucket_size=1 << 20, timeout_s=2)
    with pytest.raises(CheckpointEngineError, match=r"rank 1 of 2 could not join .* within 2 s"):
        receiver.init_process_group(rank=1, world_size=2, master_host=meta["host"], master_port=meta["port"])
    master.finalize()


# ----------------------------------------------------------------------------- engine: real transfers
def _setup(n_receivers: int, bucket_size: int):
    sender = GlooCheckpointEngine(bucket_size=bucket_size, is_master=True, host=LOCALHOST, timeout_s=60)
    receivers = [GlooCheckpointEngine(bucket_size=bucket_size, timeout_s=60) for _ in range(n_receivers)]
    metadata = [sender.prepare()] + [r.prepare() for r in receivers]
    return sender, receivers, GlooCheckpointEngine.build_topology(1, n_receivers, metadata)


def _receive(kwargs: dict, bucket_size: int, global_steps: int, queue) -> None:
    """A receiver in its own process: join, receive, send back what arrived (or the error)."""
    try:
        engine = GlooCheckpointEngine(bucket_size=bucket_size, timeout_s=60)
        engine.init_process_group(**kwargs)
        received = asyncio.run(_collect(engine.receive_weights(global_steps=global_steps)))
        engine.finalize()
        # As bytes: a queued tensor travels as a file descriptor that dies with this process, which may exit
        # before the test process unpickles it.
        buffer = io.BytesIO()
        torch.save([(n, t.clone()) for n, t in received], buffer)
        queue.put(buffer.getvalue())
    except BaseException as exc:  # noqa: BLE001  reported to the test process
        queue.put(exc)


def test_weights_reach_a_receiver_in_another_process():
    bucket_size = 1 << 10  # several buckets, one tensor split over three
    sender, _, (actor, rollout) = _setup(1, bucket_size)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_receive, args=({k: v[0] for k, v in rollout.items()}, bucket_size, 7, queue))
    child.start()
    try:
        sender.init_process_group(**{k: v[0] for k, v in actor.items()})
        metrics = asyncio.run(sender.send_weights(iter(_weights()), global_steps=7))
        received = queue.get(timeout=120)
    finally:
        child.join(timeout=60)
        sender.finalize()
    if isinstance(received, BaseException):
        raise received
    _assert_same(_weights(), torch.load(io.BytesIO(received)))
    assert metrics["weight_sync/gloo/tensors"] == len(_weights())
    assert child.exitcode == 0


def test_two_receivers_get_the_same_weights_and_a_step_mismatch_is_refused():
    sender, receivers, (actor, rollout) = _setup(2, 1 << 20)
    results: dict[int, object] = {}

    def run(i: int, expected_step: int) -> None:
        receivers[i].init_process_group(**{k: v[i] for k, v in rollout.items()})
        try:
            results[i] = [(n, t.clone()) for n, t in asyncio.run(_collect(receivers[i].receive_weights(expected_step)))]
        except CheckpointEngineError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(0, 3)), threading.Thread(target=run, args=(1, 2))]
    for t in threads:
        t.start()
    sender.init_process_group(**{k: v[0] for k, v in actor.items()})
    asyncio.run(sender.send_weights(iter(_weights()), global_steps=3))
    for t in threads:
        t.join(timeout=60)
    sender.finalize()
    _assert_same(_weights(), results[0])
    assert isinstance(results[1], CheckpointEngineError)
    assert "received the weights of step 3 while updating to step 2" in str(results[1])
