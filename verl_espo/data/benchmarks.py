"""The evaluation sets, one row of :data:`BENCHMARKS` each: a problem column and a final-answer column of one split.

Each row is written as RL rows (veRL's schema, :mod:`verl_espo.data.common`) to ``DIR/<name>/test.parquet``: the
problem (stripped) goes into the prompt template (ESPO's by default; ``--template chord`` for EGSPO/CHORD), the
answer through :func:`~verl_espo.data.common.normalize_ground_truth` becomes the ground truth, and the row's
``extra_keys`` columns go to ``extra_info``. Rows are not repeated on disk: for avg@N set
``actor_rollout_ref.rollout.val_kwargs.n=N``.

``verl_espo/data/<name>.py`` is each row's command, ``python -m verl_espo.data.<name> --out DIR`` (also
``python -m verl_espo.data <name> --out DIR``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verl_espo.data.common import (
    ESPO_TEMPLATE,
    DatasetSpec,
    PromptTemplate,
    get_template,
    normalize_ground_truth,
    rl_dataset,
)

__all__ = ["BenchmarkSource", "BENCHMARKS"]


@dataclass(frozen=True)
class BenchmarkSource:
    """Where one evaluation set comes from on the Hugging Face Hub and how its rows are read.

    Args:
        name: data set name: ``data_source`` of its rows, its module and its output folder.
        hf_id: the Hugging Face data set it is read from.
        hf_split: the source split read (the output split is always ``test``).
        problem_key: source column of the problem.
        summary: one line for ``--help``.
        notes: the facts behind the choice: what the copy holds, its columns, who evaluates on it.
        answer_key: source column of the final answer, the ground truth.
        extra_keys: source columns copied to ``extra_info``.
    """

    name: str
    hf_id: str
    hf_split: str
    problem_key: str
    summary: str
    notes: str
    answer_key: str = "answer"
    extra_keys: tuple[str, ...] = ()

    def convert(self, ds, template: PromptTemplate = ESPO_TEMPLATE):
        """RL rows of this benchmark from its source table ``ds``; a KeyError names any missing column."""
        missing = [k for k in (self.problem_key, self.answer_key, *self.extra_keys) if k not in ds.column_names]
        if missing:
            raise KeyError(f"{self.name}: columns {missing} not in the source's columns {ds.column_names}")
        records = (
            (
                str(row[self.problem_key]).strip(),
                normalize_ground_truth(row[self.answer_key]),
                {k: row[k] for k in self.extra_keys},
            )
            for row in ds
        )
        return rl_dataset(records, data_source=self.name, split="test", template=template)

    def spec(self, load: Callable[..., Any]) -> DatasetSpec:
        """Its :class:`DatasetSpec`; ``load(hf_id, split=..., revision=...)`` downloads the source table.

        Each entry module passes a call of its own ``load_hf`` (:func:`verl_espo.data.common.load_hf`) looked up when
        it runs, so replacing that module's ``load_hf`` (the offline tests do) replaces the download.
        """

        def prepare(args: argparse.Namespace) -> dict[str, Any]:
            ds = load(self.hf_id, split=self.hf_split, revision=args.revision)
            return {"test": self.convert(ds, get_template(args.template))}

        return DatasetSpec(name=self.name, hf_id=self.hf_id, splits=("test",), prepare=prepare, summary=self.summary)


#: Every evaluation set, by name. Why these copies: they are the ones the papers name or peers' evaluation code loads.
BENCHMARKS: dict[str, BenchmarkSource] = {
    b.name: b
    for b in (
        BenchmarkSource(
            name="math500",
            hf_id="HuggingFaceH4/MATH-500",
            hf_split="test",
            problem_key="problem",
            extra_keys=("subject", "level", "unique_id"),
            summary="MATH-500 evaluation set.",
            notes=(
                "The 500-problem MATH test subset of 'Let's Verify Step by Step' (arXiv 2305.20050), ESPO's and "
                "EGSPO's MATH benchmark. Source columns: problem, solution, answer (the final answer in LaTeX), "
                "subject, level, unique_id."
            ),
        ),
        BenchmarkSource(
            name="aime2024",
            hf_id="HuggingFaceH4/aime_2024",
            hf_split="train",
            problem_key="problem",
            extra_keys=("id",),
            summary="AIME 2024 evaluation set.",
            notes=(
                "The 30 problems of AIME 2024 I and II. Source columns: id, problem, solution, answer (an integer "
                "0-999), url, year. Peers' evaluation code loads this copy "
                "(load_dataset('HuggingFaceH4/aime_2024', split='train'))."
            ),
        ),
        BenchmarkSource(
            name="aime2025",
            hf_id="yentinglin/aime_2025",
            hf_split="train",
            problem_key="problem",
            summary="AIME 2025 evaluation set.",
            notes=(
                "The 30 problems of AIME 2025 I and II. Source columns used: problem, answer (an integer 0-999); "
                "the most common AIME 2025 copy in peers' evaluation code "
                "(load_dataset('yentinglin/aime_2025', split='train')). opencompass/AIME2025 (configs "
                "AIME2025-I/-II, columns question/answer) holds the same problems."
            ),
        ),
        BenchmarkSource(
            name="hmmt_feb2025",
            hf_id="MathArena/hmmt_feb_2025",
            hf_split="train",
            problem_key="problem",
            extra_keys=("problem_idx",),
            summary="HMMT February 2025 evaluation set.",
            notes=(
                "30 problems, ESPO's 'HMMT': ESPO cites MathArena for HMMT, and MathArena publishes the competition "
                "as this data set. Source columns: problem_idx, problem, answer (LaTeX, not always an integer), "
                "problem_type."
            ),
        ),
        BenchmarkSource(
            name="amc2023",
            hf_id="math-ai/amc23",
            hf_split="test",
            problem_key="question",
            summary="AMC 2023 evaluation set.",
            notes=(
                "The 40 AMC 12 2023 problems used as 'AMC23', the copy peers' evaluation code loads "
                "(load_dataset('math-ai/amc23', split='test')). Source columns used: question, answer (a number, "
                "stored as a float in some copies: 27.0 is written 27). AI-MO/aimo-validation-amc filtered on url "
                "containing 2023 holds the same problems. EGSPO/CHORD evaluate AMC avg@8: use --template chord."
            ),
        ),
    )
}
