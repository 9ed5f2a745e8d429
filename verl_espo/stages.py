"""EGSPO's stages chained: the SFT warm-up (stage 1), then RL from its weights (stages 2 and 3).

EGSPO (arXiv 2602.03309) trains in three stages: (1) SFT on expert demonstrations, a warm-up policy; (2) rollouts
from the current policy with per-token entropy; (3) the entropy-gated update. Stages 2 and 3 are one veRL PPO run
(``egspo_trainer``), so the chain is two commands:

1. ``torchrun -m verl.trainer.sft_trainer --config-name=egspo_sft``: veRL's own SFT trainer on a ``messages``
   parquet, saving Hugging Face weights (with the tokenizer) in ``<out>/sft/global_step_N/huggingface``;
2. ``python -m verl.trainer.main_ppo --config-name=egspo_trainer actor_rollout_ref.model.path=<those weights>``.

Usage::

    # the bundled default on CPU: toy expert data, stage 1 on the tiny model, then the EGSPO smoke run from it
    python -m verl_espo.stages --cpu-smoke [--out DIR] [--rl-steps 10]

    # a GPU node: prints each command, then runs it (--dry-run: only print)
    python -m verl_espo.stages --model Qwen/Qwen2.5-7B-Instruct --gpus 8 --out outputs/egspo \\
        --sft-files $DATA/openr1_math/sft.parquet --train-files $DATA/openr1_math/train.parquet \\
        --val-files $DATA/math500/test.parquet --expert-files $DATA/openr1_math/train.parquet \\
        [--sft-override optim.lr=5e-6 ...] [--rl-override trainer.total_training_steps=500 ...]

``--skip-sft`` starts from the checkpoints already in ``<out>/sft`` and ``--sft-step N`` picks one of them (CHORD
starts RL from the best SFT checkpoint); otherwise the RL stage starts from the latest one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from verl_espo import runner

__all__ = [
    "SFT_CONFIG",
    "SFT_SMOKE_CONFIG",
    "RL_CONFIG",
    "SFTResult",
    "torchrun_prefix",
    "sft_command",
    "rl_command",
    "find_hf_weights",
    "ensure_tokenizer",
    "read_sft_losses",
    "run_cpu_sft",
    "run_cpu_smoke",
    "run_chain",
    "main",
]

#: Stage 1 on a GPU node, stage 1 on CPU with the tiny model, and the RL stage (all in ``pkg://verl_espo.config``).
SFT_CONFIG = "egspo_sft"
SFT_SMOKE_CONFIG = "egspo_sft_smoke"
RL_CONFIG = "egspo_trainer"

#: What veRL's SFT checkpoint handler writes next to the ``global_step_N`` directories.
LATEST_FILE = "latest_checkpointed_iteration.txt"
#: The files of ``save_pretrained`` that mean "a tokenizer is here".
_TOKENIZER_FILE = "tokenizer_config.json"


def _files_value(files: Sequence[str | Path]) -> str:
    """A Hydra override value for veRL's ``*_files`` keys: one path, or a list of paths."""
    paths = [str(f) for f in files]
    if not paths:
        raise ValueError("at least one data file is needed")
    return paths[0] if len(paths) == 1 else "[" + ",".join(paths) + "]"


def torchrun_prefix() -> list[str]:
    """``torchrun`` of this interpreter's environment (its console script, else ``python -m torch.distributed.run``)."""
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def sft_command(
    model: str | Path,
    sft_files: Sequence[str | Path],
    out_dir: str | Path,
    *,
    nproc: int = 1,
    config_name: str = SFT_CONFIG,
    val_files: Optional[Sequence[str | Path]] = None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Stage 1: veRL's SFT trainer (one node, ``nproc`` processes) on ``sft_files``, checkpoints in ``out_dir``."""
    if nproc < 1:
        raise ValueError(f"the number of processes (--gpus) must be >= 1, got {nproc}")
    cmd = [
        *torchrun_prefix(), "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
        "-m", "verl.trainer.sft_trainer",
        "--config-path=pkg://verl_espo.config", f"--config-name={config_name}",
        f"model.path={model}",
        f"data.train_files={_files_value(sft_files)}",
    ]  # fmt: skip
    if val_files:
        cmd.append(f"data.val_files={_files_value(val_files)}")
    cmd.append(f"trainer.default_local_dir={out_dir}")
    return cmd + list(overrides)


def rl_command(
    model: str | Path,
    train_files: Sequence[str | Path],
    val_files: Sequence[str | Path],
    out_dir: str | Path,
    *,
    gpus: int,
    nnodes: int = 1,
    expert_files: Optional[Sequence[str | Path]] = None,
    rollout: str = "vllm",
    overrides: Sequence[str] = (),
) -> list[str]:
    """Stages 2-3: veRL's PPO trainer with ``egspo_trainer``, starting from ``model`` (the SFT weights)."""
    if gpus < 1 or nnodes < 1:
        raise ValueError(f"--gpus and --nnodes must be >= 1, got {gpus} and {nnodes}")
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "--config-path=pkg://verl_espo.config", f"--config-name={RL_CONFIG}",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={_files_value(train_files)}",
        f"data.val_files={_files_value(val_files)}",
    ]  # fmt: skip
    if expert_files:  # CHORD-style mixing of demonstrations into every step; without it: pure RL after the warm-up
        cmd.append("data.expert.files=[" + ",".join(str(f) for f in expert_files) + "]")
    cmd += [
        f"actor_rollout_ref.rollout.name={rollout}",
        f"trainer.n_gpus_per_node={gpus}",
        f"trainer.nnodes={nnodes}",
        f"trainer.default_local_dir={out_dir}",
    ]
    return cmd + list(overrides)


