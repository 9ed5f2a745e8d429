"""MATH-500 (``HuggingFaceH4/MATH-500``, split ``test``): the 500-problem MATH test subset of "Let's Verify Step by
Step" (arXiv 2305.20050), ESPO's and EGSPO's MATH benchmark.

Source columns: ``problem``, ``solution``, ``answer`` (the final answer in LaTeX), ``subject``, ``level``,
``unique_id``. The ground truth is ``answer``; ``subject``, ``level`` and ``unique_id`` go to ``extra_info``.
Writes ``math500/test.parquet``. Default template: ESPO's.
"""

from __future__ import annotations

import argparse

from verl_espo.data.common import (
    ESPO_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    benchmark_dataset,
    get_template,
    load_hf,
    run_cli,
)

__all__ = ["NAME", "HF_ID", "SPEC", "convert"]

NAME = "math500"
HF_ID = "HuggingFaceH4/MATH-500"


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of MATH-500."""
    return benchmark_dataset(
        ds,
        data_source=NAME,
        template=template,
        problem_key="problem",
        answer_key="answer",
        extra_keys=("subject", "level", "unique_id"),
    )


def _prepare(args: argparse.Namespace) -> dict:
    return {"test": convert(load_hf(HF_ID, split="test", revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("test",),
    default_template=ESPO_TEMPLATE.name,
    prepare=_prepare,
    summary="MATH-500 evaluation set.",
)

if __name__ == "__main__":
    run_cli(SPEC)
