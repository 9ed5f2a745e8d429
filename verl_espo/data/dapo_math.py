"""DAPO-Math-17k (``BytedTsinghua-SIA/DAPO-Math-17k``, arXiv 2503.14476): 17k math prompts with integer answers.

The source is one parquet of veRL rows (``data_source="math_dapo"``, ``prompt`` = one user message, ``reward_model``
= ``{"ground_truth", "style"}``, ``extra_info.index`` = a uuid) holding ~1.79M rows: every prompt is repeated about
100 times by accident (BytedTsinghua-SIA/DAPO#36, verl-project/verl#3065). We keep the first row of each distinct
problem, in source order (~17.4k rows; ``open-r1/DAPO-Math-17k-Processed`` is the same deduplication).

DAPO's user message wraps the problem in an ``Answer:`` instruction for its Minerva-style scorer; we strip that
instruction (:func:`strip_instruction`, exact prefix and suffix, an error otherwise) and apply the shared ``\\boxed{}``
template, so the math-verify reward of :mod:`verl_espo.rewards.math` scores it like every other set. The source uuid
goes to ``extra_info.source_index``. Writes ``dapo_math/train.parquet``. Default template: ESPO's.
"""

from __future__ import annotations

import argparse

from verl_espo.data.common import (
    ESPO_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    get_template,
    load_hf,
    normalize_ground_truth,
    rl_dataset,
    run_cli,
)

__all__ = ["NAME", "HF_ID", "SPEC", "PREFIX", "SUFFIX", "strip_instruction", "convert"]

NAME = "dapo_math"
HF_ID = "BytedTsinghua-SIA/DAPO-Math-17k"

#: The instruction DAPO puts around every problem (verbatim from the data set).
PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def strip_instruction(content: str) -> str:
    """The problem inside DAPO's user message; ValueError if the message is not ``PREFIX + problem + SUFFIX``."""
    if not (content.startswith(PREFIX) and content.endswith(SUFFIX)):
        raise ValueError(f"unexpected DAPO-Math prompt (instruction prefix/suffix missing): {content[:120]!r}")
    return content[len(PREFIX) : len(content) - len(SUFFIX)].strip()


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of DAPO-Math-17k, one per distinct problem (first occurrence), in source order."""
    seen: set[str] = set()
    records = []
    for row in ds:
        problem = strip_instruction(row["prompt"][-1]["content"])
        if problem in seen:
            continue
        seen.add(problem)
        source_index = (row.get("extra_info") or {}).get("index")
        records.append(
            (problem, normalize_ground_truth(row["reward_model"]["ground_truth"]), {"source_index": source_index})
        )
    return rl_dataset(records, data_source=NAME, split="train", template=template)


def _prepare(args: argparse.Namespace) -> dict:
    return {"train": convert(load_hf(HF_ID, split="train", revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("train",),
    prepare=_prepare,
    summary="DAPO-Math-17k, deduplicated.",
)

if __name__ == "__main__":
    run_cli(SPEC)