def find_hf_weights(sft_dir: str | Path, step: Optional[int] = None) -> Path:
    """``<sft_dir>/global_step_N/huggingface`` for ``step`` (default: veRL's latest checkpoint) if it holds weights."""
    sft_dir = Path(sft_dir)
    if step is None:
        from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

        latest = find_latest_ckpt_path(str(sft_dir)) if (sft_dir / LATEST_FILE).exists() else None
        steps = sorted(int(p.name.removeprefix("global_step_")) for p in sft_dir.glob("global_step_[0-9]*"))
        if latest is None and not steps:
            raise FileNotFoundError(f"no SFT checkpoint (global_step_N) in {sft_dir}: run stage 1 first")
        # veRL's tracker file when it names a checkpoint that exists, else the highest global_step_N
        step_dir = Path(latest) if latest is not None else sft_dir / f"global_step_{steps[-1]}"
    else:
        step_dir = sft_dir / f"global_step_{step}"
    hf = step_dir / "huggingface"
    has_weights = any(hf.glob("*.safetensors")) or any(hf.glob("pytorch_model*.bin"))
    if not (hf / "config.json").exists() or not has_weights:
        raise FileNotFoundError(
            f"{hf} holds no Hugging Face weights: stage 1 must save them, "
            "checkpoint.save_contents=[model,optimizer,extra,hf_model] (the egspo_sft default)"
        )
    return hf


def ensure_tokenizer(hf_dir: str | Path, base_model: str | Path) -> bool:
    """Copy ``base_model``'s tokenizer into ``hf_dir`` if it has none; True if it did.

    veRL's FSDP checkpoint manager saves the tokenizer (and chat template) with the weights, so this is a safety
    net, e.g. for weights merged with ``python -m verl.model_merger``, which writes none.
    """
    hf_dir = Path(hf_dir)
    if (hf_dir / _TOKENIZER_FILE).exists():
        return False
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(base_model)).save_pretrained(str(hf_dir))
    return True


def read_sft_losses(metrics_path: str | Path) -> list[float]:
    """``train/loss`` per step from veRL's ``file`` logger, by step."""
    return [float(step["train/loss"]) for step in runner.read_steps(Path(metrics_path)) if "train/loss" in step]


def _say(echo: bool) -> Callable[..., None]:
    return print if echo else (lambda *a, **k: None)


def _cpu_env(metrics: Path) -> dict[str, str]:
    env = runner.trainer_env(metrics, cpu=True)
    env.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: a second thread only contends on a shared 2-core machine
    return env


@dataclass
class SFTResult:
    """Outcome of stage 1 on CPU."""

    returncode: int
    sft_dir: str
    base_model: str
    hf_dir: Optional[str]  # the saved Hugging Face weights (None if the run failed)
    losses: list[float] = field(default_factory=list)  # train/loss per step
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.hf_dir is not None


