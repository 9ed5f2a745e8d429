"""Trainer runs for the resume tests: launch a smoke config, kill it as a preemption would, read what it left.

Used by ``test_resume.py`` (the sync trainer, EGSPO with expert rows) and ``test_e2e_separate_async.py`` (the
separate-async trainer, ESPO). Each run writes into its own directory ``out``: ``train.log`` (every attempt,
appended), ``metrics.jsonl`` (veRL's ``file`` logger), ``checkpoints/`` and, with ``trainer.rollout_data_dir=
out/rollouts``, one rollout dump per step.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

#: The ``hf`` rollout server's line after each weight sync (``engine_kwargs.hf.log_weight_digest=true``).
DIGEST_LINE = re.compile(r"hf rollout: replica 0 weights at step (\d+): sha256 ([0-9a-f]{64})")


def launch(out: Path, model: Path, algo: str, steps: int, overrides: list[str]) -> subprocess.Popen:
    """Start ``main_ppo`` with ``<algo>_smoke`` on the toy data in ``out/data`` (plus the toy expert file for the
    algorithms that train on expert rows), appending to ``out/train.log``; its own session, so it can be killed
    as a process group."""
    from verl_espo.runner import trainer_env
    from verl_espo.smoke import _command, _trains_on_expert_rows
    from verl_espo.toy.task import write_dataset, write_expert_dataset

    train, val = write_dataset(out / "data")
    if _trains_on_expert_rows(algo):
        expert, _ = write_expert_dataset(out / "data")
        overrides = [f"data.expert.files=[{expert}]", *overrides]
    cmd = _command(algo, out, model, train, val, steps, [f"trainer.rollout_data_dir={out / 'rollouts'}", *overrides])
    log = open(out / "train.log", "ab")
    env = trainer_env(out / "metrics.jsonl", cpu=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out, start_new_session=True)


def records(out: Path) -> list[dict]:
    """The metrics log's records (a line cut by a kill is skipped)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_bytes().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            pass
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the trainer, the Ray processes it started and their workers (a node's preemption)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    proc.wait()


def run(
    out: Path,
    model: Path,
    algo: str,
    steps: int,
    overrides: list[str],
    timeout_s: float = 900,
    kill_after_checkpoint: int | None = None,
) -> int:
    """Run to the end (the exit code), or kill the whole tree as soon as the checkpoint of step
    ``kill_after_checkpoint`` is the latest and that step is logged, i.e. during the next step (returns -9)."""
    proc = launch(out, model, algo, steps, overrides)
    deadline = time.time() + timeout_s
    try:
        while proc.poll() is None:
            if time.time() > deadline:
                raise TimeoutError(f"trainer in {out} ran past {timeout_s} s")
            if kill_after_checkpoint is not None:
                marker = out / "checkpoints" / "latest_checkpointed_iteration.txt"
                if (
                    marker.exists()
                    and marker.read_text().strip() == str(kill_after_checkpoint)
                    and kill_after_checkpoint in train_steps(out)
                    # veRL may write the step's rollout dump after its metrics record
                    and (out / "rollouts" / f"{kill_after_checkpoint}.jsonl").exists()
                ):
                    kill_tree(proc)  # during step kill_after_checkpoint + 1
                    return -9
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    return proc.returncode


def train_steps(out: Path) -> dict[int, list[dict]]:
    """The logged training steps: step -> its records (one each, unless a step was logged twice)."""
    by_step: dict[int, list[dict]] = {}
    for r in records(out):
        if "timing_s/step" in r["data"]:
            by_step.setdefault(r["step"], []).append(r["data"])
    return by_step


def log(out: Path) -> str:
    return (out / "train.log").read_text(errors="replace")


def rollouts(out: Path, step: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted prompts of the step's rollout rows, sorted (prompt, response) of its expert rows)."""
    rows = [json.loads(line) for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
    expert = sorted((r["input"], r["output"]) for r in rows if str(r.get("uid", "")).startswith("expert-"))
    prompts = sorted(r["input"] for r in rows if not str(r.get("uid", "")).startswith("expert-"))
    return prompts, expert


def checkpoint_tensors(out: Path, step: int) -> dict[str, torch.Tensor]:
    """The actor's weights (``model.*``) and optimizer state (``optim.*``) in the checkpoint of ``step``."""
    actor = out / "checkpoints" / f"global_step_{step}" / "actor"
    tensors = {}
    for path in sorted(actor.glob("*.pt")):
        if path.name.startswith(("model_", "optim_")):
            state = torch.load(path, map_location="cpu", weights_only=False)
            flat = state.get("state", state) if path.name.startswith("optim_") else state
            tensors.update(_flatten(flat, path.name.split("_")[0]))
    return tensors


def adam_steps(out: Path, step: int) -> set[float]:
    """The optimizer's step counts in the checkpoint of ``step`` (one per parameter)."""
    tensors = checkpoint_tensors(out, step)
    return {float(v) for k, v in tensors.items() if k.startswith("optim") and k.endswith(".step")}


def _flatten(obj, prefix: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj.full_tensor() if hasattr(obj, "full_tensor") else obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {}


def checkpoint_digest(out: Path, step: int) -> str:
    """:func:`~verl_espo.rollout.hf_server.weights_digest` of the actor's weights in the checkpoint of ``step``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from verl_espo.rollout.hf_server import weights_digest

    config = AutoConfig.from_pretrained(out / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    state = {k.removeprefix("model."): v for k, v in checkpoint_tensors(out, step).items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    return weights_digest(model.state_dict())
