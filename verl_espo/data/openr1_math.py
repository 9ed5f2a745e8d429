"""OpenR1-Math with DeepSeek-R1 expert responses, split as CHORD does (arXiv 2508.11408): EGSPO/CHORD's data.

Source: ``open-r1/OpenR1-Math-220k``, config ``default`` (93,733 problems), split ``train``. Columns used:
``problem``, ``answer``, ``uuid``, ``generations`` (2-4 R1 traces) and ``correctness_math_verify`` (one bool per
trace). CHORD uses 5k problems for SFT and 20k others for RL, with integer answers. The selection follows CHORD's
released script (Trinity-RFT ``examples/mix_chord/get_openr1_data.py``):

1. drop problems containing CJK characters (mistranslated problems);
2. keep the traces that math-verify marked correct and that have at most ``max_expert_tokens`` tokens (8,196, with
   the policy's tokenizer; Qwen2.5-7B-Instruct in CHORD); drop problems with no trace left;
3. SFT: ``n_sft`` problems (5,000) drawn at random, one kept trace each, at random;
4. RL: from the remaining problems, those whose answer ``int()`` accepts and that have at least two kept traces;
   ``n_rl`` (20,000) drawn at random.

Differences from the script, all deliberate: the SFT problems also need an integer answer (the paper: "integer
answers"; the script applies it to RL only; ``--sft-any-answer`` restores the script's rule); draws use
``numpy.random.default_rng(seed)`` rather than Python's ``random`` seeded 42, so the exact problems differ; the CJK
test covers the ranges the script meant (its ``"\\u20000"`` is a typo for U+20000). RL rows carry one kept trace in
``extra_info["expert_response"]`` (for a hybrid trainer mixing expert demonstrations; CHORD's Trinity example draws
its expert samples from the SFT set instead, which is ``sft.parquet``).

Writes ``openr1_math/sft.parquet`` (``messages``: [system, user, assistant = the R1 trace]) and
``openr1_math/train.parquet`` (RL rows). Default template: CHORD's.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verl_espo.data.common import (
    CHORD_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    get_template,
    load_hf,
    normalize_ground_truth,
    rl_dataset,
    run_cli,
    sft_row,
)

__all__ = ["NAME", "HF_ID", "SPEC", "ChordSplit", "has_cjk", "is_integer_answer", "expert_pool", "select", "convert"]

NAME = "openr1_math"
HF_ID = "open-r1/OpenR1-Math-220k"
HF_CONFIG = "default"
#: CHORD's policy model, whose tokenizer measures the traces.
TOKENIZER = "Qwen/Qwen2.5-7B-Instruct"

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002a6df]")


@dataclass(frozen=True)
class ChordSplit:
    """CHORD's split sizes and filters (Trinity-RFT ``get_openr1_data.py``; arXiv 2508.11408 Sec. 4.1).

    Args:
        n_sft: SFT problems (5,000).
        n_rl: RL problems (20,000), disjoint from the SFT ones.
        max_expert_tokens: longest trace kept, in tokens of the policy's tokenizer (8,196).
        min_rl_traces: kept traces an RL problem needs (2).
        sft_integer_only: SFT problems need an integer answer too (the paper; the script: RL only).
        seed: seed of ``numpy.random.default_rng`` for every draw.
    """

    n_sft: int = 5000
    n_rl: int = 20000
    max_expert_tokens: int = 8196
    min_rl_traces: int = 2
    sft_integer_only: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        for key in ("n_sft", "n_rl", "max_expert_tokens", "min_rl_traces"):
            if getattr(self, key) < 1:
                raise ValueError(f"ChordSplit.{key} (--{key.replace('_', '-')}) must be >= 1, got {getattr(self, key)}")


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains a CJK ideograph (CHORD drops those problems as mistranslated)."""
    return _CJK.search(text) is not None


def is_integer_answer(answer: Any) -> bool:
    """Whether ``int()`` accepts the answer, CHORD's test (``"12"``, ``" -3 "``: yes; ``"1.0"``, ``"1/2"``: no)."""
    try:
        int(answer)
    except (TypeError, ValueError):
        return False
    return True