def run_cpu_sft(
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    model_dir: str | Path | None = None,
    echo: bool = True,
    timeout_s: Optional[float] = None,
) -> SFTResult:
    """Stage 1 on CPU: the toy expert data, the tiny model (reused from ``model_dir`` if built), veRL's SFT trainer.

    Writes ``<out>/data/{expert,sft}.parquet``, ``<out>/sft/`` (checkpoints, ``metrics.jsonl``, ``train.log``).
    """
    from verl_espo.toy.assets import build_assets
    from verl_espo.toy.task import write_expert_dataset

    say = _say(echo)
    out = Path(out_dir).resolve()
    start = time.time()
    base = Path(model_dir).resolve() if model_dir is not None else out / "base_model"
    if not (base / "config.json").exists():
        say(f"[stages] building the tiny base model in {base}")
        build_assets(base)
    _, sft_parquet = write_expert_dataset(out / "data")
    sft_dir = out / "sft"
    sft_dir.mkdir(parents=True, exist_ok=True)
    metrics = sft_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    cmd = sft_command(
        base,
        [sft_parquet],
        sft_dir,
        config_name=SFT_SMOKE_CONFIG,
        overrides=["trainer.logger=[console,file]", f"hydra.run.dir={sft_dir / 'hydra'}", *overrides],
    )
    say(f"[stages] stage 1 (SFT warm-up), log in {sft_dir / 'train.log'}:\n  VERL_PLATFORM=cpu {shlex.join(cmd)}")
    returncode, _ = runner.run(cmd, _cpu_env(metrics), log=sft_dir / "train.log", timeout_s=timeout_s)
    losses = read_sft_losses(metrics)
    hf_dir = None
    if returncode == 0:
        hf = find_hf_weights(sft_dir)
        if ensure_tokenizer(hf, base):
            say(f"[stages] copied the base model's tokenizer into {hf}")
        hf_dir = str(hf)
    result = SFTResult(returncode, str(sft_dir), str(base), hf_dir, losses, time.time() - start)
    if result.ok:
        first, last = (f"{losses[0]:.4g}", f"{losses[-1]:.4g}") if losses else ("?", "?")
        say(f"[stages] stage 1 done: {len(losses)} steps, loss {first} -> {last} ({result.wall_s:.0f} s); {hf_dir}")
    else:
        tail = runner.tail(sft_dir / "train.log", 30)
        say(f"[stages] stage 1 failed (exit code {returncode}); last lines of {sft_dir / 'train.log'}:\n{tail}")
    return result


def run_cpu_smoke(
    out_dir: str | Path,
    rl_steps: int = 10,
    sft_overrides: Sequence[str] = (),
    rl_overrides: Sequence[str] = (),
    *,
    echo: bool = True,
) -> dict[str, Any]:
    """The bundled default: stage 1 (:func:`run_cpu_sft`), then ``rl_steps`` of the EGSPO smoke run from its weights.

    ``rl_steps=0`` runs stage 1 only.

    The RL stage is :func:`verl_espo.smoke.run_smoke` (veRL's ``main_ppo`` with ``egspo_smoke``, the toy task's
    demonstrations mixed into every step) with ``model_dir`` = the SFT weights. Writes ``<out>/stages.json``.
    """
    from verl_espo.smoke import run_smoke

    say = _say(echo)
    out = Path(out_dir).resolve()
    sft = run_cpu_sft(out, sft_overrides, echo=echo)
    summary: dict[str, Any] = {"sft": dict(vars(sft)), "rl": None}
    if sft.ok and rl_steps > 0:
        say(
            f"[stages] stages 2-3 (EGSPO RL, veRL's main_ppo with egspo_smoke): python -m verl_espo.smoke egspo "
            f"--steps {rl_steps} --out {out / 'rl'} --model-dir {sft.hf_dir} {' '.join(rl_overrides)}".rstrip()
            + f"  (the main_ppo command goes to {out / 'rl' / 'command.txt'})"
        )
        rl = run_smoke("egspo", rl_steps, out / "rl", list(rl_overrides), model_dir=sft.hf_dir, echo=echo)
        summary["rl"] = rl.summary
    (out / "stages.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_chain(
    sft: Optional[Sequence[str]],
    sft_dir: str | Path,
    rl: Callable[[Path], Sequence[str]],
    *,
    base_model: Optional[str | Path] = None,
    sft_step: Optional[int] = None,
    env: Optional[Mapping[str, str]] = None,
    rl_env: Optional[Mapping[str, str]] = None,
    timeout_s: Optional[float] = None,
    on_sft_done: Optional[Callable[[], None]] = None,
    say: Callable[[str], Any] = print,
    prefix: str = "[stages]",
) -> int:
    """EGSPO's chain on a cluster: stage 1 (``sft``; ``None``: its checkpoints are already in ``sft_dir``), then
    the RL command ``rl(weights)`` from its Hugging Face weights (``sft_step``, default the latest).

    Both run through :func:`verl_espo.runner.run` with ``env`` (RL: ``rl_env``, default ``env``) added to the
    trainer environment, ``timeout_s`` each. ``on_sft_done`` runs after a successful stage 1. Returns the first
    non-zero exit code, else RL's.
    """
    if sft is not None:
        say(f"{prefix} stage 1 (SFT warm-up): {shlex.join(sft)}")
        rc, _ = runner.run(sft, runner.trainer_env(extra=env), timeout_s=timeout_s)
        if rc != 0:
            say(f"{prefix} stage 1 failed (exit code {rc}); not starting RL")
            return rc
        if on_sft_done is not None:
            on_sft_done()
    weights = find_hf_weights(sft_dir, sft_step)
    if base_model is not None and ensure_tokenizer(weights, base_model):
        say(f"{prefix} copied {base_model}'s tokenizer into {weights}")
    command = list(rl(weights))
    say(f"{prefix} RL starts from the SFT weights {weights}: {shlex.join(command)}")
    rc, _ = runner.run(command, runner.trainer_env(extra=rl_env if rl_env is not None else env), timeout_s=timeout_s)
    return rc


