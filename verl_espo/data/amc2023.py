"""AMC 2023 (``math-ai/amc23``, split ``test``): the 40 AMC 12 2023 problems used as "AMC23".

The copy peers' evaluation code loads (``load_dataset("math-ai/amc23", split="test")``).
Source columns used: ``question``, ``answer`` (a number, stored as a float in some copies: ``27.0`` is written
``27``). ``AI-MO/aimo-validation-amc`` filtered on ``url`` containing ``2023`` holds the same problems. Writes
``amc2023/test.parquet``. Default template: ESPO's (EGSPO/CHORD evaluate AMC avg@8: use ``--template chord``).
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

NAME = "amc2023"
HF_ID = "math-ai/amc23"
HF_SPLIT = "test"


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of AMC 2023."""
    return benchmark_dataset(
        ds, data_source=NAME, template=template, problem_key="question", answer_key="answer", extra_keys=()
    )


def _prepare(args: argparse.Namespace) -> dict:
    return {"test": convert(load_hf(HF_ID, split=HF_SPLIT, revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("test",),
    default_template=ESPO_TEMPLATE.name,
    prepare=_prepare,
    summary="AMC 2023 evaluation set.",
)

if __name__ == "__main__":
    run_cli(SPEC)
