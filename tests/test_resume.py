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

EGSPO with expert rows exercises every piece of state the plugin's trainer has (ESPO's trainer path is the same
class with a subset of it: the step-level threshold of ``grouping=batch``, no expert rows, no ``mu``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

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


def _launch(out: Path, model: Path) -> subprocess.Popen:
    from verl_espo.runner import trainer_env
    from verl_espo.smoke import _command
    from verl_espo.toy.task import write_dataset, write_expert_dataset

    train, val = write_dataset(out / "data")
    expert, _ = write_expert_dataset(out / "data")
    overrides = [f"data.expert.files=[{expert}]", f"trainer.rollout_data_dir={out / 'rollouts'}", *OVERRIDES]
    cmd = _command("egspo", out, model, train, val, STEPS, overrides)
    log = open(out / "train.log", "ab")
    env = trainer_env(out / "metrics.jsonl", cpu=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out, start_new_session=True)


def _records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def _kill_tree(proc: subprocess.Popen) -> None:
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


def _run(out: Path, model: Path, timeout_s: float = 900, kill_after_checkpoint: int | None = None) -> int:
    proc = _launch(out, model)
    deadline = time.time() + timeout_s
    try:
        while proc.poll() is None:
            if time.time() > deadline:
                raise TimeoutError(f"trainer in {out} ran past {timeout_s} s")
            if kill_after_checkpoint is not None:
                marker = out / "checkpoints" / "latest_checkpointed_iteration.txt"
                logged = {r["step"] for r in _records(out) if "timing_s/step" in r.get("data", {})}
                if (
                    marker.exists()
                    and marker.read_text().strip() == str(kill_after_checkpoint)
                    and (kill_after_checkpoint in logged)
                ):
                    _kill_tree(proc)  # during step kill_after_checkpoint + 1
                    return -9
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    return proc.returncode


def _steps(out: Path) -> dict[int, list[dict]]:
    by_step: dict[int, list[dict]] = {}
    for r in _records(out):
        if "timing_s/step" in r["data"]:
            by_step.setdefault(r["step"], []).append(r["data"])
    return by_step


def _rollouts(out: Path, step: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted prompts of the step's rollout rows, sorted (prompt, response) of its expert rows)."""
    rows = [json.loads(line) for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
    expert = sorted((r["input"], r["output"]) for r in rows if str(r.get("uid", "")).startswith("expert-"))
    prompts = sorted(r["input"] for r in rows if not str(r.get("uid", "")).startswith("expert-"))
    return prompts, expert


def _checkpoint_tensors(out: Path, step: int) -> dict[str, torch.Tensor]:
    actor = out / "checkpoints" / f"global_step_{step}" / "actor"
    tensors = {}
    for path in sorted(actor.glob("*.pt")):
        if path.name.startswith(("model_", "optim_")):
            state = torch.load(path, map_location="cpu", weights_only=False)
            flat = state.get("state", state) if path.name.startswith("optim_") else state
            for key, value in _flatten(flat, path.name.split("_")[0]).items():
                tensors[key] = value
    return tensors


def _flatten(obj, prefix: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj.full_tensor() if hasattr(obj, "full_tensor") else obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from verl_espo.toy.assets import build_assets

    model = build_assets(tmp_path_factory.mktemp("model"))
    whole, resumed = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("resumed")
    assert _run(whole, model) == 0, (whole / "train.log").read_text()[-4000:]
    assert _run(resumed, model, kill_after_checkpoint=KILL_AFTER) == -9, (resumed / "train.log").read_text()[-4000:]
    killed_steps = sorted(_steps(resumed))
    assert _run(resumed, model) == 0, (resumed / "train.log").read_text()[-4000:]
    return whole, resumed, killed_steps


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_step_counter_and_metrics_log(runs):
    whole, resumed, killed_steps = runs
    assert killed_steps[-1] in (KILL_AFTER, KILL_AFTER + 1)  # killed during step 3 (its record not yet written)
    assert "Resuming from" in (resumed / "train.log").read_text()
    steps = _steps(resumed)
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert all(len(records) == 1 for records in steps.values())  # each step exactly once


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_mu_and_expert_rows_of_each_step(runs):
    whole, resumed, _ = runs
    a, b = _steps(whole), _steps(resumed)
    mus = [a[s][0]["actor/hybrid/mu"] for s in range(1, STEPS + 1)]
    assert len(set(mus)) == STEPS  # the schedule changes every step
    assert mus == [b[s][0]["actor/hybrid/mu"] for s in range(1, STEPS + 1)]
    for step in range(1, STEPS + 1):
        assert _rollouts(whole, step)[1] == _rollouts(resumed, step)[1], f"expert rows of step {step}"
        assert len(_rollouts(whole, step)[1]) == 8


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_data_order(runs):
    whole, resumed, _ = runs
    for step in range(1, STEPS + 1):
        assert _rollouts(whole, step)[0] == _rollouts(resumed, step)[0], f"prompts of step {step}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's three trainer runs start in the first test's setup
def test_weights_and_optimizer_state_after_loading(runs):
    """The weights the resumed run trains from are the step-2 checkpoint's, bit for bit (the digest the rollout
    server logs at the first sync after loading); the optimizer state continues (Adam's step count at step 4 is 4, as
    in the uninterrupted run, not 2). The weights are not compared with the uninterrupted run: the rollouts are
    sampled differently in each run (veRL's CPU sampling is not seeded per request), so the updates differ."""
    whole, resumed, _ = runs
    digests = re.findall(r"hf rollout: replica 0 weights at step (\d+): sha256 ([0-9a-f]{64})", _log(resumed))
    after_loading = [d for step, d in digests if int(step) == KILL_AFTER]
    assert len(after_loading) == 2  # the killed run's sync at the end of step 2, the resumed run's after loading
    assert after_loading[0] == after_loading[1] == _checkpoint_digest(resumed, KILL_AFTER)
    for out in (whole, resumed):
        steps = {
            float(v) for k, v in _checkpoint_tensors(out, 4).items() if k.startswith("optim") and k.endswith(".step")
        }
        assert steps == {4.0}, (out, steps)


def _log(out: Path) -> str:
    return (out / "train.log").read_text(errors="replace")


def _checkpoint_digest(out: Path, step: int) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM

    from verl_espo.rollout.hf_server import weights_digest

    config = AutoConfig.from_pretrained(out / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    state = {k.removeprefix("model."): v for k, v in _checkpoint_tensors(out, step).items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    return weights_digest(model.state_dict())


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
