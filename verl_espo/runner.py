"""The one runner of veRL's trainer: start it as a subprocess, follow its metric log, stop it with everything it
started.

Every process that runs a veRL trainer goes through here: the smoke runs (:mod:`verl_espo.smoke`), the comparison
(:mod:`verl_espo.compare`), EGSPO's stages (:mod:`verl_espo.stages`), the evaluation (:mod:`verl_espo.evaluation`)
and the recipes' launcher (:mod:`verl_espo.recipes`). The trainer runs in its own process group, so a timeout or an
interrupt ends Ray's processes with it. veRL's ``file`` logger is read by
:func:`verl_espo.report.runs.read_file_logger`, the one reader of veRL's metric logs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from verl_espo.report.runs import merge_by_step, read_file_logger

__all__ = [
    "STEP_COLUMNS_HEAD",
    "STEP_COLUMNS_TAIL",
    "step_columns",
    "TIMEOUT_RETURNCODE",
    "trainer_vars",
    "trainer_env",
    "start",
    "stop",
    "wait",
    "follow",
    "run",
    "read_steps",
    "merged_steps",
    "fmt_value",
    "format_step",
    "tail",
]

#: The exit code reported for a trainer stopped at its deadline (``timeout``'s convention).
TIMEOUT_RETURNCODE = 124
#: Seconds a stopped process group gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 20.0

# What the per-step line shows, (label, metric key), missing keys skipped: these, each declared loss's `columns`
# (its LossSpec), then the tail.
STEP_COLUMNS_HEAD = (
    ("reward", "critic/score/mean"),
    ("entropy", "actor/entropy"),
    ("pg_loss", "actor/pg_loss"),
    ("grad_norm", "actor/grad_norm"),
    ("clipfrac", "actor/pg_clipfrac"),
)
STEP_COLUMNS_TAIL = (
    ("resp_len", "response_length/mean"),
    ("rollout_vs_actor_dp", "training/rollout_probs_diff_max"),
    ("step_s", "timing_s/step"),
)


@functools.cache
def step_columns() -> tuple[tuple[str, str], ...]:
    """The per-step line's columns: the head, the declared losses' columns (each metric once), the tail. Built on
    the first step line, so importing this module stays cheap (reading the specs imports torch, not veRL)."""
    from verl_espo.loss_inputs import loss_specs

    losses = dict.fromkeys(column for spec in loss_specs().values() for column in spec.columns)
    return (*STEP_COLUMNS_HEAD, *losses, *STEP_COLUMNS_TAIL)


def trainer_vars(
    metrics: Optional[Path] = None, *, cpu: bool = False, extra: Optional[Mapping[str, str]] = None
) -> dict[str, str]:
    """What a trainer process needs on top of this process's environment: veRL's ``file`` logger writing every step
    to ``metrics``, unbuffered output, Hydra's full errors; with ``cpu`` the plugin's CPU platform and every Ray
    worker's log lines (no deduplication); ``extra`` last."""
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    if metrics is not None:
        env["VERL_FILE_LOGGER_PATH"] = str(metrics)  # veRL's `file` logger writes every step here
    if cpu:
        env.update(VERL_PLATFORM="cpu", RAY_DEDUP_LOGS="0")  # the plugin's CPU platform (verl_espo/platform/cpu.py)
    env.update(extra or {})
    return env


def trainer_env(
    metrics: Optional[Path] = None, *, cpu: bool = False, extra: Optional[Mapping[str, str]] = None
) -> dict[str, str]:
    """This process's environment plus :func:`trainer_vars`."""
    return {**os.environ, **trainer_vars(metrics, cpu=cpu, extra=extra)}


def start(
    command: Sequence[str], env: Mapping[str, str], log: Optional[Path] = None, cwd: Optional[Path] = None
) -> subprocess.Popen:
    """Start ``command`` in a process group of its own (output to a fresh ``log``, else inherited)."""
    out = open(log, "wb") if log is not None else None
    try:
        return subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )  # fmt: skip
    finally:
        if out is not None:
            out.close()  # the child holds its own descriptor


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """End ``proc``'s whole process group (the trainer and the Ray processes it started): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # what the trainer left behind in its group
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    proc.wait()


def wait(proc: subprocess.Popen, timeout_s: Optional[float] = None) -> int:
    """``proc``'s exit code; past ``timeout_s`` (or on an interrupt) its process group is stopped first."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc)
        return TIMEOUT_RETURNCODE
    except BaseException:
        stop(proc)
        raise


def follow(
    proc: subprocess.Popen,
    metrics: Path,
    say: Callable[[str], Any],
    deadline: Optional[float],
    prefix: str = "[smoke]",
) -> tuple[int, list[dict]]:
    """Wait for the trainer, echoing each step of its metric log as it appears; past ``deadline`` (or on an
    interrupt) stop its process group. Returns the exit code (:data:`TIMEOUT_RETURNCODE` past the deadline) and
    the log's records."""
    records: list[dict] = []
    offset = 0
    try:
        while True:
            returncode = proc.poll()
            new, offset = read_file_logger(metrics, offset)
            for record in new:
                records.append(record)
                say(f"{prefix} " + format_step(int(record["step"]), record["data"]))
            if returncode is not None:
                return returncode, records
            if deadline is not None and time.time() > deadline:
                stop(proc)
                return TIMEOUT_RETURNCODE, records
            time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise


def run(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    log: Optional[Path] = None,
    cwd: Optional[Path] = None,
    timeout_s: Optional[float] = None,
    metrics: Optional[Path] = None,
    say: Callable[[str], Any] = print,
    prefix: str = "[smoke]",
) -> tuple[int, list[dict]]:
    """Run ``command`` to the end (:func:`start`, then :func:`follow` when ``metrics`` is given, else :func:`wait`).

    Past ``timeout_s``, on an interrupt, or when this process gets SIGTERM, the command's process group is stopped.
    Returns the exit code and the metric log's records.
    """
    deadline = time.time() + timeout_s if timeout_s is not None else None
    with _sigterm_raises():
        proc = start(command, env, log=log, cwd=cwd)
        if metrics is None:
            return wait(proc, timeout_s), []
        return follow(proc, metrics, say, deadline, prefix=prefix)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM to this process raises ``SystemExit`` (so the command's group is stopped, not orphaned)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_steps(metrics: Path) -> list[dict[str, Any]]:
    """veRL's metric log (its ``file`` logger's JSON lines) as one dict per step, with its ``step``."""
    return merged_steps(read_file_logger(metrics)[0])


def merged_steps(records: list[dict]) -> list[dict[str, Any]]:
    """veRL logs a step in several calls (validation, then training): one dict per step, with its ``step``."""
    return [{"step": step, **data} for step, data in sorted(merge_by_step(records).items())]


def fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_step(step: int, data: dict[str, Any]) -> str:
    """One readable line per logged step (plus the validation scores when the step has them)."""
    parts = [f"step {step:>3}"]
    parts += [f"{label}={fmt_value(data[key])}" for label, key in step_columns() if key in data]
    parts += [f"{k}={fmt_value(v)}" for k, v in data.items() if k.startswith("val-core/")]
    return "  ".join(parts)


def tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
