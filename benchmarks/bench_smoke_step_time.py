"""Per-step time of smoke runs of two (or more) algorithms, measured in the same invocation.

Runs ``python -m verl_espo.smoke <algo>`` for each of ``--algos`` in turn (``--rounds`` times each, same model,
data and settings; the order is reversed every other round, so machine noise and warm caches hit all alike)
and compares veRL's own step timings (``timing_s/step`` and the phases it is made of), skipping each run's
first step (warm-up). Ratios are the first algorithm over each of the others, of the means and of the
medians; the spread is each algorithm's standard deviation over its steps and the standard error of the ratio
of means (``ratio * sqrt(cv_a^2 / n_a + cv_b^2 / n_b)``). The token counts per step show whether the runs
are comparable (``perf/total_num_tokens``, mean response length and, for hybrid runs, the rollout and expert
tokens the loss saw); ``timing_per_token_ms/update_actor`` is the actor update per token.

    python benchmarks/bench_smoke_step_time.py --steps 8 --rounds 2              # ESPO vs GRPO (default)
    python benchmarks/bench_smoke_step_time.py --algos egspo chord --steps 6 --rounds 1 --json t.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

PHASES = (
    "timing_s/step",
    "timing_s/gen",
    "timing_s/old_log_prob",
    "timing_s/adv",
    "timing_s/update_actor",
    "timing_s/update_weights",
    "timing_per_token_ms/update_actor",
)
TOKENS = (
    "perf/total_num_tokens",
    "response_length/mean",
    "actor/hybrid/rollout_tokens",
    "actor/hybrid/expert_tokens",
)


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "median": statistics.median(values), "std": std, "min": min(values), "max": max(values)}


def ratio_of_means(a: list[float], b: list[float]) -> tuple[float, float]:
    """``mean(a) / mean(b)`` and its standard error from the two samples' coefficients of variation."""
    sa, sb = _stats(a), _stats(b)
    ratio = sa["mean"] / sb["mean"]
    se = ratio * math.sqrt((sa["std"] / sa["mean"]) ** 2 / len(a) + (sb["std"] / sb["mean"]) ** 2 / len(b))
    return ratio, se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["espo", "grpo"], help="first is compared to each other one")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if len(args.algos) < 2 or len(set(args.algos)) != len(args.algos):
        parser.error(f"--algos needs at least two different algorithms, got {args.algos}")
    if args.steps < 3:
        parser.error(f"--steps must be >= 3 (the first step is skipped and a spread needs two), got {args.steps}")

    from verl_espo.smoke import ALGOS, run_smoke

    unknown = [a for a in args.algos if a not in ALGOS]
    if unknown:
        parser.error(f"unknown algo(s) {unknown}; choose from {list(ALGOS)}")

    root = Path(args.out or tempfile.mkdtemp(prefix="smoke_step_time_"))
    keys = PHASES + TOKENS
    samples: dict[str, dict[str, list[float]]] = {algo: {k: [] for k in keys} for algo in args.algos}
    for round_ in range(args.rounds):
        for algo in args.algos if round_ % 2 == 0 else reversed(args.algos):
            out = root / f"{algo}_{round_}"
            result = run_smoke(
                algo, steps=args.steps, out_dir=out, overrides=args.overrides, model_dir=root / "model", echo=False
            )
            if not result.ok:
                raise SystemExit(f"{algo} smoke run failed; see {out / 'train.log'}")
            steps = [s for s in result.steps if "timing_s/step" in s][1:]  # skip the warm-up step
            for key in keys:
                samples[algo][key] += [s[key] for s in steps if key in s]
            step_times = [s["timing_s/step"] for s in steps]
            print(f"round {round_} {algo}: mean step {statistics.fmean(step_times):.3f} s over {len(step_times)} steps")

    first, others = args.algos[0], args.algos[1:]
    report: dict = {"algos": args.algos, "steps_per_run": args.steps, "rounds": args.rounds, "phases": {}, "tokens": {}}
    print(f"\nseconds per step over {args.rounds} run(s) x {args.steps - 1} steps each (first step skipped):")
    print("mean +- standard deviation over the steps; ratio of means +- its standard error (ratio of medians)")
    for key in PHASES:
        if any(not samples[a][key] for a in args.algos):
            continue
        entry = {a: _stats(samples[a][key]) for a in args.algos}
        cells = [f"{entry[a]['mean']:7.3f} +- {entry[a]['std']:6.3f}" for a in args.algos]
        for other in others:
            ratio, se = ratio_of_means(samples[first][key], samples[other][key])
            median_ratio = entry[first]["median"] / entry[other]["median"]
            entry[f"{first}/{other}"] = {"ratio_of_means": ratio, "stderr": se, "ratio_of_medians": median_ratio}
            cells.append(f"{first}/{other} {ratio:.3f} +- {se:.3f} ({median_ratio:.3f})")
        report["phases"][key] = entry
        print(f"  {key:34s} " + "  ".join(f"{a} {c}" for a, c in zip(args.algos, cells[: len(args.algos)])))
        print(f"  {'':34s} " + "  ".join(cells[len(args.algos) :]))
    print("tokens per step (mean over the steps):")
    for key in TOKENS:
        if any(not samples[a][key] for a in args.algos):
            continue
        report["tokens"][key] = {a: statistics.fmean(samples[a][key]) for a in args.algos}
        print(f"  {key:34s} " + "  ".join(f"{a} {report['tokens'][key][a]:10.2f}" for a in args.algos))
    report["samples"] = samples
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
