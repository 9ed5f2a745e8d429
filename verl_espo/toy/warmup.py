"""Format warm-up: a few seconds of SFT so the random tiny model answers ``\\boxed{d}<|im_end|>``.

The warm-up teaches the answer format and to read a number from the question, but no arithmetic.
Its batches mix two kinds of examples:

* task prompts (``"3+4="``) with a **random** digit in the box, independent of the problem: the
  format, and a near-uniform answer distribution (so RL starts at about 10% reward and explores
  every digit);
* echo prompts (``"7="``) answered ``\\boxed{7}``: this builds the circuit that moves a digit from the
  question into the box, which a pretrained model would already have.

Without the echo half, the model learns to ignore the question, and RL on the tiny model then finds
no signal within tens of steps: it drifts to one constant answer or breaks the format.
"""

from __future__ import annotations

import logging
import random
import time

from verl_espo.toy.task import OPS, sample_problem

__all__ = ["chat_prompt", "warmup_example", "format_warmup"]

logger = logging.getLogger(__name__)


def chat_prompt(tokenizer, content: str) -> str:
    """The prompt text veRL's RL dataset produces: the chat template with a generation prompt."""
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def warmup_example(rng: random.Random, echo_fraction: float = 0.5, ops: tuple[str, ...] = OPS) -> tuple[str, str]:
    """One ``(prompt, response)`` pair: echo ``"7="`` -> ``\\boxed{7}``, or a task prompt with a random digit."""
    if rng.random() < echo_fraction:
        digit = rng.randrange(10)
        return f"{digit}=", f"\\boxed{{{digit}}}"
    return sample_problem(rng, ops).prompt, f"\\boxed{{{rng.randrange(10)}}}"


def _batch(tokenizer, examples: list[tuple[str, str]]):
    """Right-padded ids, attention mask and labels (loss on the response and its eos only)."""
    import torch

    rows, prompt_lens = [], []
    for content, response in examples:
        prompt = tokenizer.encode(chat_prompt(tokenizer, content), add_special_tokens=False)
        rows.append(prompt + tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id])
        prompt_lens.append(len(prompt))
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, prompt_lens)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, n : len(row)] = torch.tensor(row[n:])
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask, labels


def format_warmup(
    model,
    tokenizer,
    *,
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 3e-3,
    echo_fraction: float = 0.5,
    seed: int = 0,
    ops: tuple[str, ...] = OPS,
) -> dict:
    """Train ``model`` in place (AdamW, constant ``lr``); returns a summary of what it did."""
    import torch

    rng = random.Random(seed)  # the only randomness: Qwen2 has no dropout
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        examples = [warmup_example(rng, echo_fraction, ops) for _ in range(batch_size)]
        input_ids, attention_mask, labels = _batch(tokenizer, examples)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    summary = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "echo_fraction": echo_fraction,
        "seed": seed,
        "final_loss": round(loss.item(), 4),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("toy format warm-up (boxed random digits + echo prompts): %s", summary)
    return summary
