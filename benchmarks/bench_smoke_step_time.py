"""Per-step time of the ESPO smoke run divided by GRPO's, measured in the same invocation.

Runs ``python -m verl_espo.smoke grpo`` and ``... espo`` alternately (``--rounds`` times each, same model,
data and settings, so machine noise hits both alike) and compares the medians of veRL's own step timings
(``timing_s/step``, and the phases it is made of), skipping each run's first step (warm-up). The ESPO loss
adds no vocabulary-sized pass, so the difference should be within noise.

    python benchmarks/bench_smoke_step_time.py --steps 8 --rounds 2 --json step_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

PHASES = ("timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/update_actor", "timing_s/update_weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()

    from verl_espo.smoke import run_smoke

    root = Path(args.out or tempfile.mkdtemp(prefix="espo_step_time_"))
    samples: dict[str, dict[str, list[float]]] = {algo: {p: [] for p in PHASES} for algo in ("grpo", "espo")}
    for round_ in range(args.rounds):
        for algo in ("grpo", "espo"):
            out = root / f"{algo}_{round_}"
            result = run_smoke(
                algo, steps=args.steps, out_dir=out, overrides=args.overrides, model_dir=root / "model", echo=False
            )
            if not result.ok:
                raise SystemExit(f"{algo} smoke run failed; see {out / 'train.log'}")
            steps = [s for s in result.steps if "timing_s/step" in s][1:]  # skip the warm-up step
            for phase in PHASES:
                samples[algo][phase] += [s[phase] for s in steps if phase in s]
            print(f"round {round_} {algo}: median step {statistics.median(samples[algo]['timing_s/step']):.3f} s")

    report = {"steps_per_run": args.steps, "rounds": args.rounds, "phases": {}}
    print(f"\nmedian seconds per step over {args.rounds} runs x {args.steps - 1} steps each (first step skipped)")
    print(f"{'phase':28s} {'grpo':>8s} {'espo':>8s} {'espo/grpo':>10s}")
    for phase in PHASES:
        g, e = samples["grpo"][phase], samples["espo"][phase]
        if not g or not e:
            continue
        mg, me = statistics.median(g), statistics.median(e)
        report["phases"][phase] = {"grpo_s": mg, "espo_s": me, "ratio": me / mg}
        print(f"{phase:28s} {mg:8.3f} {me:8.3f} {me / mg:10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
