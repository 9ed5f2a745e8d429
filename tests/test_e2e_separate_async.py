"""End-to-end: veRL's ``separate_async`` V1 trainer with ESPO on CPU (``trainer_mode=plugin_separate_async``), and
a preempted run of it resuming where it stopped.

``espo_smoke +smoke_mode=separate_async`` (an FSDP2 actor in one Ray resource pool, a standalone ``hf`` rollout
replica in another, weights shipped after every step through the plugin's ``gloo`` checkpoint engine, two actor
updates per step, the rollout one batch ahead) with ESPO's ``grouping=batch`` threshold, a checkpoint every step
and ``trainer.resume_mode=auto``, three times with the same command:

* ``whole``: 5 steps uninterrupted. Checks: every step completes; the ESPO metrics are present and the loss saw the
  trainer's old entropy and threshold; one threshold per actor update; the replica's weights after each sync are
  bit-identical to the actor's saved checkpoint of that step; the first step's two updates are scored under the
  synced initial weights (``pi_old``, kept by the plugin's snapshot worker on CPU).
* ``resumed``: killed hard (the whole process tree, as a preemption) during step 3, after the step-2 checkpoint,
  then started again, which resumes from step 2 and runs to step 5. Compared with ``whole`` (the table in
  docs/resuming.md): the step counter and the metrics log, the data order, the replica's weights before its first
  rollout after resuming, the optimizer state, and the ESPO threshold computed per update after resuming.

Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from resume_runs import DIGEST_LINE, adam_steps, checkpoint_digest, log, rollouts, run, train_steps

STEPS, KILL_AFTER = 5, 2
UPDATES_PER_STEP = 2  # trainer.v1.separate_async.parameter_sync_step in smoke_mode/separate_async.yaml
PROMPTS_PER_STEP = 16  # data.train_batch_size in smoke_mode/separate_async.yaml
OVERRIDES = [
    "+smoke_mode=separate_async",
    "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
    "trainer.save_freq=1",
    # what a resume loads, plus the Hugging Face weights the digest checks read
    "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
    "trainer.resume_mode=auto",
    "trainer.val_before_train=false",  # validation is the sync mode's test; keep this one short
    "trainer.test_freq=-1",
]
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
UPDATE_LINE = re.compile(r"verl_espo: step (\d+) update (\d+)/(\d+): (\d+) rows, entropy threshold (\S+)")
FIRST_REQUEST_LINE = re.compile(r"hf rollout: replica 0 first request, weights of step (\S+)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # the trainer runs start in the fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from verl_espo.toy.assets import build_assets

    return build_assets(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, model) -> Path:
    out = tmp_path_factory.mktemp("espo_separate_async")
    assert run(out, model, "espo", STEPS, OVERRIDES) == 0, "\n".join(log(out).splitlines()[-60:])
    return out


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, model, whole) -> tuple[Path, str]:
    """The killed-then-resumed run's directory and the latest checkpoint when it was killed."""
    out = tmp_path_factory.mktemp("espo_separate_async_resumed")
    assert run(out, model, "espo", STEPS, OVERRIDES, kill_after_checkpoint=KILL_AFTER) == -9, log(out)[-4000:]
    latest_when_killed = (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip()
    assert run(out, model, "espo", STEPS, OVERRIDES) == 0, "\n".join(log(out).splitlines()[-60:])
    return out, latest_when_killed


def _steps(out: Path) -> list[dict]:
    return [records[0] for _, records in sorted(train_steps(out).items())]


def _attempts(out: Path) -> tuple[str, str]:
    """The killed attempt's and the resumed attempt's part of ``train.log``."""
    text = log(out)
    start = text.index("Resuming from")
    start = text.rfind("\n", 0, start) + 1
    return text[:start], text[start:]


# ----------------------------------------------------------------------------- the uninterrupted run
def test_the_separate_async_trainer_ran_every_step(whole):
    assert sorted(train_steps(whole)) == list(range(1, STEPS + 1))
    text = log(whole)
    assert "'trainer_mode': 'plugin_separate_async'" in text and "'backend': 'gloo'" in text
    # a step whose responses all score alike has zero GRPO advantages and so a zero gradient: finite every step,
    # non-zero in some
    assert any(step["actor/grad_norm"] > 0 for step in _steps(whole))
    for step in _steps(whole):
        assert math.isfinite(step["actor/grad_norm"]) and math.isfinite(step["actor/pg_loss"])
        assert step["timing_s/update_weights"] > 0  # veRL's separate-async sync at the end of every step
        assert step["weight_sync/gloo/tensors"] > 0 and step["weight_sync/gloo/megabytes"] > 0


def _check_espo_metrics(step: dict) -> None:
    espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
    assert set(ESPO_KEYS) <= espo.keys(), sorted(espo)
    assert all(math.isfinite(v) for v in espo.values()), espo
    # One mini-batch per update and equal weights per update: both sides average the same per-update values.
    assert step["actor/espo/old_entropy"] == pytest.approx(step["actor/entropy"], abs=1e-5)
    assert step["actor/espo/entropy_threshold"] == pytest.approx(step["actor/step_entropy_threshold"], rel=1e-5)
    # The threshold was computed over exactly the update's tokens: >= ceil(0.2 N) of them reach it.
    assert 0.2 <= step["actor/espo/high/token_frac"] < 0.25


def test_espo_metrics_and_the_loss_saw_the_trainers_statistics(whole):
    for step in _steps(whole):
        _check_espo_metrics(step)


def test_one_threshold_per_actor_update(whole):
    lines = UPDATE_LINE.findall(log(whole))
    assert [(int(s), int(k), int(p)) for s, k, p, _, _ in lines] == [
        (s, k, UPDATES_PER_STEP) for s in range(1, STEPS + 1) for k in range(1, UPDATES_PER_STEP + 1)
    ]
    assert all(int(rows) == 8 * 8 and math.isfinite(float(t)) for _, _, _, rows, t in lines)  # 8 prompts x n=8


def test_rollout_weights_equal_the_actors_after_every_sync(whole, model):
    import torch
    from transformers import AutoModelForCausalLM

    from verl_espo.rollout.hf_server import weights_digest

    text = log(whole)
    digests = dict(DIGEST_LINE.findall(text))
    assert sorted(int(s) for s in digests) == list(range(0, STEPS + 1))  # the initial sync + one per step
    synced = re.findall(r"hf rollout: synced (\d+) tensors to replica 0 \(step (\d+)\)", text)
    assert [int(s) for _, s in synced] == list(range(0, STEPS + 1))
    paths = {0: model}  # the initial sync ships the weights the actor loaded
    paths |= {k: whole / f"checkpoints/global_step_{k}/actor/huggingface" for k in range(1, STEPS + 1)}
    for step, path in paths.items():
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        assert weights_digest(hf_model.state_dict()) == digests[str(step)], f"the rollout's weights differ at {step}"
    assert len(set(digests.values())) == STEPS + 1  # and every step changed them
    assert FIRST_REQUEST_LINE.findall(text) == ["0"]  # the replica's first rollout used the synced initial weights


def test_both_updates_of_the_first_step_are_scored_under_the_synced_initial_weights(whole):
    # All of step 1's samples come from the initial weights (no sync before its end), and both updates compute
    # their old log-probs under pi_old, the weights of that sync: restored for the second update. A missing
    # initial sync, or a pi_old that followed the first update, would put the max gap far above the tolerance.
    assert _steps(whole)[0]["training/rollout_probs_diff_max"] < SYNC_TOLERANCE


# ----------------------------------------------------------------------------- killed and resumed
def test_resume_step_counter_and_metrics_log(resumed):
    out, latest_when_killed = resumed
    assert latest_when_killed == str(KILL_AFTER)  # killed during step 3: its checkpoint was not written
    killed, again = _attempts(out)
    assert max(int(s) for s, *_ in UPDATE_LINE.findall(killed)) in (KILL_AFTER, KILL_AFTER + 1)
    assert f"global_step_{KILL_AFTER}, setting global step to {KILL_AFTER}" in again
    steps = train_steps(out)
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert all(len(records) == 1 for records in steps.values())  # each step exactly once
    assert [s["training/global_step"] for s in _steps(out)] == list(range(1, STEPS + 1))


def test_resume_data_order(whole, resumed):
    """Each step trains the prompts submitted one step earlier (the rollout runs one batch ahead). At the step-2
    checkpoint the dataloader has handed out step 3's prompts as well; veRL checkpoints them with the TransferQueue
    (``transfer_queue/`` in the checkpoint: finished groups kept, pending or running ones re-issued), so the resumed
    run adds no warm-up batch: no prompt is skipped or trained twice. The plugin's trainer keeps each re-issued
    group's submission step (``verl_espo/trainer/resume.py``), so the replay buffer still takes them before the batch
    the resumed step 3 submits. Re-issued groups are generated again from the start, alongside that batch: which of
    the two finishes first, and so goes into step 3 rather than step 4, is a matter of timing (as in an uninterrupted
    run whose rollout is slower than its training); steps 3 and 4 together train the same prompts, and step by step
    when no group was in flight at the checkpoint. Steps 1 and 2 both train prompts submitted in step 1 (the warm-up
    batch and step 1's own), which the replay buffer orders arbitrarily among equals: their split between steps 1
    and 2 differs from run to run (between two uninterrupted runs as well), their union does not."""
    out, _ = resumed
    _, again = _attempts(out)
    assert f"Restored {PROMPTS_PER_STEP} training prompt groups from TransferQueue" in again
    assert "Skipping async warmup" in again and "warmup prompts after restoring" not in again
    reissued = re.findall(r"Re-issued (\d+) in-flight prompts for step", again)  # none when all had finished
    kept = re.findall(r"verl_espo: (\d+) re-issued prompt groups keep the step they were submitted in", again)
    assert kept == reissued

    def prompts(run_dir: Path, *steps: int) -> list[str]:
        return sorted(p for step in steps for p in rollouts(run_dir, step)[0])

    assert len(prompts(whole, 1, 2)) == 2 * PROMPTS_PER_STEP * 8  # x rollout.n
    groups = [(1, 2), (3, 4), (5,)] if reissued else [(1, 2), (3,), (4,), (5,)]
    for steps in groups:
        assert prompts(whole, *steps) == prompts(out, *steps), f"prompts of steps {steps}"


def test_resume_the_replica_gets_the_resumed_weights_before_its_first_rollout(resumed):
    """The resumed attempt's replica is a new process: its first sync ships the step-2 checkpoint's weights
    (veRL's ``on_init_end``, before ``fit``), bit for bit the killed run's at its step-2 sync, and its first
    request is served with them."""
    out, _ = resumed
    killed, again = _attempts(out)
    digest = checkpoint_digest(out, KILL_AFTER)
    assert dict(DIGEST_LINE.findall(killed))[str(KILL_AFTER)] == digest
    synced = DIGEST_LINE.findall(again)
    assert [int(s) for s, _ in synced] == list(range(KILL_AFTER, STEPS + 1))
    assert synced[0][1] == digest
    assert FIRST_REQUEST_LINE.findall(killed) == ["0"] and FIRST_REQUEST_LINE.findall(again) == [str(KILL_AFTER)]
    replica_lines = [line for line in again.splitlines() if DIGEST_LINE.search(line) or FIRST_REQUEST_LINE.search(line)]
    assert DIGEST_LINE.search(replica_lines[0]) and FIRST_REQUEST_LINE.search(replica_lines[1])


def test_resume_optimizer_state_continues(whole, resumed):
    """Adam's step count: 2 updates a step, so 4 at step 2 and 8 at step 4, in the resumed run too (4 had it
    started afresh)."""
    out, _ = resumed
    assert adam_steps(out, KILL_AFTER) == {2.0 * UPDATES_PER_STEP}
    for run_dir in (whole, out):
        assert adam_steps(run_dir, 4) == {4.0 * UPDATES_PER_STEP}, run_dir


def test_resume_espo_threshold_per_update(resumed):
    """After resuming, each actor update computes its own threshold over its own batch (one line per update), the
    step's metric is their mean, and the loss saw it."""
    out, _ = resumed
    _, again = _attempts(out)
    lines = UPDATE_LINE.findall(again)
    assert [(int(s), int(k)) for s, k, *_ in lines] == [
        (s, k) for s in range(KILL_AFTER + 1, STEPS + 1) for k in range(1, UPDATES_PER_STEP + 1)
    ]
    steps = train_steps(out)
    for step in range(KILL_AFTER + 1, STEPS + 1):
        thresholds = [float(t) for s, _, _, _, t in lines if int(s) == step]
        assert all(math.isfinite(t) for t in thresholds)
        metrics = steps[step][0]
        assert metrics["actor/step_entropy_threshold"] == pytest.approx(sum(thresholds) / len(thresholds), rel=1e-4)
        _check_espo_metrics(metrics)
