"""End-to-end: veRL's ``separate_async`` V1 trainer with ESPO on CPU (``trainer_mode=plugin_separate_async``).

One 3-step run of ``python -m verl_espo.smoke espo +smoke_mode=separate_async`` (an FSDP2 actor in one Ray
resource pool, a standalone ``hf`` rollout replica in another, weights shipped after every step through the
plugin's ``gloo`` checkpoint engine, two actor updates per step, the rollout one batch ahead) with ESPO's
``grouping=batch`` threshold. Checks: every step completes; the ESPO metrics are present and the loss saw the
trainer's old entropy and threshold; one threshold per actor update; the replica's weights after each sync are
bit-identical to the actor's saved checkpoint of that step; the first step's two updates are scored under the
synced initial weights (``pi_old``, kept by the plugin's snapshot worker on CPU). Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

STEPS = 3
UPDATES_PER_STEP = 2  # trainer.v1.separate_async.parameter_sync_step in smoke_mode/separate_async.yaml
ESPO_KEYS = (
    "actor/espo/old_entropy",
    "actor/espo/entropy_threshold",
    "actor/espo/high/clipfrac_upper",
    "actor/espo/low/clipfrac_lower",
    "actor/espo/high/token_frac",
    "actor/espo/num_groups_mean",
)
# Max |p_rollout - p_actor| over response tokens: fp32 on both sides, same weights -> ~1e-6.
SYNC_TOLERANCE = 1e-4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from verl_espo.smoke import run_smoke

    out = tmp_path_factory.mktemp("espo_separate_async")
    result = run_smoke(
        "espo",
        STEPS,
        out,
        overrides=[
            "+smoke_mode=separate_async",
            "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
            "trainer.save_freq=1",
            "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
            "trainer.val_before_train=false",  # validation is the sync mode's test; keep this one short
        ],
        echo=False,
        timeout_s=900,
    )
    log = Path(result.out_dir, "train.log")
    assert result.ok, f"trainer exited with {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    result.log = log.read_text()
    return result


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def test_the_separate_async_trainer_ran_every_step(run):
    assert [s["step"] for s in _train_steps(run)] == list(range(1, STEPS + 1))
    assert "'trainer_mode': 'plugin_separate_async'" in run.log and "'backend': 'gloo'" in run.log
    # a step whose responses all score alike has zero GRPO advantages and so a zero gradient: finite every step,
    # non-zero in some
    assert any(step["actor/grad_norm"] > 0 for step in _train_steps(run))
    for step in _train_steps(run):
        assert math.isfinite(step["actor/grad_norm"]) and math.isfinite(step["actor/pg_loss"])
        assert step["timing_s/update_weights"] > 0  # veRL's separate-async sync at the end of every step
        assert step["weight_sync/gloo/tensors"] > 0 and step["weight_sync/gloo/megabytes"] > 0


def test_espo_metrics_and_the_loss_saw_the_trainers_statistics(run):
    for step in _train_steps(run):
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys(), sorted(espo)
        assert all(math.isfinite(v) for v in espo.values()), espo
        # One mini-batch per update and equal weights per update: both sides average the same per-update values.
        assert step["actor/espo/old_entropy"] == pytest.approx(step["actor/entropy"], abs=1e-5)
        assert step["actor/espo/entropy_threshold"] == pytest.approx(step["actor/step_entropy_threshold"], rel=1e-5)
        # The threshold was computed over exactly the update's tokens: >= ceil(0.2 N) of them reach it.
        assert 0.2 <= step["actor/espo/high/token_frac"] < 0.25


def test_one_threshold_per_actor_update(run):
    lines = re.findall(r"verl_espo: step (\d+) update (\d+)/(\d+): (\d+) rows, entropy threshold (\S+)", run.log)
    assert [(int(s), int(k), int(p)) for s, k, p, _, _ in lines] == [
        (s, k, UPDATES_PER_STEP) for s in range(1, STEPS + 1) for k in range(1, UPDATES_PER_STEP + 1)
    ]
    assert all(int(rows) == 8 * 8 and math.isfinite(float(t)) for _, _, _, rows, t in lines)  # 8 prompts x n=8


def test_rollout_weights_equal_the_actors_after_every_sync(run):
    import torch
    from transformers import AutoModelForCausalLM

    from verl_espo.rollout.hf_server import weights_digest

    digests = dict(re.findall(r"hf rollout: replica 0 weights at step (\d+): sha256 ([0-9a-f]{64})", run.log))
    assert sorted(int(s) for s in digests) == list(range(0, STEPS + 1))  # the initial sync + one per step
    synced = re.findall(r"hf rollout: synced (\d+) tensors to replica 0 \(step (\d+)\)", run.log)
    assert [int(s) for _, s in synced] == list(range(0, STEPS + 1))
    out = Path(run.out_dir)
    paths = {0: out / "model"}  # the initial sync ships the weights the actor loaded
    paths |= {k: out / f"checkpoints/global_step_{k}/actor/huggingface" for k in range(1, STEPS + 1)}
    for step, path in paths.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        assert weights_digest(model.state_dict()) == digests[str(step)], f"the rollout's weights differ at step {step}"
    assert len(set(digests.values())) == STEPS + 1  # and every step changed them


def test_both_updates_of_the_first_step_are_scored_under_the_synced_initial_weights(run):
    # All of step 1's samples come from the initial weights (no sync before its end), and both updates compute
    # their old log-probs under pi_old, the weights of that sync: restored for the second update. A missing
    # initial sync, or a pi_old that followed the first update, would put the max gap far above the tolerance.
    first = _train_steps(run)[0]
    assert first["training/rollout_probs_diff_max"] < SYNC_TOLERANCE
