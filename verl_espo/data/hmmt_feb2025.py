"""HMMT February 2025 (``MathArena/hmmt_feb_2025``, split ``train``): 30 problems, ESPO's "HMMT".

ESPO cites MathArena for HMMT; MathArena publishes the competition as this data set. Source columns:
``problem_idx``, ``problem``, ``answer`` (LaTeX, not always an integer), ``problem_type``. The ground truth is
``answer``; ``problem_idx`` goes to ``extra_info``. Writes ``hmmt_feb2025/test.parquet``. Default template: ESPO's.
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

NAME = "hmmt_feb2025"
HF_ID = "MathArena/hmmt_feb_2025"
HF_SPLIT = "train"


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of HMMT February 2025."""
    return benchmark_dataset(
        ds, data_source=NAME, template=template, problem_key="problem", answer_key="answer", extra_keys=("problem_idx",)
    )


def _prepare(args: argparse.Namespace) -> dict:
    return {"test": convert(load_hf(HF_ID, split=HF_SPLIT, revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("test",),
    default_template=ESPO_TEMPLATE.name,
    prepare=_prepare,
    summary="HMMT February 2025 evaluation set.",
)

if __name__ == "__main__":
    run_cli(SPEC)
