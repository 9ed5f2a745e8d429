"""The ``hf`` rollout server: a Ray actor that holds a Hugging Face copy of the policy and generates with it.

It implements the token-in/token-out server contract veRL's agent loop and rollout replicas use
(``verl/workers/rollout/replica.py``: ``generate(prompt_ids, sampling_params, request_id) -> TokenOutput``
plus the sleep / wake-up / abort / kv-cache / profiling controls), without an HTTP endpoint.

Concurrent ``generate`` calls (one per sample: the agent loop sends ``rollout.n`` separate requests per
prompt) are collected for a moment and run as one left-padded ``model.generate`` per group of equal
sampling parameters (:mod:`verl_espo.rollout.hf_generate`). Weights arrive from the trainer through
:class:`~verl_espo.rollout.hf_adapter.ServerAdapter` in buckets (:meth:`HFRolloutServer.load_weights`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import ray
import torch

from verl_espo.rollout.hf_generate import SamplingSpec, generate_batch

__all__ = ["HFRolloutServer", "server_actor_name", "weights_digest"]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

# Seconds to wait for more requests once the first one of a batch has arrived.
BATCH_WINDOW_S = 0.02


def server_actor_name(replica_rank: int, node_rank: int, suffix: str = "") -> str:
    """Ray actor name of a server; the adapter in the trainer workers finds its server by this name."""
    return f"hf_server_{replica_rank}_{node_rank}{suffix}"


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (in name order): equal digests mean
    bit-identical weights. The rollout server logs it after each sync with ``engine_kwargs.hf.log_weight_digest``;
    apply it to ``model.state_dict()`` of a saved checkpoint to compare."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    spec: SamplingSpec
    want_log_probs: bool
    future: asyncio.Future = field(repr=False)


class HFRolloutServer:
    """Generation server for one rollout replica (wrap with ``ray.remote``; see :class:`HFReplica`)."""

    def __init__(
        self,
        config: Any,
        model_config: Any,
        rollout_mode: Any,
        replica_rank: int,
        node_rank: int = 0,
        visible_devices: str = "",
        name: str = "",
    ):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.device import get_device_name, get_visible_devices_keyword
        from verl.workers.config import HFModelConfig, RolloutConfig

        if visible_devices and get_device_name() != "cpu":
            # Like veRL's vLLM server: this actor holds no accelerator of its own and uses its workers' one(s).
            os.environ[get_visible_devices_keyword()] = visible_devices
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.name = name or server_actor_name(replica_rank, node_rank)
        self.device = torch.device(get_device_name())
        self.global_steps: Optional[int] = None
        self.model: Optional[torch.nn.Module] = None
        self.eos_token_ids: list[int] = []
        self.pad_token_id: int = 0
        self._state: dict[str, torch.Tensor] = {}  # state-dict name -> the model's tensor (tied weights: 2 names)
        self._generator: Optional[torch.Generator] = None
        self._pending: list[_Request] = []
        self._batcher: Optional[asyncio.Task] = None
        self._lock = asyncio.Lock()  # generation vs weight loading / offloading
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._updated: set[int] = set()
        self._served = False
        hf_options = dict((self.config.engine_kwargs or {}).get("hf", None) or {})
        self.log_weight_digest = bool(hf_options.get("log_weight_digest", False))

    # ------------------------------------------------------------------ lifecycle
    async def launch_server(self) -> str:
        """Build the model (real weights, or a random init for ``load_format=dummy*``: the trainer syncs its
        weights before the first rollout). Returns the server's address key."""
        from transformers import AutoModelForCausalLM, GenerationConfig
        from verl.utils.torch_dtypes import PrecisionType

        dtype = PrecisionType.to_dtype(self.config.dtype)
        attn = (self.model_config.override_config or {}).get("attn_implementation", "sdpa")
        kwargs = dict(dtype=dtype, attn_implementation=attn, trust_remote_code=self.model_config.trust_remote_code)
        if str(self.config.load_format).startswith("dummy"):
            model = AutoModelForCausalLM.from_config(self.model_config.hf_config, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(self.model_config.local_path, **kwargs)
        tokenizer = self.model_config.tokenizer
        self.eos_token_ids = _eos_ids(self.model_config, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        # A clean generation config: the sampler does all sampling, the checkpoint's defaults must not leak in.
        model.generation_config = GenerationConfig(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)
        self.model = model.to(self.device).eval()
        self._state = self.model.state_dict(keep_vars=True)
        self._generator = torch.Generator(device=self.device).manual_seed(self.config.seed + self.replica_rank)
        ip = ray.util.get_node_ip_address().strip("[]")
        logger.info("hf rollout server %d ready on %s (%s, %s)", self.replica_rank, ip, self.device, dtype)
        return f"hf://{ip}/{self.name}"

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs: Any,
    ):
        """Generate one response for ``prompt_ids`` (token in, token out)."""
        from verl.workers.rollout.replica import TokenOutput

        if image_data or video_data or audio_data:
            raise NotImplementedError("the hf rollout backend is text-only")
        await self._accepting.wait()
        if not self._served:  # which weights the replica's first rollout uses (None: the ones it launched with)
            self._served = True
            step = self.global_steps
            logger.info("hf rollout: replica %d first request, weights of step %s", self.replica_rank, step)
        prompt_ids = [int(t) for t in prompt_ids]
        request = _Request(
            prompt_ids=prompt_ids,
            max_tokens=self._max_tokens(len(prompt_ids), sampling_params),
            spec=SamplingSpec.from_request(sampling_params),
            want_log_probs=bool(sampling_params.get("logprobs", False)),
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending.append(request)
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        result = await request.future
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _max_tokens(self, prompt_len: int, sampling_params: dict[str, Any]) -> int:
        """Response budget, as veRL's vLLM server computes it (explicit ``max_tokens`` wins)."""
        cfg = self.config
        max_tokens = sampling_params.get("max_tokens", sampling_params.get("max_new_tokens"))
        if max_tokens is None:
            max_tokens = min(cfg.response_length, cfg.prompt_length + cfg.response_length - prompt_len)
        max_model_len = cfg.max_model_len or (cfg.prompt_length + cfg.response_length)
        room = max_model_len - prompt_len
        if room < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room within max_model_len={max_model_len}")
        return max(1, min(int(max_tokens), room))

    async def _run_batches(self) -> None:
        """Drain the queue: wait a moment for concurrent requests, then generate per sampling spec."""
        while self._pending:
            await asyncio.sleep(BATCH_WINDOW_S)
            cap = self.config.max_num_seqs
            batch, self._pending = self._pending[:cap], self._pending[cap:]
            groups: dict[tuple[SamplingSpec, bool], list[_Request]] = {}
            for request in batch:
                groups.setdefault((request.spec, request.want_log_probs), []).append(request)
            logger.debug("hf rollout: batches %s (%d pending)", [len(g) for g in groups.values()], len(self._pending))
            for (spec, want_log_probs), requests in groups.items():
                await self._serve(spec, want_log_probs, requests)

    async def _serve(self, spec: SamplingSpec, want_log_probs: bool, requests: list[_Request]) -> None:
        """One ``model.generate`` for ``requests`` (in a thread, so new requests keep queueing meanwhile)."""
        try:
            async with self._lock:
                results = await asyncio.to_thread(
                    generate_batch,
                    self.model,
                    [r.prompt_ids for r in requests],
                    [r.max_tokens for r in requests],
                    spec,
                    eos_token_ids=self.eos_token_ids,
                    pad_token_id=self.pad_token_id,
                    want_log_probs=want_log_probs,
                    generator=self._generator,
                )
        except Exception as exc:  # fail these requests, keep the server alive
            logger.exception("hf rollout: generate failed")
            for r in requests:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        for r, result in zip(requests, results, strict=True):
            if not r.future.done():
                r.future.set_result(result)

    # ------------------------------------------------------------------ weights
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Copy one bucket of full (unsharded) HF-named tensors into the model; returns the tensor count."""
        async with self._lock:
            with torch.no_grad():
                for name, tensor in named_tensors:
                    target = self._state.get(name)
                    if target is None:
                        raise KeyError(f"hf rollout: the trainer sent weight {name!r}, which the rollout model lacks")
                    if target.shape != tensor.shape:
                        shapes = f"{tuple(tensor.shape)}, expected {tuple(target.shape)}"
                        raise ValueError(f"hf rollout: the trainer sent {name} with shape {shapes}")
                    target.copy_(tensor)
                    self._updated.add(id(target))
        return len(named_tensors)

    async def finish_weight_update(self, global_steps: Optional[int] = None) -> None:
        """End of one sync: warn if some weights were not sent, then record the weights' version."""
        missing = [name for name, t in self._state.items() if id(t) not in self._updated]
        self._updated.clear()
        if missing:
            logger.warning("hf rollout: weight update did not cover %d tensors, e.g. %s", len(missing), missing[:3])
        self.global_steps = global_steps
        if self.log_weight_digest:
            async with self._lock:
                digest = await asyncio.to_thread(weights_digest, self.model.state_dict())
            logger.info("hf rollout: replica %d weights at step %s: sha256 %s", self.replica_rank, global_steps, digest)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ memory (sleep / wake-up)
    async def sleep(self) -> None:
        """Hybrid mode: free accelerator memory for training (the model goes to host memory)."""
        if self.config.free_cache_engine and self.device.type != "cpu":
            async with self._lock:
                self.model.to("cpu")
                self._state = self.model.state_dict(keep_vars=True)
                from verl.utils.device import get_torch_device

                get_torch_device().empty_cache()

    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        if self.model is not None and next(self.model.parameters()).device != self.device:
            if tags is None or "weights" in tags:
                async with self._lock:
                    self.model.to(self.device)
                    self._state = self.model.state_dict(keep_vars=True)

    async def clear_kv_cache(self) -> None:  # HF keeps no cache between generate calls
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    # ------------------------------------------------------------------ request control
    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Stop admitting requests until :meth:`resume_generation`; requests already batched still finish."""
        self._accepting.clear()
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        self._accepting.set()

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def wait_for_requests_to_drain(self) -> None:
        while self._pending or (self._batcher is not None and not self._batcher.done()):
            await asyncio.sleep(BATCH_WINDOW_S)

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    def get_rollout_config(self) -> Any:
        return self.config


def _eos_ids(model_config: Any, tokenizer: Any) -> list[int]:
    """EOS ids: the model's generation config's, else the tokenizer's."""
    ids: list[int] = []
    generation_config = getattr(model_config, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for value in (eos, tokenizer.eos_token_id):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("hf rollout: neither the model nor the tokenizer defines an EOS token")
    return ids
