"""Launching veRL's trainer as a subprocess on CPU and following its file logger.

Shared by the smoke runs (:mod:`verl_espo.smoke`) and the evaluation (:mod:`verl_espo.evaluation`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from verl_espo.report.runs import merge_by_step, read_file_logger

__all__ = ["STEP_COLUMNS", "cpu_trainer_env", "fmt_value", "follow", "format_step", "merged_steps", "tail"]

# What the per-step line shows: (label, metric key) -- missing keys are skipped.
STEP_COLUMNS = (
    ("reward", "critic/score/mean"),
    ("entropy", "actor/entropy"),
    ("pg_loss", "actor/pg_loss"),
    ("grad_norm", "actor/grad_norm"),
    ("clipfrac", "actor/pg_clipfrac"),
    ("hi_clip+", "actor/espo/high/clipfrac_upper"),
    ("hi_clip-", "actor/espo/high/clipfrac_lower"),
    ("lo_clip+", "actor/espo/low/clipfrac_upper"),
    ("lo_clip-", "actor/espo/low/clipfrac_lower"),
    ("tok_clip+", "actor/espo/token/clipfrac_upper"),
    ("tok_clip-", "actor/espo/token/clipfrac_lower"),
    ("gate_hi", "actor/egspo/high_token_frac"),
    ("phi_lo", "actor/egspo/phi_mean_low"),
    ("mu", "actor/hybrid/mu"),
    ("rl_loss", "actor/hybrid/rl_loss"),
    ("sft_loss", "actor/hybrid/sft_loss"),
    ("resp_len", "response_length/mean"),
    ("rollout_vs_actor_dp", "training/rollout_probs_diff_max"),
    ("step_s", "timing_s/step"),
)


def cpu_trainer_env(out: Path) -> dict[str, str]:
    """The environment of a CPU trainer process: the plugin's CPU platform, veRL's file logger in ``out``."""
    env = dict(os.environ)
    env.update(
        VERL_PLATFORM="cpu",  # the plugin's CPU platform (verl_espo/platform/cpu.py)
        VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"),  # veRL's `file` logger writes every step here
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="1",
        RAY_DEDUP_LOGS="0",
    )
    return env


def follow(
    proc: subprocess.Popen,
    metrics: Path,
    say: Callable[[str], Any],
    deadline: Optional[float],
    prefix: str = "[smoke]",
) -> tuple[int, list[dict]]:
    """Wait for the trainer, echoing each logged step as it appears; kill it past ``deadline``."""
    records: list[dict] = []
    offset = 0
    while True:
        returncode = proc.poll()
        new, offset = read_file_logger(metrics, offset)
        for record in new:
            records.append(record)
            say(f"{prefix} " + format_step(int(record["step"]), record["data"]))
        if returncode is not None:
            return returncode, records
        if deadline is not None and time.time() > deadline:
            proc.kill()
            proc.wait()
            return -9, records
        time.sleep(0.5)


def merged_steps(records: list[dict]) -> list[dict[str, Any]]:
    """veRL logs a step in several calls (validation, then training): one dict per step, with its ``step``."""
    return [{"step": step, **data} for step, data in sorted(merge_by_step(records).items())]


def fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_step(step: int, data: dict[str, Any]) -> str:
    """One readable line per logged step (plus the validation scores when the step has them)."""
    parts = [f"step {step:>3}"]
    parts += [f"{label}={fmt_value(data[key])}" for label, key in STEP_COLUMNS if key in data]
    parts += [f"{k}={fmt_value(v)}" for k, v in data.items() if k.startswith("val-core/")]
    return "  ".join(parts)


def tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
