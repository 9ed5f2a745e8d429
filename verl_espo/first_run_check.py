"""Sanity checks of a short first run, read from its metrics log: does the setup train at all?

A pure function of veRL's file-logger records (``metrics-*.jsonl``), so a GPU run, the CPU toy run and a
recorded log are checked the same way. Each check prints its figure against its bound:

* ``steps``: at least ``min_steps`` training steps were logged;
* ``reward rises``: the mean ``critic/score/mean`` of the last ``window`` steps exceeds that of the first
  ``window`` steps by more than ``min_reward_rise``;
* ``entropy finite`` / ``entropy not collapsed``: every ``actor/entropy`` is finite, and the last window's mean is at
  least ``min_entropy_ratio`` times the first window's;
* ``clip fraction`` / ``dual-clip fraction``: every step's ``actor/pg_clipfrac`` is at most ``max_clipfrac`` and
  ``actor/pg_clipfrac_lower`` at most ``max_clipfrac_lower``;
* ``rollout vs actor``: every step's ``training/rollout_probs_diff_mean`` (mean ``|p_rollout - p_actor|`` over the
  response tokens, veRL's debug metric) is at most ``max_probs_diff``: the rollout engine samples from the
  weights the actor trains;
* ``grad norm``: every ``actor/grad_norm`` is finite and > 0.

The bounds are this project's choice, stated in :data:`PROFILES`: ``gpu`` for the one-GPU ladder recipe run for
10-20 steps (``python -m verl_espo.recipes run ladder/qwen2.5_0.5b_instruct_gsm8k --first-run-check``), ``toy`` for
the bundled CPU default. ``python -m verl_espo.first_run_check RUN_DIR [--profile gpu|toy]`` checks a log.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["Bounds", "Check", "PROFILES", "check_steps", "read_steps", "format_checks", "main"]

REWARD, ENTROPY = "critic/score/mean", "actor/entropy"
CLIPFRAC, CLIPFRAC_LOWER = "actor/pg_clipfrac", "actor/pg_clipfrac_lower"
PROBS_DIFF, GRAD_NORM = "training/rollout_probs_diff_mean", "actor/grad_norm"
#: A logged step is a training step when it carries veRL's step timing.
STEP_KEY = "timing_s/step"


@dataclass(frozen=True)
class Bounds:
    """The thresholds of :func:`check_steps` (see the module docstring for what each bounds)."""

    min_steps: int = 10
    window: int = 5
    min_reward_rise: float = 0.0
    min_entropy_ratio: float = 0.25
    max_clipfrac: float = 0.2
    max_clipfrac_lower: float = 0.05
    max_probs_diff: float = 0.05

    def __post_init__(self) -> None:
        for key in ("min_steps", "window"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"first-run bound {key} must be an integer >= 1, got {value!r}")
        if self.min_steps < 2 * self.window:
            raise ValueError(f"first-run bound min_steps ({self.min_steps}) must be >= 2 x window ({self.window})")
        for key in ("min_entropy_ratio", "max_clipfrac", "max_clipfrac_lower", "max_probs_diff"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"first-run bound {key} must be in [0, 1], got {value!r}")
        if not math.isfinite(self.min_reward_rise):
            raise ValueError(f"first-run bound min_reward_rise must be finite, got {self.min_reward_rise!r}")


#: ``gpu``: the ladder's rung 1 (Qwen2.5-0.5B-Instruct on GSM8K, GRPO, lr 1e-6, vLLM rollout in bf16) for 10-20
#: steps: the reward's 5-step mean must rise at all, entropy keep a quarter of its start, PPO clip 0.2 clip at most
#: a fifth of the tokens, and vLLM's probabilities stay within 0.05 of the actor's on average. ``toy``: the bundled
#: CPU default (40 steps of the README's main job, lr 1e-3, both sides fp32): a 0.2 reward rise (as
#: ``tests/test_e2e_learning.py`` asks), entropy keeping a tenth of its start (a learned answer is nearly
#: deterministic: 40-step runs end at a fifth to a half), ESPO's small adaptive clip ranges clipping up to half the
#: tokens, and the ``hf`` rollout's probabilities equal to the actor's to 1e-4.
PROFILES: dict[str, Bounds] = {
    "gpu": Bounds(),
    "toy": Bounds(min_reward_rise=0.2, min_entropy_ratio=0.1, max_clipfrac=0.5, max_probs_diff=1e-4),
}


@dataclass(frozen=True)
class Check:
    """One check: its name, the figure measured, the bound it is held to (as text) and whether it passed."""

    name: str
    value: Optional[float]
    bound: str
    ok: bool
    detail: str = ""


def _series(steps: Sequence[dict[str, Any]], key: str) -> Optional[list[float]]:
    values = [s.get(key) for s in steps]
    if any(v is None for v in values):
        return None
    return [float(v) for v in values]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _missing(name: str, key: str, bound: str) -> Check:
    return Check(name, None, bound, False, f"`{key}` missing from some training steps")


def check_steps(steps: Sequence[dict[str, Any]], bounds: Bounds) -> list[Check]:
    """The checks of the module docstring on the logged steps (``{"step": n, metric: value, ...}``, as
    :func:`read_steps` returns them); validation-only steps are skipped."""
    train = [s for s in steps if STEP_KEY in s]
    n, w = len(train), bounds.window
    checks = [Check("steps", float(n), f">= {bounds.min_steps}", n >= bounds.min_steps)]
    if n < 2 * w:
        return checks  # too few steps for the windowed checks: the steps check has failed already

    bound = f"last {w} - first {w} steps > {bounds.min_reward_rise:g}"
    rewards = _series(train, REWARD)
    if rewards is None:
        checks.append(_missing("reward rises", REWARD, bound))
    else:
        rise = _mean(rewards[-w:]) - _mean(rewards[:w])
        detail = f"{_mean(rewards[:w]):.4g} -> {_mean(rewards[-w:]):.4g}"
        checks.append(Check("reward rises", rise, bound, math.isfinite(rise) and rise > bounds.min_reward_rise, detail))

    entropy = _series(train, ENTROPY)
    if entropy is None:
        checks.append(_missing("entropy finite", ENTROPY, "every step finite"))
    else:
        bad = [s["step"] for s, v in zip(train, entropy) if not math.isfinite(v)]
        checks.append(Check("entropy finite", float(len(bad)), "0 non-finite steps", not bad,
                            f"steps {bad}" if bad else ""))  # fmt: skip
        first, last = _mean(entropy[:w]), _mean(entropy[-w:])
        ratio = last / first if first > 0 else float("nan")
        bound = f"last {w} / first {w} steps >= {bounds.min_entropy_ratio:g}"
        ok = math.isfinite(ratio) and ratio >= bounds.min_entropy_ratio
        checks.append(Check("entropy not collapsed", ratio, bound, ok, f"{first:.4g} -> {last:.4g}"))

    for name, key, limit in (
        ("clip fraction", CLIPFRAC, bounds.max_clipfrac),
        ("dual-clip fraction", CLIPFRAC_LOWER, bounds.max_clipfrac_lower),
        ("rollout vs actor", PROBS_DIFF, bounds.max_probs_diff),
    ):
        bound = f"every step in [0, {limit:g}]"
        values = _series(train, key)
        if values is None:
            checks.append(_missing(name, key, bound))
            continue
        worst = max(values, key=lambda v: v if math.isfinite(v) else math.inf)
        ok = all(math.isfinite(v) and 0.0 <= v <= limit for v in values)
        checks.append(Check(name, worst, bound, ok, f"max over steps, `{key}`"))

    norms = _series(train, GRAD_NORM)
    if norms is None:
        checks.append(_missing("grad norm", GRAD_NORM, "finite and > 0"))
    else:
        bad = [s["step"] for s, v in zip(train, norms) if not (math.isfinite(v) and v > 0)]
        checks.append(Check("grad norm", float(len(bad)), "every step finite and > 0", not bad,
                            f"bad steps {bad}" if bad else f"{min(norms):.3g} .. {max(norms):.3g}"))  # fmt: skip
    return checks


def read_steps(path: str | Path) -> list[dict[str, Any]]:
    """The logged steps of a run directory (its ``metrics*.jsonl``, in name order) or of one ``.jsonl`` file."""
    from verl_espo.report.runs import read_file_logger
    from verl_espo.runner import merged_steps

    path = Path(path)
    files = sorted(path.glob("metrics*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no metrics*.jsonl in {path} (a run directory or a file-logger .jsonl)")
    records = [r for f in files for r in read_file_logger(f)[0]]
    return merged_steps(records)


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check: PASS/FAIL, name, figure, bound, detail; then the verdict."""
    lines = []
    for c in checks:
        value = "missing" if c.value is None else f"{c.value:.4g}"
        lines.append(f"{'PASS' if c.ok else 'FAIL'}  {c.name:<22} {value:>10}   bound: {c.bound}"
                     + (f"   ({c.detail})" if c.detail else ""))  # fmt: skip
    failed = [c.name for c in checks if not c.ok]
    lines.append("first-run check: " + ("all passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl_espo.first_run_check",
        description="Check a short first run's metrics log against sanity bounds (exit code 1 if any fails).",
    )
    parser.add_argument("run", help="run directory (metrics*.jsonl inside) or a file-logger .jsonl")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu", help="the bounds (default gpu)")
    for field in dataclasses.fields(Bounds):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None,
                            help=f"override the profile's {field.name}")  # fmt: skip
    args = parser.parse_args(argv)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Bounds) if getattr(args, f.name) is not None}
    bounds = dataclasses.replace(PROFILES[args.profile], **changes)
    checks = check_steps(read_steps(args.run), bounds)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
