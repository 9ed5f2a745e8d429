"""A tiny Qwen2 model with random weights and a character-level tokenizer, built locally (no downloads).

Used by the tests and by the bundled no-GPU default run. The tokenizer has one token per printable
ASCII character plus special tokens for padding, end of turn and the chat roles, so any text round-trips
and prompts and responses stay short.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path

__all__ = [
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "build_tokenizer",
    "make_tiny_model",
    "build_tiny_model",
    "build_assets",
    "head_dim",
]

logger = logging.getLogger(__name__)

#: Padding, end of turn (the eos token) and one token per chat role.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>"]

#: A compact ChatML: ``<|user|>3+4=<|im_end|>\n<|assistant|>`` is 8 tokens. Role names as single tokens
#: keep the operands close to the answer: a supervised probe learned the toy task about twice as fast
#: as with spelled-out ``<|im_start|>user\n`` headers. Turns still end in ``<|im_end|>\n``, as veRL's Qwen
#: continuous-token builder (chosen for ``model_type: qwen2``) expects at multi-turn boundaries.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def head_dim(config) -> int:
    """The attention head size of a Hugging Face config (object or dict): ``head_dim``, else hidden / heads."""
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    explicit = get("head_dim")
    return int(explicit) if explicit else int(get("hidden_size")) // int(get("num_attention_heads"))


def build_tokenizer(out_dir: str | Path):
    """Write a character-level tokenizer with a compact chat template to ``out_dir``.

    It is a byte-level BPE without merges (one token per printable ASCII character), the format of Qwen2's
    own tokenizer, so ``AutoTokenizer`` loads it as ``Qwen2Tokenizer`` next to a Qwen2 config and spaces and
    newlines round-trip.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {byte_chars[ord(c)]: i for i, c in enumerate(chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def make_tiny_model(
    tokenizer,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    seed: int = 0,
):
    """A randomly initialised fp32 ``Qwen2ForCausalLM`` sized for ``tokenizer``.

    The defaults (hidden 128, 4 query and 2 key/value heads: head size 32, 224k parameters) are the bundled
    model of both rollouts: vLLM's CPU attention accepts head sizes 32, 64, 80, ...
    (``CPUAttentionBackend.get_supported_head_sizes``), and this size learns the toy task in the main job's 40
    steps with either rollout (measured side by side: last five steps' reward and validation at step 40 0.60 /
    0.59 with ``hf``, 0.66 / 0.63 with vLLM; docs/vllm_cpu.md). Hidden 64 with 4 heads (head size 16) learned
    more with ``hf`` (0.78 / 0.88) but vLLM's CPU attention rejects it; hidden 64 with 2 / 1 heads barely learned.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(out_dir: str | Path, tokenizer, **model_kwargs):
    """Write a randomly initialised tiny ``Qwen2ForCausalLM`` (see :func:`make_tiny_model`) to ``out_dir``."""
    model = make_tiny_model(tokenizer, **model_kwargs)
    model.save_pretrained(str(out_dir))
    return model


def build_assets(
    out_dir: str | Path,
    *,
    warmup_steps: int = 150,
    warmup_lr: float = 3e-3,
    echo_fraction: float = 0.5,
    seed: int = 0,
    **model_kwargs,
) -> Path:
    """Tokenizer and tiny model in one directory, usable as ``actor_rollout_ref.model.path``.

    The model is random (``seed``), then warmed up for ``warmup_steps`` SFT steps (0 skips it) on the
    answer format and on echoing a number into the box, but no arithmetic (:mod:`verl_espo.toy.warmup`),
    so RL on :mod:`verl_espo.toy.task` starts at about 10% reward. ``model_kwargs`` go to
    :func:`make_tiny_model`. What was built is recorded in ``toy_assets.json``. Offline, a few seconds on
    2 CPU cores, and deterministic for a given seed. It runs on one torch thread: for a model this small a
    second thread only adds contention (20x slower on a loaded 2-core machine, same weights).
    """
    import torch

    from verl_espo.toy.warmup import format_warmup

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_tiny_model(tokenizer, seed=seed, **model_kwargs)
        warmup = None
        if warmup_steps:
            warmup = format_warmup(
                model, tokenizer, steps=warmup_steps, lr=warmup_lr, echo_fraction=echo_fraction, seed=seed
            )
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(str(out))
    record = {
        "seed": seed,
        "model": {**{k: getattr(model.config, k) for k in _RECORDED_CONFIG}, "head_dim": head_dim(model.config)},
        "num_parameters": model.num_parameters(),
        "warmup": warmup,
    }
    (out / "toy_assets.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("toy assets in %s: %d parameters, warm-up %s", out, record["num_parameters"], warmup)
    return out


_RECORDED_CONFIG = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