def _cluster(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    required = {"--model": args.model, "--train-files": args.train_files, "--val-files": args.val_files}
    if not args.skip_sft:
        required["--sft-files"] = args.sft_files
    missing = [flag for flag, value in required.items() if not value]
    if missing:
        parser.error(f"{', '.join(missing)} required (or --cpu-smoke for the bundled default)")
    out = Path(args.out)
    sft_dir = out / "sft"
    sft = sft_command(
        args.model, args.sft_files or [], sft_dir, nproc=args.gpus, val_files=args.sft_val_files,
        overrides=args.sft_override,
    ) if not args.skip_sft else None  # fmt: skip

    def rl(model: str | Path) -> list[str]:
        return rl_command(
            model, args.train_files, args.val_files, out / "rl", gpus=args.gpus, nnodes=args.nnodes,
            expert_files=args.expert_files, rollout=args.rollout, overrides=args.rl_override,
        )  # fmt: skip

    if args.dry_run:
        step = args.sft_step if args.sft_step is not None else f"$(cat {sft_dir / LATEST_FILE})"
        if sft is not None:
            print("# stage 1: SFT warm-up\n" + shlex.join(sft))
        print(f"# stages 2-3: EGSPO RL from the SFT weights\nSFT_HF={sft_dir}/global_step_{step}/huggingface")
        print(shlex.join(rl("SFT_HF_PLACEHOLDER")).replace("SFT_HF_PLACEHOLDER", '"$SFT_HF"'))
        return 0
    return run_chain(sft, sft_dir, rl, base_model=args.model, sft_step=args.sft_step)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl_espo.stages",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="the bundled default on CPU (tiny model, toy task)")
    parser.add_argument("--out", default=None, help="work directory (default outputs/stages/<mode>-<time>)")
    parser.add_argument("--rl-steps", type=int, default=10, help="--cpu-smoke: RL steps after stage 1 (0: none)")
    parser.add_argument("--model", help="the base policy (local dir or hub id) for stage 1")
    parser.add_argument("--sft-files", nargs="+", help="stage 1: parquet(s) with a `messages` column")
    parser.add_argument("--sft-val-files", nargs="+", help="stage 1: held-out demonstrations (optional)")
    parser.add_argument("--train-files", nargs="+", help="RL: prompts (veRL RL parquet)")
    parser.add_argument("--val-files", nargs="+", help="RL: validation prompts")
    parser.add_argument("--expert-files", nargs="+", help="RL: demonstrations mixed into every step (data.expert)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    parser.add_argument("--nnodes", type=int, default=1, help="RL stage: nodes of the Ray cluster (stage 1: one node)")
    parser.add_argument("--rollout", default="vllm", help="RL: actor_rollout_ref.rollout.name (default vllm)")
    parser.add_argument("--skip-sft", action="store_true", help="start RL from the checkpoints already in <out>/sft")
    parser.add_argument("--sft-step", type=int, default=None, help="start RL from global_step_N (default: latest)")
    parser.add_argument("--sft-override", action="append", default=[], metavar="KEY=VALUE", help="stage 1 override")
    parser.add_argument("--rl-override", action="append", default=[], metavar="KEY=VALUE", help="RL stage override")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        if args.dry_run or args.skip_sft or args.model:
            parser.error("--cpu-smoke builds its own model and data; --model, --skip-sft and --dry-run do not apply")
        if args.rl_steps < 0:
            parser.error(f"--rl-steps must be >= 0, got {args.rl_steps}")
        out = args.out or f"outputs/stages/cpu-smoke-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = run_cpu_smoke(out, args.rl_steps, args.sft_override, args.rl_override)
        if summary["sft"]["returncode"] != 0 or summary["sft"]["hf_dir"] is None:
            return 1
        rl = summary["rl"]
        return 0 if rl is None or (rl["returncode"] == 0 and rl["steps_completed"] >= args.rl_steps) else 1
    if args.out is None:
        args.out = "outputs/egspo_stages"
    return _cluster(args, parser)


if __name__ == "__main__":
    sys.exit(main())
