"""A preempted run resumes where it stopped: veRL's real trainer on the bundled default, EGSPO with expert rows.

Three runs of ``egspo_smoke`` (tiny batches, no validation), a checkpoint every 2 steps and
``trainer.resume_mode=auto``: an uninterrupted 5-step run; the same command killed hard during step 3 (the whole
process tree, as a preemption); the same command again, which resumes from step 2 and runs to step 5. The
killed-then-resumed run is compared with the uninterrupted one (README table in docs/resuming.md):

* the step counter: the resumed run trains steps 3, 4, 5; the metrics log holds steps 1..5, each exactly once;
* CHORD's ``mu`` of each step (a schedule that changes every step here) and the expert rows drawn at each step;
* the data order: the prompts of each step (veRL's rollout dumps, ``trainer.rollout_data_dir``);
* the actor weights and optimizer state of the step-2 checkpoint the resumed run loads, against the uninterrupted
  run's step-2 checkpoint.

EGSPO with expert rows exercises every piece of state the plugin's sync trainer has (ESPO's trainer path is the
same class with a subset of it: the step-level threshold of ``grouping=batch``, no expert rows, no ``mu``); ESPO
resuming on ``plugin_separate_async`` is ``test_e2e_separate_async.py``'s (the launch and kill helpers of both are in
``resume_runs.py``). The fast tests pin what the resume hooks expect of veRL (docs/verl_internals.md rows 27, 28):
the metrics log, and the submission step of the prompt groups an async run re-issues, which the plugin keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from resume_runs import DIGEST_LINE, adam_steps, checkpoint_digest, log, rollouts, run, train_steps

STEPS, SAVE_FREQ, KILL_AFTER = 5, 2, 2
OVERRIDES = [
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    f"trainer.save_freq={SAVE_FREQ}",
    "trainer.resume_mode=auto",
    # 4 prompts x 8 rollouts + 8 expert rows = 40 rows a step, one mini-batch, one epoch
    "data.train_batch_size=4",
    "data.expert.batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_epochs=1",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=20",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=20",
    # mu changes every step: 0.9 -> 0.1 over 4 steps (CHORD-mu's schedule, compressed)
    "actor_rollout_ref.actor.policy_loss.hybrid.mu_peak=0.9",
    "actor_rollout_ref.actor.policy_loss.hybrid.mu_valley=0.1",
    "actor_rollout_ref.actor.policy_loss.hybrid.mu_warmup_steps=0",
    "actor_rollout_ref.actor.policy_loss.hybrid.mu_decay_steps=4",
    # the rollout server logs a digest of the weights it receives at each sync (the first one after loading)
    "+actor_rollout_ref.rollout.engine_kwargs.hf.log_weight_digest=true",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from verl_espo.toy.assets import build_assets

    model = build_assets(tmp_path_factory.mktemp("model"))
    whole, resumed = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("resumed")
    assert run(whole, model, "egspo", STEPS, OVERRIDES) == 0, log(whole)[-4000:]
    assert run(resumed, model, "egspo", STEPS, OVERRIDES, kill_after_checkpoint=KILL_AFTER) == -9, log(resumed)[-4000:]
    killed_steps = sorted(train_steps(resumed))
    assert run(resumed, model, "egspo", STEPS, OVERRIDES) == 0, log(resumed)[-4000:]
    return whole, resumed, killed_steps


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_step_counter_and_metrics_log(runs):
    whole, resumed, killed_steps = runs
    assert killed_steps[-1] in (KILL_AFTER, KILL_AFTER + 1)  # killed during step 3 (its record not yet written)
    assert "Resuming from" in log(resumed)
    steps = train_steps(resumed)
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert all(len(records) == 1 for records in steps.values())  # each step exactly once


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_mu_and_expert_rows_of_each_step(runs):
    whole, resumed, _ = runs
    a, b = train_steps(whole), train_steps(resumed)
    mus = [a[s][0]["actor/hybrid/mu"] for s in range(1, STEPS + 1)]
    assert len(set(mus)) == STEPS  # the schedule changes every step
    assert mus == [b[s][0]["actor/hybrid/mu"] for s in range(1, STEPS + 1)]
    for step in range(1, STEPS + 1):
        assert rollouts(whole, step)[1] == rollouts(resumed, step)[1], f"expert rows of step {step}"
        assert len(rollouts(whole, step)[1]) == 8


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_data_order(runs):
    whole, resumed, _ = runs
    for step in range(1, STEPS + 1):
        assert rollouts(whole, step)[0] == rollouts(resumed, step)[0], f"prompts of step {step}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_weights_and_optimizer_state_after_loading(runs):
    """The weights the resumed run trains from are the step-2 checkpoint's, bit for bit (the digest the rollout
    server logs at the first sync after loading); the optimizer state continues (Adam's step count at step 4 is 4, as
    in the uninterrupted run, not 2). The weights are not compared with the uninterrupted run: the rollouts are
    sampled differently in each run (veRL's CPU sampling is not seeded per request), so the updates differ."""
    whole, resumed, _ = runs
    killed_log, _, resumed_log = log(resumed).partition("Resuming from")
    loaded = [d for step, d in DIGEST_LINE.findall(resumed_log) if int(step) == KILL_AFTER]
    assert loaded and loaded[0] == checkpoint_digest(resumed, KILL_AFTER)  # the resumed run's first sync
    # the killed run's sync at the end of step 2, where its Ray worker's line reached the log before the SIGKILL
    assert all(d == loaded[0] for step, d in DIGEST_LINE.findall(killed_log) if int(step) == KILL_AFTER)
    for out in (whole, resumed):
        assert adam_steps(out, 4) == {4.0}, out


def test_recipes_launcher_and_slurm_script_resume_after_a_requeue(tmp_path):
    """After a preemption SLURM reruns the same script and arguments (``--requeue``); ``verl_espo.recipes run`` then
    builds a command that resumes from the latest checkpoint (the recipes' ``trainer.resume_mode=auto``, no
    override), with a fresh metrics file so the first attempt's log stays."""
    from verl_espo import recipes

    repo = Path(__file__).parents[1]
    sbatch = (repo / "recipes" / "slurm.sbatch").read_text()
    assert "\n#SBATCH --requeue\n" in sbatch
    assert 'python -m verl_espo.recipes run "$RECIPE" --ray-address "$HEAD_IP:$PORT" "$@"' in sbatch
    for recipe in ("espo/qwen3_1.7b_base", "egspo/qwen2.5_7b_instruct"):
        cfg = recipes.compose_recipe(recipe, ["recipe.data_root=/d"])
        assert cfg.trainer.resume_mode == "auto" and int(cfg.trainer.save_freq) > 0, recipe
        first = recipes.plan_run(recipe, [], data_root="/d", out=tmp_path, check=False)
        checkpoints = first.run_dir / "checkpoints"
        (checkpoints / "global_step_6").mkdir(parents=True)
        (checkpoints / "latest_checkpointed_iteration.txt").write_text("6")
        (first.run_dir / "metrics-000.jsonl").write_text("")
        requeued = recipes.plan_run(recipe, [], data_root="/d", out=tmp_path, check=False)
        assert not any(arg.startswith("trainer.resume_mode=") for arg in requeued.command)
        assert f"trainer.default_local_dir={checkpoints}" in requeued.command
        assert any("global_step_6" in note and "resuming" in note for note in requeued.notes)
        assert requeued.env["VERL_FILE_LOGGER_PATH"] == str(first.run_dir / "metrics-001.jsonl")


def test_verl_file_logger_as_the_resume_hook_expects(tmp_path, monkeypatch):
    """docs/verl_internals.md row 27: veRL's file logger truncates its file on open and writes through ``fp``;
    ``kept_records`` / ``restore_records`` put a resumed run's earlier steps back."""
    from omegaconf import OmegaConf
    from verl.utils.tracking import FileLogger

    from verl_espo.trainer.resume import file_logger_path, kept_records, restore_records

    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    path = Path(file_logger_path("proj", "exp"))
    path.parent.mkdir(parents=True)
    lines = [json.dumps({"step": s, "data": {"x": s}}) for s in (1, 2, 3)]
    path.write_text("\n".join(lines) + '\n{"step": 4, "da')  # step 3 after the checkpoint, a line cut by the kill
    config = OmegaConf.create(
        {"trainer": {"logger": ["console", "file"], "project_name": "proj", "experiment_name": "exp"}}
    )
    kept = kept_records(config, resumed_step=2)
    assert kept_records(config, resumed_step=0) == []

    file_logger = FileLogger("proj", "exp")
    assert file_logger.filepath == str(path) and path.read_bytes() == b""  # veRL truncates on open
    restore_records(type("Tracking", (), {"logger": {"file": file_logger}})(), kept)
    file_logger.log({"x": 3}, step=3)
    file_logger.finish()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


class _FakeTransferQueue:
    """The TransferQueue calls of veRL's re-issue and the plugin's hook, on tags in a dict (tags merge on put)."""

    def __init__(self, tags: dict[str, dict]):
        self.tags = {"train": {k: dict(v) for k, v in tags.items()}}
        self.generated: list = []

    def kv_list(self, partition_id=None):
        return {pid: {k: dict(v) for k, v in items.items()} for pid, items in self.tags.items()}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        from tensordict import TensorDict

        return TensorDict({"uid": torch.arange(len(keys))}, batch_size=len(keys))

    def kv_clear(self, keys, partition_id):
        for key in [keys] if isinstance(keys, str) else keys:
            self.tags[partition_id].pop(key)

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        for key, tag in zip(keys, tags, strict=True):
            self.tags[partition_id].setdefault(key, {}).update(tag)

    def generate_sequences(self, batch):  # the agent loop manager's, where veRL sends the re-issued prompts
        tags = self.tags["train"]
        self.generated.append((len(batch), {k: tags[k]["global_steps"] for k in tags if tags[k].get("is_prompt")}))


def test_reissued_prompts_keep_the_step_they_were_submitted_in(monkeypatch):
    """docs/verl_internals.md row 28: resuming an async mode, veRL re-issues the checkpoint's pending and running
    prompt groups (clearing their partial trajectories) tagged with the resumed step, and its replay buffer takes
    the oldest tag first; the plugin's trainer puts back the step each was submitted in."""
    import inspect

    import transfer_queue
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from verl_espo.trainer.sync import PluginTrainerSeparateAsync, PluginTrainerSync

    tags = {
        "done": {"is_prompt": True, "status": "finished", "global_steps": 2},
        "done_0_0": {"status": "success", "global_steps": 2},
        "half": {"is_prompt": True, "status": "running", "global_steps": 2},
        "half_0_0": {"status": "success", "global_steps": 2},
        "older": {"is_prompt": True, "status": "pending", "global_steps": 1},
    }

    def resumed_trainer(cls):
        fake = _FakeTransferQueue(tags)
        for name in ("kv_list", "kv_batch_get", "kv_clear", "kv_batch_put"):
            monkeypatch.setattr(transfer_queue, name, getattr(fake, name))
        trainer = object.__new__(cls)
        trainer.global_steps = 3
        trainer.agent_loop_manager = fake  # records the re-issued batches
        return trainer, fake

    trainer, fake = resumed_trainer(PluginTrainerSeparateAsync)
    assert PPOTrainer._reissue_inflight_prompts(trainer) == 2  # veRL alone
    steps = {k: fake.tags["train"][k]["global_steps"] for k in ("done", "half", "older")}
    assert steps == {"done": 2, "half": 3, "older": 3}, "veRL no longer tags re-issued prompts with the resumed step"
    assert "half_0_0" not in fake.tags["train"] and len(fake.generated) == 1

    trainer, fake = resumed_trainer(PluginTrainerSeparateAsync)
    assert trainer._reissue_inflight_prompts() == 2
    after = fake.tags["train"]
    assert {k: after[k]["global_steps"] for k in ("done", "half", "older")} == {"done": 2, "half": 2, "older": 1}
    assert after["half"]["status"] == after["older"]["status"] == "pending" and "half_0_0" not in after
    # restored before the dispatch, so no rollout's status update can interleave with it
    assert fake.generated == [(2, {"done": 2, "half": 2, "older": 1})]
    assert trainer.agent_loop_manager is fake

    trainer, fake = resumed_trainer(PluginTrainerSync)  # the sync mode checkpoints no TransferQueue
    assert trainer._reissue_inflight_prompts() == 0 and fake.tags["train"] == tags

    reissue = inspect.getsource(PPOTrainer._reissue_inflight_prompts)  # tags first, then dispatches
    assert reissue.index("tq.kv_batch_put(") < reissue.index("self.agent_loop_manager.generate_sequences(batch)")
    fit = inspect.getsource(PPOTrainer.fit)  # re-issued on resume, before the first step submits its batch
    assert "self._reissue_inflight_prompts()" in fit
    assert fit.index("self._reissue_inflight_prompts()") < fit.index("self.on_train_begin()")
    buffer = ReplayBuffer("separate_async", {}, None, "drop", {})
    buffer.prompt_global_steps["train"] = {"new": 3, "old": 2}
    assert buffer._select_prompt_uids("train", {"new", "old"}, 1)[0] == ["old"]  # the oldest tag first
