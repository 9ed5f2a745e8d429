"""The runner of veRL's trainer (``verl_espo.runner``) on stand-in processes: exit codes, the metric log it follows,
and a timeout that ends the whole process group (what Ray's processes are to a trainer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from verl_espo import runner


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its parent is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_exit_code_and_log(tmp_path):
    code = "import sys; print('hello'); sys.exit(3)"
    rc, records = runner.run([sys.executable, "-c", code], runner.trainer_env(), log=tmp_path / "log")
    assert (rc, records) == (3, [])
    assert runner.tail(tmp_path / "log", 5) == "hello"


def test_follows_the_metric_log_and_merges_steps(tmp_path):
    """veRL's file logger writes a step in several records (validation, then training): one dict per step."""
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 0, "data": {"val-core/toy/acc/mean@1": 0.25}},
        {"step": 1, "data": {"critic/score/mean": 0.5, "timing_s/step": 2.0}},
        {"step": 1, "data": {"val-core/toy/acc/mean@1": 0.5}},
    ]
    code = (
        "import json, os, time\n"
        "with open(os.environ['VERL_FILE_LOGGER_PATH'], 'w') as f:\n"
        f"    for line in {lines!r}:\n"
        "        f.write(json.dumps(line) + '\\n'); f.flush(); time.sleep(0.2)\n"
    )
    seen: list[str] = []
    rc, records = runner.run(
        [sys.executable, "-c", code], runner.trainer_env(metrics), metrics=metrics, say=seen.append, prefix="[t]"
    )
    assert rc == 0 and records == lines
    assert len(seen) == 3 and seen[1].startswith("[t] step   1  reward=0.5") and "step_s=2" in seen[1]
    assert runner.read_steps(metrics) == [
        {"step": 0, "val-core/toy/acc/mean@1": 0.25},
        {"step": 1, "critic/score/mean": 0.5, "timing_s/step": 2.0, "val-core/toy/acc/mean@1": 0.5},
    ]


def test_timeout_ends_the_process_group(tmp_path):
    """Past the timeout the command and what it started (here a background ``sleep``, in a trainer Ray's
    processes) are stopped, and the exit code is 124, with or without a metric log to follow."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    for metrics in (None, tmp_path / "metrics.jsonl"):
        pid_file.unlink(missing_ok=True)
        began = time.time()
        rc, _ = runner.run([sys.executable, "-c", code], runner.trainer_env(), timeout_s=3, metrics=metrics)
        assert rc == runner.TIMEOUT_RETURNCODE and time.time() - began < 60
        child = int(pid_file.read_text())
        for _ in range(50):
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child), f"the command's child {child} outlived the timeout"


def test_trainer_env(tmp_path, monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    env = runner.trainer_env(tmp_path / "m.jsonl", cpu=True, extra={"A": "1"})
    assert env["VERL_FILE_LOGGER_PATH"] == str(tmp_path / "m.jsonl") and env["VERL_PLATFORM"] == "cpu"
    assert env["A"] == "1" and env["PATH"] == os.environ["PATH"]
    assert "VERL_PLATFORM" not in runner.trainer_env()  # GPUs: veRL detects the platform itself
    added = runner.trainer_vars(tmp_path / "m.jsonl", cpu=True, extra={"A": "1"})  # what a launcher prints
    assert env == {**os.environ, **added} and "PATH" not in added and added["A"] == "1"
    assert json.dumps(env)  # plain strings only
    assert Path(env["VERL_FILE_LOGGER_PATH"]).name == "m.jsonl"


def test_sft_then_rl_chain(tmp_path):
    """``stages.run_chain`` (the stages CLI and the recipes' ``--sft``): stage 1, then RL from the weights it saved;
    a failed stage 1 starts no RL."""
    from verl_espo.stages import run_chain

    sft_dir, seen = tmp_path / "sft", tmp_path / "rl_model.txt"
    save = (
        "import pathlib, sys\n"
        f"hf = pathlib.Path({str(sft_dir)!r}) / 'global_step_3' / 'huggingface'\n"
        "hf.mkdir(parents=True)\n"
        "for name in ('config.json', 'model.safetensors', 'tokenizer_config.json'):\n"
        "    (hf / name).write_text('{}')\n"
        f"(pathlib.Path({str(sft_dir)!r}) / 'latest_checkpointed_iteration.txt').write_text('3')\n"
    )
    done: list[bool] = []

    def rl(weights: Path) -> list[str]:
        return [sys.executable, "-c", f"open({str(seen)!r}, 'w').write({str(weights)!r})"]

    rc = run_chain([sys.executable, "-c", save], sft_dir, rl, on_sft_done=lambda: done.append(True), say=print)
    assert rc == 0 and done == [True]
    assert seen.read_text() == str(sft_dir / "global_step_3" / "huggingface")

    seen.unlink()
    assert run_chain([sys.executable, "-c", "raise SystemExit(7)"], sft_dir, rl, say=print) == 7
    assert not seen.exists()


def test_step_line_shows_each_declared_losss_columns():
    """The per-step line: the general columns, then the columns each loss's spec declares, missing keys skipped."""
    from verl_espo.loss_inputs import loss_specs

    line = runner.format_step(7, {"critic/score/mean": 0.5, "actor/egspo/high_token_frac": 0.25, "x/y": 1.0})
    assert line == "step   7  reward=0.5  gate_hi=0.25"
    labels = [label for label, _ in runner.step_columns()]
    assert len(labels) == len(set(labels))
    for spec in loss_specs().values():
        assert set(spec.columns) <= set(runner.step_columns()), spec.name


def test_reading_the_losses_declarations_does_not_import_verl():
    """The runner's line, the report's curves and the comparison's labels read the loss specs without veRL
    (importing veRL takes seconds), and importing the runner reads nothing."""
    code = (
        "import sys\n"
        "import verl_espo.runner as runner\n"
        "assert 'verl_espo.core' not in sys.modules\n"
        "runner.step_columns()\n"
        "from verl_espo.report.figures import plot_rows\n"
        "from verl_espo.compare import label\n"
        "assert label('espo') == 'ESPO' and label('grpo') == 'GRPO'\n"
        "assert any(row.key.startswith('actor/egspo/') for row in plot_rows())\n"
        "assert 'verl' not in sys.modules, sorted(m for m in sys.modules if m.startswith('verl.'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=runner.trainer_env())
