"""Build the toy model into a directory: ``python -m verl_espo.toy OUT [--vllm-cpu]``.

``--vllm-cpu`` builds :data:`verl_espo.toy.assets.VLLM_CPU_MODEL` (head size 32, which vLLM's CPU attention
accepts); without it, the bundled default of the ``hf`` rollout runs. The directory is usable as
``actor_rollout_ref.model.path`` or ``python -m verl_espo.smoke ... --model-dir OUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from verl_espo.toy.assets import build_assets, build_vllm_cpu_assets


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_espo.toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory to write the tokenizer and model to")
    parser.add_argument("--vllm-cpu", action="store_true", help="head size 32, for veRL's vLLM rollout on CPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build = build_vllm_cpu_assets if args.vllm_cpu else build_assets
    out = build(args.out, seed=args.seed)
    print(json.dumps(json.loads((out / "toy_assets.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
