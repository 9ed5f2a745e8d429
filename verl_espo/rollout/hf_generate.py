"""Batched token-in/token-out generation with Hugging Face ``generate`` (no veRL, no Ray).

Sampling is done by one logits processor, :class:`SampleAndRecord`, run under HF's greedy search: it
applies transformers' repetition penalty, temperature, top-k and top-p processors itself, draws the token from
its own ``torch.Generator`` and returns scores that make greedy search pick exactly that token. So
``generate`` adds no warpers of its own (the model's ``generation_config`` defaults cannot leak in), and the
log-probability of every chosen token is recorded in the same step. Log-probs are ``log_softmax(logits / T)``
of the (penalised) logits (``T = 1`` for greedy), the quantity veRL's actor computes for ``old_log_probs``
(top-k/top-p truncation is not renormalised in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["SamplingSpec", "Generation", "SampleAndRecord", "generate_batch"]


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters shared by one batch (requests with equal specs are batched together)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_request(cls, params: dict[str, Any]) -> "SamplingSpec":
        """Build from a veRL agent-loop ``sampling_params`` dict (vLLM names; other keys are ignored)."""

        def get(key: str, default: Any) -> Any:
            value = params.get(key)
            return default if value is None else value

        return cls(
            temperature=float(get("temperature", 1.0)),
            top_p=float(get("top_p", 1.0)),
            top_k=int(get("top_k", -1)),
            repetition_penalty=float(get("repetition_penalty", 1.0)),
            ignore_eos=bool(get("ignore_eos", False)),
        )


@dataclass
class Generation:
    """One response: generated token ids (up to and including EOS) and, if asked, their log-probs."""

    token_ids: list[int]
    log_probs: Optional[list[float]]
    finish_reason: str  # "stop" (EOS) or "length"


class SampleAndRecord:
    """Logits processor that samples the next token and records its log-probability.

    ``scaling`` (repetition penalty, temperature) shapes the distribution the log-probs are taken from;
    ``warpers`` (top-k, top-p) then truncate it for sampling. Both are transformers' logits processors.
    """

    def __init__(self, spec: SamplingSpec, generator: Optional[torch.Generator] = None):
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.spec = spec
        self.generator = generator
        self.log_probs: list[torch.Tensor] = []  # one (B,) tensor per step
        self.scaling = LogitsProcessorList()
        self.warpers = LogitsProcessorList()
        if spec.repetition_penalty != 1.0:
            self.scaling.append(RepetitionPenaltyLogitsProcessor(spec.repetition_penalty))
        if not spec.greedy:
            if spec.temperature != 1.0:
                self.scaling.append(TemperatureLogitsWarper(spec.temperature))
            if spec.top_k > 0:
                self.warpers.append(TopKLogitsWarper(spec.top_k))
            if spec.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(spec.top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = self.scaling(input_ids, scores.float())
        if self.spec.greedy:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(self.warpers(input_ids, logits), dim=-1)
            chosen = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        self.log_probs.append(torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]).squeeze(-1))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)


def _left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: list[int],
    spec: SamplingSpec,
    *,
    eos_token_ids: list[int],
    pad_token_id: int,
    want_log_probs: bool,
    generator: Optional[torch.Generator] = None,
) -> list[Generation]:
    """Generate one response per prompt in a single left-padded ``model.generate`` call.

    ``max_new_tokens[i]`` caps response ``i``; the batch runs to the largest cap and each row is cut to its
    own (rows are sampled independently, so this equals running them separately).
    """
    from transformers import GenerationConfig, LogitsProcessorList

    device = next(model.parameters()).device
    input_ids, attention_mask = _left_pad(prompts, pad_token_id, device)
    stop_ids = [] if spec.ignore_eos else list(eos_token_ids)
    config = GenerationConfig(
        max_new_tokens=max(max_new_tokens),
        do_sample=False,  # SampleAndRecord samples; greedy search then takes its token
        num_beams=1,
        eos_token_id=stop_ids or None,
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    sampler = SampleAndRecord(spec, generator)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=config,
        logits_processor=LogitsProcessorList([sampler]),
    )
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    log_probs = torch.stack(sampler.log_probs, dim=1).tolist() if (want_log_probs and sampler.log_probs) else None

    results = []
    stop = set(stop_ids)
    for i, row in enumerate(new_tokens):
        cap = max_new_tokens[i]
        end = next((j + 1 for j, tok in enumerate(row[:cap]) if tok in stop), None)
        length, reason = (end, "stop") if end is not None else (min(cap, len(row)), "length")
        results.append(
            Generation(
                token_ids=row[:length],
                log_probs=[float(x) for x in log_probs[i][:length]] if log_probs is not None else None,
                finish_reason=reason,
            )
        )
    return results
