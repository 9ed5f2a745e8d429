"""AIME 2024 (``HuggingFaceH4/aime_2024``, split ``train``): the 30 problems of AIME 2024 I and II.

Source columns: ``id``, ``problem``, ``solution``, ``answer`` (an integer 0-999), ``url``, ``year``. Peers'
evaluation code loads this copy (``load_dataset("HuggingFaceH4/aime_2024", split="train")``). The ground truth is
``answer``; ``id`` goes to ``extra_info``. Writes ``aime2024/test.parquet`` (the only split). Default template:
ESPO's. For avg@32 set ``actor_rollout_ref.rollout.val_kwargs.n=32`` rather than repeating rows.
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

NAME = "aime2024"
HF_ID = "HuggingFaceH4/aime_2024"
HF_SPLIT = "train"


def convert(ds, template: PromptTemplate = ESPO_TEMPLATE):
    """RL rows of AIME 2024."""
    return benchmark_dataset(
        ds, data_source=NAME, template=template, problem_key="problem", answer_key="answer", extra_keys=("id",)
    )


def _prepare(args: argparse.Namespace) -> dict:
    return {"test": convert(load_hf(HF_ID, split=HF_SPLIT, revision=args.revision), get_template(args.template))}


SPEC = DatasetSpec(
    name=NAME,
    hf_id=HF_ID,
    splits=("test",),
    default_template=ESPO_TEMPLATE.name,
    prepare=_prepare,
    summary="AIME 2024 evaluation set.",
)

if __name__ == "__main__":
    run_cli(SPEC)
