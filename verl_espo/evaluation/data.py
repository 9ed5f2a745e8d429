"""The validation file of one evaluation: every benchmark's rows in one parquet, each with its own samples per problem.

One veRL validation run takes one ``actor_rollout_ref.rollout.val_kwargs.n``, but veRL 0.9.1's V1 trainer also reads
a per-row ``__rollout_n__`` (``AgentLoopWorkerTQ._run_prompt`` in ``verl/trainer/ppo/v1/agent_loop_tq.py``: "user can
dynamically adjust n for each sample here"; ``_validate`` in ``trainer_base.py`` counts the expected responses per
prompt from it). ``RLHFDataset`` passes every parquet column through to the batch, so a column ``__rollout_n__``
gives AIME 32 responses and MATH-500 one in the same run: one model load and one inference-engine start for all
benchmarks.

Rows keep veRL's RL columns (``data_source``, ``prompt``, ``ability``, ``reward_model``); ``extra_info`` is rebuilt
as ``{index, eval_benchmark, eval_row}`` (what :mod:`verl_espo.evaluation.reward` reads), since benchmarks' own
``extra_info`` fields differ and parquet needs one schema for the combined file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_espo.evaluation.protocol import EvalSet
from verl_espo.evaluation.reward import BENCHMARK_KEY, ROW_KEY

__all__ = ["ROLLOUT_N_KEY", "RL_COLUMNS", "EvalData", "benchmark_rows", "write_eval_data"]

#: veRL V1's per-row number of responses (``agent_loop_tq.py``, ``trainer_base.py``).
ROLLOUT_N_KEY = "__rollout_n__"
RL_COLUMNS = ("data_source", "prompt", "ability", "reward_model")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def benchmark_rows(benchmark: EvalSet) -> list[dict[str, Any]]:
    """The rows of ``benchmark`` as they go into the evaluation file (see the module doc)."""
    if benchmark.path is None:  # the bundled toy benchmark: every problem of the toy task
        from verl_espo.toy.task import all_problems, make_rows

        source = make_rows(all_problems(), "test")
    else:
        source = _read_rows(benchmark.path)
    if not source:
        raise ValueError(f"--benchmarks: {benchmark.name} ({benchmark.path}) has no rows")
    rows = []
    for i, row in enumerate(source):
        missing = [c for c in ("data_source", "prompt", "reward_model") if row.get(c) is None]
        if missing:
            raise ValueError(
                f"--benchmarks: row {i} of {benchmark.name} ({benchmark.path}) lacks {missing}; benchmarks must be "
                "veRL RL parquet files (data_source, prompt, reward_model.ground_truth), as verl_espo.data writes"
            )
        info = row.get("extra_info") or {}
        out = {c: row.get(c) for c in RL_COLUMNS}
        out["ability"] = out["ability"] or "math"
        out["extra_info"] = {"index": int(info.get("index", i)), BENCHMARK_KEY: benchmark.name, ROW_KEY: i}
        out[ROLLOUT_N_KEY] = benchmark.n
        rows.append(out)
    return rows


@dataclass(frozen=True)
class EvalData:
    """What :func:`write_eval_data` wrote for one benchmark."""

    num_problems: int
    data_sources: tuple[str, ...]  # the rows' data_source values: veRL names its metrics after them


def write_eval_data(benchmarks: Sequence[EvalSet], path: str | Path) -> dict[str, EvalData]:
    """Write the rows of all ``benchmarks`` to one parquet file; returns what each benchmark holds."""
    import pandas as pd

    rows, written = [], {}
    for benchmark in benchmarks:
        bench_rows = benchmark_rows(benchmark)
        sources = tuple(sorted({str(r["data_source"]) for r in bench_rows}))
        written[benchmark.name] = EvalData(len(bench_rows), sources)
        rows.extend(bench_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)  # pyarrow infers each column's type over all rows
    return written
