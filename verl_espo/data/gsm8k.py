"""GSM8K (``openai/gsm8k``, config ``main``): grade-school word problems, train 7,473 / test 1,319.

Source columns: ``question``, ``answer`` (a worked solution ending in ``#### <number>``). The ground truth is the text
after the last ``####`` with thousands separators removed, as in veRL's ``examples/data_preprocess/gsm8k.py``.
Writes ``gsm8k/train.parquet`` and ``gsm8k/test.parquet``. Default template: ESPO's.
"""

from __future__ import annotations

import argparse

from verl_espo.data.common import (
    ESPO_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    get_template,
    load_hf,
    rl_dataset,
    run_cli,
)

__all__ = ["NAME", "HF_ID", "SPEC", "extract_answer", "convert"]

NAME = "gsm8k"
HF_ID = "openai/gsm8k"
HF_CONFIG = "main"


def extract_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: after the last ``####``, without ``,`` (``"#### 1,200"`` -> ``1200``)."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution without '####': {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def convert(ds, split: str, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of one GSM8K split."""
    records = ((row["question"].strip(), extract_answer(row["answer"]), {}) for row in ds)
    return rl_dataset(records, data_source=NAME, split=split, template=template)


def _prepare(args: argparse.Namespace) -> dict:
    template = get_template(args.template)
    return {
        split: convert(load_hf(HF_ID, name=HF_CONFIG, split=split, revision=args.revision), split, template)
        for split in ("train", "test")
    }


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("train", "test"),
    prepare=_prepare,
    summary="GSM8K word problems.",
)

if __name__ == "__main__":
    run_cli(SPEC)
