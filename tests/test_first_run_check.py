"""The first-run check (:mod:`verl_espo.first_run_check`): each bound on its own, and a recorded toy-scale run.

``tests/data/first_run_toy_metrics.jsonl`` holds the checked metrics of a 40-step run of the README's main job
(``python -m verl_espo.smoke espo`` with ``data.train_batch_size=32 actor_rollout_ref.actor.ppo_mini_batch_size=8
actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64``, CPU, the plugin's ``hf`` rollout), one veRL file-logger
record per step; ``tests/test_e2e_learning.py`` applies the same check to the main job the suite runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from verl_espo import recipes
from verl_espo.first_run_check import (
    CLIPFRAC,
    CLIPFRAC_LOWER,
    ENTROPY,
    GRAD_NORM,
    PROBS_DIFF,
    PROFILES,
    REWARD,
    STEP_KEY,
    Bounds,
    check_steps,
    format_checks,
    main,
    read_steps,
)

SAMPLE = Path(__file__).resolve().parent / "data" / "first_run_toy_metrics.jsonl"
GPU = PROFILES["gpu"]


def healthy(n: int = 12) -> list[dict]:
    """A run that passes the gpu bounds with room: reward 0.30 -> 0.41, entropy 0.8 -> 0.69."""
    return [
        {
            "step": i + 1,
            STEP_KEY: 60.0,
            REWARD: 0.30 + 0.01 * i,
            ENTROPY: 0.8 - 0.01 * i,
            CLIPFRAC: 0.01,
            CLIPFRAC_LOWER: 0.0,
            PROBS_DIFF: 0.004,
            GRAD_NORM: 0.3,
        }
        for i in range(n)
    ]


def verdicts(steps, bounds=GPU) -> dict[str, bool]:
    return {c.name: c.ok for c in check_steps(steps, bounds)}


def with_value(key, value, at=(-1,), n=12):
    steps = healthy(n)
    for i in at:
        steps[i][key] = value
    return steps


def test_a_healthy_run_passes_every_check():
    result = verdicts(healthy())
    assert result == dict.fromkeys(
        ["steps", "reward rises", "entropy finite", "entropy not collapsed", "clip fraction", "dual-clip fraction",
         "rollout vs actor", "grad norm"], True)  # fmt: skip


@pytest.mark.parametrize(
    "steps,failing",
    [
        (healthy(9), "steps"),
        ([dict(s, **{REWARD: 0.5 - 0.01 * i}) for i, s in enumerate(healthy())], "reward rises"),
        ([dict(s, **{REWARD: 0.4}) for s in healthy()], "reward rises"),  # flat: a rise of 0 is not a rise
        (with_value(ENTROPY, math.nan, at=(5,)), "entropy finite"),  # between the two windows
        ([dict(s, **{ENTROPY: 0.8 if i < 5 else 0.19}) for i, s in enumerate(healthy())], "entropy not collapsed"),
        (with_value(CLIPFRAC, 0.21, at=(6,)), "clip fraction"),
        (with_value(CLIPFRAC, -0.01, at=(6,)), "clip fraction"),
        (with_value(CLIPFRAC_LOWER, 0.06, at=(0,)), "dual-clip fraction"),
        (with_value(PROBS_DIFF, 0.051, at=(2,)), "rollout vs actor"),
        (with_value(PROBS_DIFF, math.inf, at=(2,)), "rollout vs actor"),
        (with_value(GRAD_NORM, 0.0, at=(4,)), "grad norm"),
        (with_value(GRAD_NORM, math.nan, at=(4,)), "grad norm"),
    ],
)
def test_each_bound_fails_alone(steps, failing):
    result = verdicts(steps)
    assert not result[failing], result
    assert all(ok for name, ok in result.items() if name != failing), result


def test_values_on_the_bounds_pass():
    steps = healthy()
    for i, s in enumerate(steps):
        s.update({CLIPFRAC: GPU.max_clipfrac, CLIPFRAC_LOWER: GPU.max_clipfrac_lower, PROBS_DIFF: GPU.max_probs_diff,
                  ENTROPY: 0.8 if i < 5 else 0.8 * GPU.min_entropy_ratio})  # fmt: skip
    assert all(verdicts(steps).values())


@pytest.mark.parametrize("key", [REWARD, ENTROPY, CLIPFRAC, CLIPFRAC_LOWER, PROBS_DIFF, GRAD_NORM])
def test_a_missing_metric_fails_its_check_and_says_so(key):
    steps = healthy()
    del steps[7][key]
    failed = [c for c in check_steps(steps, GPU) if not c.ok]
    assert len(failed) == 1 and failed[0].value is None and key in failed[0].detail
    assert "missing" in format_checks(failed)


def test_validation_only_steps_are_skipped_and_too_few_steps_stop_early():
    steps = [{"step": 0, "val-core/x/acc/mean@1": 0.1}, *healthy()]
    assert all(verdicts(steps).values())
    checks = check_steps(healthy(4), GPU)
    assert [(c.name, c.ok) for c in checks] == [("steps", False)]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"window": 0}, "window"),
        ({"min_steps": 6, "window": 4}, "2 x window"),
        ({"max_clipfrac": 1.5}, "max_clipfrac"),
        ({"min_reward_rise": math.nan}, "min_reward_rise"),
    ],
)
def test_bad_bounds_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(GPU, **change)


def test_the_recorded_toy_run_passes_the_toy_profile():
    steps = read_steps(SAMPLE)
    checks = check_steps(steps, PROFILES["toy"])
    assert all(c.ok for c in checks), format_checks(checks)
    by_name = {c.name: c for c in checks}
    assert by_name["steps"].value == 40 and by_name["reward rises"].value > 0.4
    # the toy's lr 1e-3 and ESPO's small clip ranges clip more than the gpu profile allows: the profiles differ
    gpu = {c.name: c.ok for c in check_steps(steps, GPU)}
    assert [name for name, ok in gpu.items() if not ok] == ["clip fraction"]


def test_command_line_reads_a_run_directory_with_several_metrics_files(tmp_path, capsys):
    lines = SAMPLE.read_text().splitlines()
    (tmp_path / "metrics-000.jsonl").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "metrics-001.jsonl").write_text("\n".join(lines[20:]) + "\n")  # a resumed run's second file
    assert [s["step"] for s in read_steps(tmp_path)] == [json.loads(x)["step"] for x in lines]
    assert main([str(tmp_path), "--profile", "toy"]) == 0
    out = capsys.readouterr().out
    assert "PASS  reward rises" in out and out.rstrip().endswith("all passed")
    assert main([str(tmp_path)]) == 1  # gpu bounds: the toy's clip fraction is too high
    assert main([str(tmp_path), "--max-clipfrac", "0.5"]) == 0
    assert "FAILED: clip fraction" in capsys.readouterr().out


def test_a_directory_without_metrics_is_an_error(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "other.jsonl")
    with pytest.raises(FileNotFoundError, match="metrics"):
        read_steps(tmp_path)


def test_bounds_defaults_are_the_gpu_profile():
    assert Bounds() == GPU


# ---------------------------------------------------------------- the launcher's --first-run-check


def test_the_launcher_plans_a_short_fresh_run_of_the_ladder(tmp_path):
    plan = recipes.first_run_plan("ladder/qwen2.5_0.5b_instruct_gsm8k", [], 15, data_root="/data", out=tmp_path,
                                  check=False)  # fmt: skip
    assert plan.run_dir == tmp_path / "ladder" / "qwen2.5_0.5b_instruct-gsm8k-grpo-first-run"
    for arg in ("trainer.total_training_steps=15", "trainer.val_before_train=false", "trainer.test_freq=-1",
                "trainer.save_freq=-1", "trainer.resume_mode=disable"):  # fmt: skip
        assert arg in plan.command
    assert plan.world == 1
    with pytest.raises(ValueError, match="first-run-steps"):
        recipes.first_run_plan("ladder/qwen2.5_0.5b_instruct_gsm8k", [], 0, data_root="/data", out=tmp_path)


def test_the_launcher_checks_the_metrics_file_its_run_wrote(tmp_path, capsys):
    plan = recipes.first_run_plan("ladder/qwen2.5_0.5b_instruct_gsm8k", ["algo=espo"], 12, data_root="/d",
                                  out=tmp_path, check=False)  # fmt: skip
    assert plan.run_dir.name == "qwen2.5_0.5b_instruct-gsm8k-espo-first-run"
    metrics = Path(plan.env["VERL_FILE_LOGGER_PATH"])
    metrics.parent.mkdir(parents=True)
    shutil.copy(SAMPLE, metrics)
    assert recipes.check_first_run(plan, "toy") == 0
    assert recipes.check_first_run(plan, "gpu") == 1
    assert "FAIL  clip fraction" in capsys.readouterr().out