def expert_pool(ds, token_len: Callable[[str], int] | None, max_expert_tokens: int) -> list[dict[str, Any]]:
    """Steps 1-2: ``[{"problem", "answer", "uuid", "traces"}]`` for problems with at least one kept trace."""
    pool = []
    for row in ds:
        if has_cjk(row["problem"]):
            continue
        correct = row["correctness_math_verify"] or []
        traces = [
            trace
            for i, trace in enumerate(row["generations"] or [])
            if i < len(correct) and correct[i] and (token_len is None or token_len(trace) <= max_expert_tokens)
        ]
        if traces:
            pool.append(
                {"problem": row["problem"].strip(), "answer": row["answer"], "uuid": row["uuid"], "traces": traces}
            )
    return pool


def select(pool: list[dict[str, Any]], split: ChordSplit) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Steps 3-4: ``(sft, rl)`` lists of ``(pool index, chosen trace)``, disjoint, each in pool order.

    One ``numpy.random.default_rng(split.seed)`` makes every draw: the SFT problems, their traces, the RL problems,
    their traces.
    """
    import numpy as np

    rng = np.random.default_rng(split.seed)

    def draw(eligible: list[int], n: int) -> list[tuple[int, str]]:
        chosen = sorted(eligible[int(i)] for i in rng.permutation(len(eligible))[:n])
        return [(i, pool[i]["traces"][int(rng.integers(len(pool[i]["traces"])))]) for i in chosen]

    sft = draw(
        [i for i, p in enumerate(pool) if not split.sft_integer_only or is_integer_answer(p["answer"])], split.n_sft
    )
    taken = {i for i, _ in sft}
    rl_eligible = [
        i
        for i, p in enumerate(pool)
        if i not in taken and is_integer_answer(p["answer"]) and len(p["traces"]) >= split.min_rl_traces
    ]
    return sft, draw(rl_eligible, split.n_rl)


def convert(
    ds,
    split: ChordSplit = ChordSplit(),
    template: PromptTemplate = CHORD_TEMPLATE,
    token_len: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """``{"sft": messages rows, "train": RL rows}`` (steps 1-4); ``token_len`` measures a trace (None: no limit)."""
    from datasets import Dataset

    pool = expert_pool(ds, token_len, split.max_expert_tokens)
    sft, rl = select(pool, split)
    if not sft:
        raise ValueError(f"{NAME}: no problem qualifies for SFT ({len(pool)} problems with a kept trace)")
    records = (
        (pool[i]["problem"], normalize_ground_truth(pool[i]["answer"]), {"uuid": pool[i]["uuid"], "expert_response": t})
        for i, t in rl
    )
    return {
        "sft": Dataset.from_list([sft_row(pool[i]["problem"], trace, template) for i, trace in sft]),
        "train": rl_dataset(records, data_source=NAME, split="train", template=template),
    }


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ChordSplit()
    parser.add_argument("--n-sft", type=int, default=defaults.n_sft, help="SFT problems (default: %(default)s)")
    parser.add_argument("--n-rl", type=int, default=defaults.n_rl, help="RL problems (default: %(default)s)")
    parser.add_argument(
        "--max-expert-tokens",
        type=int,
        default=defaults.max_expert_tokens,
        help="longest expert trace kept, in tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer",
        default=TOKENIZER,
        help="tokenizer that measures traces; 'none' disables the length filter (default: %(default)s)",
    )
    parser.add_argument(
        "--sft-any-answer", action="store_true", help="SFT problems need not have an integer answer (CHORD's script)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every draw (default: %(default)s)")


def _prepare(args: argparse.Namespace) -> dict:
    split = ChordSplit(
        n_sft=args.n_sft,
        n_rl=args.n_rl,
        max_expert_tokens=args.max_expert_tokens,
        sft_integer_only=not args.sft_any_answer,
        seed=args.seed,
    )
    token_len = None
    if args.tokenizer.lower() != "none":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        token_len = lambda text: len(tokenizer.tokenize(text))  # noqa: E731
    ds = load_hf(HF_ID, name=HF_CONFIG, split="train", revision=args.revision)
    ds = ds.select_columns(["problem", "answer", "uuid", "generations", "correctness_math_verify"])
    return convert(ds, split, get_template(args.template), token_len)


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("sft", "train"),
    default_template=CHORD_TEMPLATE.name,
    prepare=_prepare,
    add_arguments=_add_arguments,
    summary="OpenR1-Math with R1 expert traces, CHORD's 5k SFT / 20k RL split.",
)

if __name__ == "__main__":
    run_cli(SPEC)
