"""Build the toy model into a directory: ``python -m verl_espo.toy OUT``.

The bundled default model (head size 32: the ``hf`` rollout and vLLM's CPU attention both take it). The
directory is usable as ``actor_rollout_ref.model.path`` or ``python -m verl_espo.smoke ... --model-dir OUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from verl_espo.toy.assets import build_assets


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_espo.toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory to write the tokenizer and model to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_assets(args.out, seed=args.seed)
    print(json.dumps(json.loads((out / "toy_assets.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
