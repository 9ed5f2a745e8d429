"""Expert demonstrations for hybrid SFT + RL training (CHORD's sample-level mixing, arXiv 2508.11408).

Two file formats are read: veRL's RL parquet (``prompt`` = chat messages, ``data_source``, ``reward_model``,
``extra_info``) plus the expert response, in a ``response_key`` column or in ``extra_info[response_key]`` (one
prepared file can feed both the RL prompts and the expert rows); or an SFT ``messages`` parquet (the stage-1
file), whose last message is the expert's assistant turn and the messages before it the prompt, as Trinity-RFT
draws CHORD's expert samples from the SFT set.
Each step takes ``batch_size`` demonstrations, in an order that depends only on the seed and the step
(a fresh permutation each pass over the file), so a resumed run sees the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
from verl.base_config import BaseConfig

__all__ = ["EXPERT_DATA_KEY", "ExpertDataConfig", "ExpertSample", "ExpertDemonstrations", "read_expert_file"]

logger = logging.getLogger(__name__)

#: Where the block lives in the trainer config, for error messages.
EXPERT_DATA_KEY = "data.expert"


@dataclass
class ExpertDataConfig(BaseConfig):
    """``data.expert.*``: where the expert demonstrations come from and how many go into each step.

    Args:
        files: parquet file(s) of expert demonstrations; ``null`` (default) trains pure RL.
        batch_size: expert rows per training step, >= 1 (CHORD math: 64 beside 32 prompts x 8 rollouts).
        response_key: the column, or ``extra_info`` key, holding the expert response text.
        seed: seed of the order in which demonstrations are drawn.
    """

    files: Optional[Any] = None
    batch_size: int = 64
    response_key: str = "expert_response"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.files, str):
            object.__setattr__(self, "files", [self.files])
        elif self.files is not None:
            files = list(self.files)
            if not files or not all(isinstance(f, str) and f for f in files):
                raise ValueError(f"{EXPERT_DATA_KEY}.files must be null, a path or a list of paths, got {self.files!r}")
            object.__setattr__(self, "files", files)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"{EXPERT_DATA_KEY}.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.response_key, str) or not self.response_key:
            raise ValueError(f"{EXPERT_DATA_KEY}.response_key must be a non-empty string, got {self.response_key!r}")

    @property
    def enabled(self) -> bool:
        return self.files is not None

    @classmethod
    def from_mapping(cls, block: Optional[Mapping[str, Any]]) -> "ExpertDataConfig":
        """Build from the ``data.expert`` block of a trainer config (``None``: disabled), rejecting unknown keys."""
        if block is None:
            return cls()
        known = {"files", "batch_size", "response_key", "seed"}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in {EXPERT_DATA_KEY}; valid keys: {sorted(known)}")
        return cls(**{k: (list(v) if k == "files" and isinstance(v, Sequence) and not isinstance(v, str) else v)
                      for k, v in block.items()})  # fmt: skip


@dataclass
class ExpertSample:
    """One tokenised demonstration: the prompt as the rollout sees it, the expert response, and its row data."""

    prompt_ids: list[int]
    response_ids: list[int]
    raw_prompt: list[dict[str, Any]]
    row: dict[str, Any] = field(default_factory=dict)


def _expert_response(row: Mapping[str, Any], key: str) -> Any:
    if key in row and row[key] is not None:
        return row[key]
    extra = row.get("extra_info")
    if isinstance(extra, Mapping):
        return extra.get(key)
    return None


def read_expert_file(path: str, prompt_key: str = "prompt", response_key: str = "expert_response") -> list[dict]:
    """The rows of one expert parquet file as prompt + response records (SFT ``messages`` rows converted).

    Raises ``ValueError`` naming the file and the fix when it has neither a ``prompt_key`` nor a ``messages``
    column.
    """
    frame = pd.read_parquet(path)
    if prompt_key not in frame.columns and "messages" in frame.columns:
        frame = _from_messages(frame, prompt_key, response_key)
    if prompt_key not in frame.columns:
        raise ValueError(
            f"{EXPERT_DATA_KEY}.files: {path} has neither a `{prompt_key}` column (veRL RL rows plus a "
            f"`{response_key}` column or extra_info['{response_key}']) nor a `messages` column (SFT rows ending with "
            f"the assistant's turn); its columns are {list(frame.columns)}. Write it with one of these layouts "
            "(python -m verl_espo.data openr1_math writes both) or set data.prompt_key"
        )
    return frame.to_dict(orient="records")


def _from_messages(frame: pd.DataFrame, prompt_key: str, response_key: str) -> pd.DataFrame:
    """SFT rows (``messages`` ending with the assistant's turn) as prompt + expert response rows."""
    prompts, responses = [], []
    for messages in frame["messages"]:
        messages = [dict(m) for m in messages]
        last = messages[-1] if messages else {}
        ok = last.get("role") == "assistant" and len(messages) > 1
        prompts.append(messages[:-1] if ok else messages)
        responses.append(last.get("content") if ok else None)
    out = frame.drop(columns=["messages"]).copy()
    out[prompt_key] = prompts
    out[response_key] = responses
    return out


class ExpertDemonstrations:
    """Serves ``batch_size`` tokenised expert demonstrations per training step."""

    def __init__(
        self,
        config: ExpertDataConfig,
        tokenizer: Any,
        max_prompt_length: int,
        max_response_length: int,
        prompt_key: str = "prompt",
        chat_template_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if not config.enabled:
            raise ValueError(f"{EXPERT_DATA_KEY}.files is null: there are no expert demonstrations to load")
        self.config = config
        self.tokenizer = tokenizer
        self.max_prompt_length = int(max_prompt_length)
        self.max_response_length = int(max_response_length)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.rows: list[dict[str, Any]] = []
        #: ``(file, row number in that file)`` of each entry of :attr:`rows`, for messages.
        self.origins: list[tuple[str, int]] = []
        skipped = 0
        for path in config.files:
            rows = read_expert_file(path, prompt_key, config.response_key)
            for number, row in enumerate(rows):
                if isinstance(_expert_response(row, config.response_key), str):
                    self.rows.append(row)
                    self.origins.append((path, number))
                else:
                    skipped += 1
        if not self.rows:
            raise ValueError(
                f"{EXPERT_DATA_KEY}.files {config.files}: no row has an expert response in a `{config.response_key}` "
                f"column or in extra_info['{config.response_key}'] (set {EXPERT_DATA_KEY}.response_key)"
            )
        if skipped:
            logger.warning("expert data: %d of %d rows have no expert response and are skipped",
                           skipped, skipped + len(self.rows))  # fmt: skip
        self.prompt_key = prompt_key
        self.truncated = 0  # responses cut at max_response_length so far
        self._cache: dict[int, Optional[ExpertSample]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def indices_for_step(self, step: int) -> list[int]:
        """Row indices of the 1-based training ``step``: consecutive slices of per-pass permutations."""
        n, size = len(self.rows), self.config.batch_size
        start = (step - 1) * size
        out = []
        for position in range(start, start + size):
            epoch, offset = divmod(position, n)
            permutation = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            out.append(int(permutation[offset]))
        return out

    def encode(self, index: int) -> tuple[list[dict[str, Any]], list[int], list[int]]:
        """``(messages, prompt_ids, response_ids)`` of row ``index``, untruncated; the response ends with EOS."""
        row = self.rows[index]
        messages = [dict(m) for m in row[self.prompt_key]]
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        prompt_ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        response = _expert_response(row, self.config.response_key)
        response_ids = list(self.tokenizer.encode(response, add_special_tokens=False))
        eos = self.tokenizer.eos_token_id
        if eos is not None and (not response_ids or response_ids[-1] != eos):
            response_ids.append(eos)  # the demonstration ends its turn, as a finished rollout does
        return messages, prompt_ids, response_ids

    def _tokenise(self, index: int) -> Optional[ExpertSample]:
        if index not in self._cache:
            row = self.rows[index]
            messages, prompt_ids, response_ids = self.encode(index)
            if len(prompt_ids) > self.max_prompt_length:
                logger.warning(
                    "expert data: row %d has a %d-token prompt (> %d), skipped",
                    index,
                    len(prompt_ids),
                    self.max_prompt_length,
                )
                self._cache[index] = None
            else:
                if len(response_ids) > self.max_response_length:
                    response_ids = response_ids[: self.max_response_length]
                    self.truncated += 1
                self._cache[index] = ExpertSample(prompt_ids, response_ids, messages, row)
        return self._cache[index]

    def samples_for_step(self, step: int) -> list[ExpertSample]:
        """The tokenised demonstrations of the 1-based training ``step`` (prompts over the limit are dropped)."""
        return [s for s in (self._tokenise(i) for i in self.indices_for_step(step)) if s is not None]


def expert_row(template: Mapping[str, Any], sample: ExpertSample, uid: str) -> dict[str, Any]:
    """The TransferQueue fields of one expert row, built on ``template`` (a rollout row's fields as veRL's
    ``construct_minimal_padding_template`` copies them), so that every field downstream steps read is present.

    The expert response takes the place of a rollout's response; its reward is zero (no reward call), its
    rollout log-probs are placeholders (the trainer replaces them by the old log-probs), and ``is_expert`` is 1.
    """
    import torch

    prompts = torch.tensor(sample.prompt_ids, dtype=torch.int64)
    responses = torch.tensor(sample.response_ids, dtype=torch.int64)
    input_ids = torch.cat([prompts, responses])
    response_mask = torch.ones_like(responses)
    row = dict(template)
    row.update(
        prompts=prompts,
        responses=responses,
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        position_ids=torch.arange(input_ids.numel(), dtype=torch.int64),
        response_mask=response_mask,
        loss_mask=response_mask,
        rm_scores=torch.zeros(responses.numel(), dtype=torch.float32),
        num_turns=2,
        uid=uid,
        is_expert=torch.ones(1, dtype=torch.int64),
    )
    if "rollout_log_probs" in row:
        row["rollout_log_probs"] = torch.zeros(responses.numel(), dtype=torch.float32)
    if "session_id" in row:
        row["session_id"] = 0
    if "raw_prompt" in row:
        row["raw_prompt"] = sample.raw_prompt
    for key in ("data_source", "reward_model", "extra_info"):
        if key in row and key in sample.row:
            row[key] = sample.row[key]
    return row
