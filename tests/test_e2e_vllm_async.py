"""End-to-end: veRL's async trainers with the plugin's loss and veRL's own vLLM rollout on CPU (vLLM's CPU build).

``plugin_colocate_async`` with ``espo.grouping=batch`` and ``plugin_separate_async`` through the plugin's ``gloo``
checkpoint engine; the sync mode and what every run shares are in ``test_e2e_vllm.py``. A module of its own so
that the suite's two workers can run it beside the sync run. Skipped without vLLM.
"""

from __future__ import annotations

import pytest
from test_e2e_vllm import NO_VALIDATION, SMALL, SYNC_TOLERANCE, _check_espo_steps, _run, pytestmark  # noqa: F401


def test_colocate_async_with_vllm_and_the_trainers_batch_threshold(tmp_path):
    """plugin_colocate_async (partial rollouts; a step trains on samples of the previous weights, staleness 1, or
    of the current ones, staleness 0) with espo.grouping=batch: the trainer's one threshold per step reaches the
    loss, and the micro-batch is the whole step, so at least ceil(0.2 N) of its tokens reach it (more only on
    ties). Samples of the current weights match the actor: the sync reached vLLM."""
    overrides = [
        "trainer.v1.trainer_mode=plugin_colocate_async",
        "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
        *SMALL,
        *NO_VALIDATION,
    ]
    result = _run(tmp_path / "colocate_async", overrides)
    steps = _check_espo_steps(result)
    assert "'trainer_mode': 'plugin_colocate_async'" in result.log
    for step in steps:
        assert step["actor/espo/entropy_threshold"] == pytest.approx(step["actor/step_entropy_threshold"], rel=1e-5)
        assert 0.2 <= step["actor/espo/high/token_frac"] < 0.25
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
        "data.train_batch_size=16",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
        *NO_VALIDATION,
    ]
    result = _run(tmp_path / "separate_async", overrides)
    steps = _check_espo_steps(result)
    assert "'trainer_mode': 'plugin_separate_async'" in result.log
    assert steps[0]["training/rollout_probs_diff_max"] < SYNC_TOLERANCE
    for step in steps:
        assert step["weight_sync/gloo/tensors"] > 0  # every parameter of the toy model, every step
