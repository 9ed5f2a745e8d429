"""AIME 2025 (``yentinglin/aime_2025``, split ``train``): the 30 problems of AIME 2025 I and II.

Source columns used: ``problem``, ``answer`` (an integer 0-999); the most common AIME 2025 copy in peers'
evaluation code (``load_dataset("yentinglin/aime_2025", split="train")``). ``opencompass/AIME2025`` (configs
``AIME2025-I``/``-II``, columns ``question``/``answer``) holds the same problems. Writes ``aime2025/test.parquet``.
Default template: ESPO's.
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

NAME = "aime2025"
HF_ID = "yentinglin/aime_2025"
HF_SPLIT = "train"


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of AIME 2025."""
    return benchmark_dataset(
        ds, data_source=NAME, template=template, problem_key="problem", answer_key="answer", extra_keys=()
    )


def _prepare(args: argparse.Namespace) -> dict:
    return {"test": convert(load_hf(HF_ID, split=HF_SPLIT, revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("test",),
    default_template=ESPO_TEMPLATE.name,
    prepare=_prepare,
    summary="AIME 2025 evaluation set.",
)

if __name__ == "__main__":
    run_cli(SPEC)
