"""Train several algorithms on the bundled default and report them together: ``python -m verl_espo.compare``.

Each algorithm runs as its own smoke run (:func:`verl_espo.smoke.run_smoke`: veRL's real trainer on CPU, the
tiny local model, the toy arithmetic task), one after the other, all from the same initial weights (the model is
built once), the same data and data seed, and the same number of steps; then :mod:`verl_espo.report` turns the
runs into one report (the results table, the settings that differ, training time, the curves).

    python -m verl_espo.compare                                # ESPO, GSPO, GRPO, EGSPO, 30 steps each
    python -m verl_espo.compare --algos espo grpo --steps 10   # a shorter comparison
    python -m verl_espo.compare --report-only --out DIR        # redraw the report of runs already in DIR

Each algorithm keeps its own smoke settings (``pkg://verl_espo.config/<algo>_smoke``); ``report.md`` lists the
settings that differ. Extra arguments are Hydra overrides applied to every run. Output: ``OUT/runs/<algo>/``
(each run's log, metrics and summary), ``OUT/report/`` (``report.md``, ``results.json``, PNGs), or the folder
given by ``--report-out``. The example report in ``docs/example_report/`` was made by this command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from verl_espo.smoke import ALGOS, SmokeResult, run_smoke

__all__ = ["DEFAULT_ALGOS", "label", "CompareResult", "compare", "main"]

#: The default comparison: ESPO against its two neighbours (token-level GRPO, sequence-level GSPO) and EGSPO.
DEFAULT_ALGOS: tuple[str, ...] = ("espo", "gspo", "grpo", "egspo")
#: The names of veRL's own losses in the report (the plugin's losses are named by their spec).
BASELINE_LABELS: dict[str, str] = {"gspo": "GSPO", "grpo": "GRPO"}


def label(algo: str) -> str:
    """The name of ``algo`` in the report's table and legends: its loss spec's label, else the baseline's."""
    from verl_espo.loss_inputs import loss_spec

    spec = loss_spec(algo)
    return spec.label if spec is not None else BASELINE_LABELS.get(algo, algo)


#: Config keys left out of the report's "settings that differ": each run's own copy of the same generated data
#: and its experiment name, which say nothing about the algorithm.
IGNORED_SETTINGS: tuple[str, ...] = (
    "data.train_files",
    "data.val_files",
    "data.expert.files",
    "trainer.experiment_name",
    "*.trace.experiment_name",
)

Runner = Callable[..., SmokeResult]


@dataclass
class CompareResult:
    """The runs (in order) and where the report went."""

    runs: list[SmokeResult]
    report_dir: Path
    report_returncode: int

    @property
    def ok(self) -> bool:
        return self.report_returncode == 0 and all(r.ok for r in self.runs)


def run_dir(out: Path, algo: str) -> Path:
    return out / "runs" / algo


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (the report lists its sources)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _steps_completed(path: Path) -> int:
    try:
        return int(json.loads((path / "summary.json").read_text())["steps_completed"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def compare(
    algos: tuple[str, ...] = DEFAULT_ALGOS,
    steps: int = 30,
    out_dir: str | Path | None = None,
    overrides: Optional[list[str]] = None,
    *,
    model_dir: str | Path | None = None,
    report_out: str | Path | None = None,
    report_args: Optional[list[str]] = None,
    report_only: bool = False,
    runner: Runner = run_smoke,
    echo: bool = True,
) -> CompareResult:
    """Run each of ``algos`` for ``steps`` steps into ``out_dir/runs/<algo>``, then write the report.

    The model is built once (``model_dir``, default ``out_dir/model``) and every run starts from it. A run that
    fails does not stop the others; the report covers whatever each run logged. ``report_only`` skips training
    and reports the runs already in ``out_dir``.
    """
    unknown = [a for a in algos if a not in ALGOS]
    if unknown or not algos:
        raise ValueError(f"--algos must name one or more of {ALGOS}, got {list(algos)}")
    if len(set(algos)) != len(algos):
        raise ValueError(f"--algos names an algorithm twice: {list(algos)}")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    say = print if echo else (lambda *a, **k: None)
    out = Path(out_dir or f"outputs/compare/{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    model = Path(model_dir).resolve() if model_dir is not None else out / "model"
    results: list[SmokeResult] = []
    if not report_only:
        for i, algo in enumerate(algos):
            say(f"[compare] run {i + 1}/{len(algos)}: {label(algo)}, {steps} steps")
            results.append(runner(algo, steps, run_dir(out, algo), list(overrides or []), model_dir=model, echo=echo))
    missing = [a for a in algos if not (run_dir(out, a) / "metrics.jsonl").exists()]
    if missing:
        say(f"[compare] no metrics for {missing} in {out / 'runs'}; they are left out of the report")
    reported = [a for a in algos if a not in missing]
    report = Path(report_out).resolve() if report_out is not None else out / "report"
    if not reported:
        return CompareResult(results, report, 2)
    from verl_espo.report.__main__ import main as report_main

    done = [_steps_completed(run_dir(out, a)) for a in reported]
    length = f"{max(done)} steps" if done and min(done) == max(done) else "steps: " + ", ".join(map(str, done))
    args = [_shown(run_dir(out, a)) for a in reported] + ["--out", str(report)]
    args += [x for a in reported for x in ("--label", label(a))]
    args += ["--title", f"{', '.join(label(a) for a in reported)} on the bundled default ({length})"]
    args += [x for pattern in IGNORED_SETTINGS for x in ("--ignore-setting", pattern)]
    args += list(report_args or [])
    code = report_main(args)
    say(f"[compare] report: {report / 'report.md'}")
    return CompareResult(results, report, code)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_espo.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=ALGOS,
                        help=f"algorithms, in order (default: {' '.join(DEFAULT_ALGOS)})")  # fmt: skip
    parser.add_argument("--steps", type=int, default=30, help="training steps of each run (default 30)")
    parser.add_argument("--out", default=None, help="work folder (default outputs/compare/<time>)")
    parser.add_argument("--model-dir", default=None, help="model every run starts from (default: built in OUT)")
    parser.add_argument("--report-out", default=None, help="report folder (default OUT/report)")
    parser.add_argument("--report-only", action="store_true", help="report the runs already in OUT; train nothing")
    parser.add_argument("--smoothing", type=float, default=None, help="passed to the report (EMA weight)")
    args, overrides = parser.parse_known_args(argv)  # everything else: Hydra overrides for every run
    if args.report_only and args.out is None:
        parser.error("--report-only needs --out (the folder of an earlier comparison)")
    report_args = ["--smoothing", str(args.smoothing)] if args.smoothing is not None else []
    try:
        result = compare(
            tuple(args.algos),
            args.steps,
            args.out,
            overrides,
            model_dir=args.model_dir,
            report_out=args.report_out,
            report_args=report_args,
            report_only=args.report_only,
        )
    except ValueError as exc:
        parser.error(str(exc))
    failed = [r.algo for r in result.runs if not r.ok or r.summary.get("steps_completed", 0) < args.steps]
    if failed:
        print(f"[compare] runs that failed or stopped early: {failed}")
    return 0 if result.ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
