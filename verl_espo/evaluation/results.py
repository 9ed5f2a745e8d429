"""From veRL's per-response validation dump to the evaluation's results: ``eval.json`` and ``eval.md``.

The dump (``trainer.validation_data_dir``) holds one JSON line per response with the keys the reward returned;
:mod:`verl_espo.evaluation.reward` adds the benchmark and row of each. A response is correct when its ``acc`` is
true (``score`` when the reward has no ``acc``). Per benchmark this module reports, with :mod:`verl_espo.evaluation.
metrics`:

* ``mean``: avg@n (the mean correctness of the n responses of a problem, averaged over problems; "accuracy" for n=1);
* ``pass@k`` for k = 1, 2, 4, ..., n (unbiased estimator, Chen et al. 2021, Eq. 1; pass@1 equals the mean);
* the standard error of each over problems (:func:`verl_espo.evaluation.metrics.standard_error`).

A response that veRL did not produce (a failed rollout session) counts as wrong, as veRL's own ``acc`` metric counts
it (``expected_acc_counts`` in ``process_validation_metrics``); their number is reported as ``missing_samples``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from verl_espo.evaluation.metrics import summarize
from verl_espo.evaluation.protocol import EvalSet, pass_at_k_values, protocol_label
from verl_espo.evaluation.reward import BENCHMARK_KEY, ROW_KEY

__all__ = [
    "BenchmarkSamples",
    "read_generations",
    "collect_samples",
    "benchmark_result",
    "eval_markdown",
    "results_frame",
    "write_results",
]


@dataclass(frozen=True)
class BenchmarkSamples:
    """Correctness of every response of one benchmark: one row per problem (in file order), n entries each."""

    name: str
    n: int
    correct: list[list[float]]
    missing_samples: int  # responses veRL did not produce, counted as wrong


def read_generations(dump_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of the JSON-lines files veRL's validation wrote to ``dump_dir`` (``<global_step>.jsonl``)."""
    files = sorted(Path(dump_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no validation dump (*.jsonl) in {dump_dir}: did veRL's validation run?")
    records = []
    for file in files:
        with open(file) as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def _correctness(record: Mapping[str, Any]) -> float:
    value = record.get("acc")
    if value is None:
        value = record.get("score")
    if value is None:
        raise ValueError(f"a dumped response has neither 'acc' nor 'score': keys {sorted(record)}")
    return float(value)


def collect_samples(
    records: Sequence[Mapping[str, Any]], benchmarks: Sequence[EvalSet], problems: Mapping[str, int]
) -> dict[str, BenchmarkSamples]:
    """Group dumped responses by benchmark and row; ``problems`` is the number of rows of each benchmark."""
    wanted = {b.name: b for b in benchmarks}
    scores: dict[str, dict[int, list[float]]] = {name: defaultdict(list) for name in wanted}
    for record in records:
        name, row = record.get(BENCHMARK_KEY), record.get(ROW_KEY)
        if name is None or row in (None, ""):
            raise ValueError(
                f"a dumped response lacks {BENCHMARK_KEY!r}/{ROW_KEY!r}: the run must use "
                "reward.custom_reward_function.path=pkg://verl_espo.evaluation.reward (eval_common.yaml)"
            )
        if name not in wanted:
            raise ValueError(f"the dump holds responses of {name!r}, which is not being evaluated")
        scores[name][int(row)].append(_correctness(record))
    out = {}
    for name, benchmark in wanted.items():
        rows, missing = [], 0
        for i in range(problems[name]):
            got = scores[name].get(i, [])
            if len(got) > benchmark.n:
                raise ValueError(f"{name} row {i}: {len(got)} responses in the dump, expected n={benchmark.n}")
            missing += benchmark.n - len(got)
            rows.append(got + [0.0] * (benchmark.n - len(got)))
        extra = set(scores[name]) - set(range(problems[name]))
        if extra:
            raise ValueError(f"{name}: the dump has rows {sorted(extra)} beyond its {problems[name]} problems")
        out[name] = BenchmarkSamples(name, benchmark.n, rows, missing)
    return out


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else x


def benchmark_result(samples: BenchmarkSamples) -> dict[str, Any]:
    """The JSON entry of one benchmark (fractions in [0, 1]; ``null`` standard errors for a single problem)."""
    binary = all(v in (0.0, 1.0) for row in samples.correct for v in row)
    ks = pass_at_k_values(samples.n) if binary else []
    avg, *passes = summarize(samples.correct, ks)
    return {
        "protocol": protocol_label(samples.n),
        "n": samples.n,
        "num_problems": len(samples.correct),
        "num_samples": len(samples.correct) * samples.n,
        "missing_samples": samples.missing_samples,
        "mean": avg.value,
        "stderr": _clean(avg.stderr),
        "pass_at_k": {str(k): {"value": r.value, "stderr": _clean(r.stderr)} for k, r in zip(ks, passes)},
    }


def _pct(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" + ("" if stderr is None else f" ± {100 * stderr:.1f}")


def results_frame(benchmarks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per benchmark as ``eval.md`` shows it: protocol, problems, mean and pass@k in %, ± the standard
    error; ``–`` where a benchmark has no pass@k of that k (n < k)."""
    ks = sorted({int(k) for b in benchmarks.values() for k in b["pass_at_k"]})
    rows = {
        name: {
            "protocol": b["protocol"],
            "problems": str(b["num_problems"]),
            "mean": _pct(b["mean"], b["stderr"]),
            **{f"pass@{k}": _pct(**b["pass_at_k"].get(str(k), {"value": None})) for k in ks},
        }
        for name, b in benchmarks.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("benchmark")


def eval_markdown(result: Mapping[str, Any]) -> str:
    """``eval.md``: the settings and one table row per benchmark (percentages, ± the standard error over problems)."""
    s = result["sampling"]
    table = results_frame(result["benchmarks"]).reset_index()
    colalign = ["left", "left"] + ["right"] * (table.shape[1] - 2)
    lines = [
        f"# Evaluation of `{result['name']}`",
        "",
        f"Model: `{result['model']}`  ",
        f"Sampling: temperature {s['temperature']}, top-p {s['top_p']}, top-k {s['top_k']}, "
        f"max response length {s['max_response_length']} tokens (prompt {s['max_prompt_length']}); "
        f"rollout `{result['rollout']}`, veRL {result['verl_version']}  ",
        "Scores in %, ± the standard error over problems; pass@k is the unbiased estimator (Chen et al. 2021), "
        "shown where n ≥ k.",
        "",
        table.to_markdown(index=False, tablefmt="pipe", colalign=colalign, disable_numparse=True),
    ]
    missing = {name: b["missing_samples"] for name, b in result["benchmarks"].items() if b["missing_samples"]}
    if missing:
        lines += [
            "",
            "Responses veRL did not produce (counted as wrong): "
            + ", ".join(f"{name} {m}" for name, m in missing.items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_results(result: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(eval_markdown(result))
    return json_path, md_path
