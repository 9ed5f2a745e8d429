"""The bundled synthetic task: one-digit addition with a ``\\boxed{}`` answer, generated on the fly.

A problem is ``a+b`` over digits with a one-digit sum (55 problems; ``a-b`` is available through
``ops``). The prompt is just the expression, e.g. ``"3+4="``; a correct response is ``\\boxed{7}``.
Problems are sampled *answer-first*: the answer is uniform over 0-9, then the operands are uniform
among the pairs that give it. Every answer is then equally likely, so no constant guess scores above
10% (with problems drawn uniformly, always answering 9 would score 18%, and RL finds that shortcut
and stops exploring); the only way up is to read the operands. Small sums, having fewer
decompositions, come up more often, which gives RL an easy start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATA_SOURCE",
    "OPS",
    "Problem",
    "all_problems",
    "sample_problem",
    "sample_problems",
    "make_row",
    "make_rows",
    "write_dataset",
    "expert_response",
    "write_expert_dataset",
]

#: ``data_source`` of every row. :func:`verl_espo.rewards.math.compute_score` scores it strictly: the response
#: must be ``\\boxed{answer}`` alone.
DATA_SOURCE = "toy_arithmetic"
OPS = ("+",)


@dataclass(frozen=True)
class Problem:
    """``a op b`` with its single-digit answer."""

    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def prompt(self) -> str:
        return f"{self.a}{self.op}{self.b}="

    @property
    def ground_truth(self) -> str:
        return str(self.answer)


def all_problems(ops: tuple[str, ...] = OPS) -> list[Problem]:
    """Every problem of the task, in a fixed order (all answers are digits 0-9)."""
    problems = [Problem(a, op, b) for op in ops for a in range(10) for b in range(10)]
    return [p for p in problems if 0 <= p.answer <= 9]


def sample_problem(rng: random.Random, ops: tuple[str, ...] = OPS) -> Problem:
    """A uniform answer and operation, then uniform operands among those giving that answer."""
    answer, op = rng.randrange(10), rng.choice(ops)
    if op == "+":
        a = rng.randrange(answer + 1)
        return Problem(a, op, answer - a)
    b = rng.randrange(10 - answer)
    return Problem(answer + b, op, b)


def sample_problems(n: int, seed: int, ops: tuple[str, ...] = OPS) -> list[Problem]:
    """``n`` problems from :func:`sample_problem`, deterministic in ``seed``."""
    rng = random.Random(seed)
    return [sample_problem(rng, ops) for _ in range(n)]


def make_row(problem: Problem, split: str, index: int) -> dict:
    """One row in veRL's RL dataset format."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": problem.prompt}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": problem.ground_truth},
        "extra_info": {"split": split, "index": index},
    }


def make_rows(problems: list[Problem], split: str) -> list[dict]:
    return [make_row(p, split, i) for i, p in enumerate(problems)]


def write_dataset(
    out_dir: str | Path, n_train: int = 2560, n_val: int = 128, seed: int = 0, ops: tuple[str, ...] = OPS
) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``val.parquet`` to ``out_dir`` and return their paths.

    Both splits are drawn from the same distribution (55 problems for ``+``) with different seeds, so
    validation measures how much of the table the policy has learned, not generalisation to unseen problems.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        path = out / f"{split}.parquet"
        pd.DataFrame(make_rows(sample_problems(n, split_seed, ops), split)).to_parquet(path, index=False)
        paths.append(path)
    return paths[0], paths[1]


def expert_response(problem: Problem) -> str:
    """The demonstration an expert gives: the correct boxed answer, which the strict toy reward accepts."""
    return f"\\boxed{{{problem.answer}}}"


def write_expert_dataset(
    out_dir: str | Path, n: int = 512, seed: int = 100, ops: tuple[str, ...] = OPS
) -> tuple[Path, Path]:
    """Expert demonstrations for EGSPO / CHORD on the toy task; returns ``(expert.parquet, sft.parquet)``.

    ``expert.parquet`` holds veRL RL rows plus ``extra_info["expert_response"]`` (what ``data.expert.files``
    reads during hybrid RL); ``sft.parquet`` holds the same demonstrations as ``messages`` for veRL's SFT
    trainer (EGSPO stage 1). Drawn like :func:`write_dataset`, with their own seed.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = sample_problems(n, seed, ops)
    rows = make_rows(problems, "expert")
    for row, problem in zip(rows, problems):
        row["extra_info"]["expert_response"] = expert_response(problem)
    messages = [
        {"messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": expert_response(p)}]}
        for p in problems
    ]
    expert_path, sft_path = out / "expert.parquet", out / "sft.parquet"
    pd.DataFrame(rows).to_parquet(expert_path, index=False)
    pd.DataFrame(messages).to_parquet(sft_path, index=False)
    return expert_path, sft_path
