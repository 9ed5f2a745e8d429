"""SimpleRL-Zoo math data (``hkust-nlp/SimpleRL-Zoo-Data``, arXiv 2503.18892): ESPO's training set.

ESPO (arXiv 2512.00499, Sec. 4.1) trains on "SimpleRL" with 8,192 prompts for 3 epochs. SimpleRL-Zoo ships three
difficulty tiers as folders of parquet files, each in two prompt styles: ``simplelr_qwen_gsm8k_level1`` (easy),
``simplelr_qwen_level1to4`` (medium), ``simplelr_qwen_level3to5`` (hard; the tier SimpleRL-Zoo uses for Qwen
models), and the ``simplelr_abel_*`` twins. The default subset is ``simplelr_qwen_level3to5``; its train split has
8,523 problems (MATH levels 3-5), so to get ESPO's 8,192 we keep a seeded random 8,192 of them, in source order
(our choice: the paper does not say how it got 8,192; ``--n-train 0`` keeps all). Its test split (MATH-500
according to peers' loaders) is kept whole.

The files are already veRL rows whose ``prompt`` is a pre-rendered Qwen chat string; we rebuild the prompt from the
problem with the shared template instead (veRL applies the tokenizer's chat template itself). The problem is read
from ``extra_info.question`` (else a top-level ``question``), the answer from ``reward_model.ground_truth`` (else
``extra_info.answer``, else ``gt_answer``); rows without an answer are dropped (a peer's loader
reports two level-5 problems without one).
Writes ``simplerl_zoo/train.parquet`` and ``simplerl_zoo/test.parquet``. Default template: ESPO's.
"""

from __future__ import annotations

import argparse
from typing import Any

from verl_espo.data.common import (
    ESPO_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    get_template,
    load_hf,
    normalize_ground_truth,
    rl_dataset,
    run_cli,
    seeded_subset,
)

__all__ = ["NAME", "HF_ID", "SUBSET", "N_TRAIN", "SPEC", "question_and_answer", "convert"]

NAME = "simplerl_zoo"
HF_ID = "hkust-nlp/SimpleRL-Zoo-Data"
SUBSET = "simplelr_qwen_level3to5"
#: ESPO Sec. 4.1: "SimpleRL ... 8,192 prompts".
N_TRAIN = 8192


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def question_and_answer(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(problem, ground truth)`` of a SimpleRL-Zoo row; None where the row has none."""
    extra = row.get("extra_info") or {}
    reward = row.get("reward_model") or {}
    question = _first(extra.get("question"), row.get("question"))
    answer = _first(reward.get("ground_truth"), extra.get("answer"), row.get("gt_answer"))
    return (
        None if question is None else str(question).strip(),
        None if answer is None else normalize_ground_truth(answer),
    )


def convert(ds, split: str, template: PromptTemplate = ESPO_TEMPLATE, n: int = 0, seed: int = 0):
    """RL rows of one split: rows with a problem and an answer, then a seeded subset of ``n`` (``n <= 0``: all)."""
    pairs = [question_and_answer(row) for row in ds]
    kept = [(q, a) for q, a in pairs if q and a]
    if not kept:
        raise ValueError(f"{NAME}/{split}: no row has both a question and an answer; columns: {ds.column_names}")
    chosen = seeded_subset(len(kept), n, seed)
    return rl_dataset(((*kept[i], {}) for i in chosen), data_source=NAME, split=split, template=template)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subset", default=SUBSET, help="folder of %s (default: %%(default)s)" % HF_ID)
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="train prompts kept, 0 = all (default: 8192)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train subset (default: 0)")


def _prepare(args: argparse.Namespace) -> dict:
    template = get_template(args.template)
    out = {}
    for split in ("train", "test"):
        files = {split: f"{args.subset}/{split}.parquet"}
        ds = load_hf(HF_ID, split=split, revision=args.revision, data_files=files)
        out[split] = convert(ds, split, template, n=args.n_train if split == "train" else 0, seed=args.seed)
    return out


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("train", "test"),
    prepare=_prepare,
    add_arguments=_add_arguments,
    summary="SimpleRL-Zoo math prompts (ESPO's training set, 8,192 prompts).",
)

if __name__ == "__main__":
    run_cli(SPEC)
