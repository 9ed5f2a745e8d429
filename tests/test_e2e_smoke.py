"""End-to-end: veRL's real PPO trainer with ESPO on CPU (``python -m verl_espo.smoke espo``), plus fast
checks of the ``hf`` rollout backend's sampler.

The slow tests run the whole stack (Ray, TransferQueue, FSDP2 actor, the plugin's ``hf`` rollout and CPU
platform, reward, GRPO advantages, the ESPO loss through the ``plugin_sync`` trainer, weight sync after
every update, validation, an HF checkpoint) and check what each part must produce; one runs veRL's
``colocate_async`` mode with the trainer's step threshold. The learning run is ``test_e2e_learning.py``. The
GRPO and GSPO baseline configs (veRL's own losses on veRL's own trainer) are checked by composition. Deselect
the slow ones with ``-m "not slow"``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

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
# Max |p_rollout - p_actor| over response tokens: fp32 on both sides, same weights -> ~1e-6.
SYNC_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def espo_run(tmp_path_factory):
    from verl_espo.smoke import run_smoke

    out = tmp_path_factory.mktemp("espo_smoke")
    result = run_smoke(
        "espo",
        STEPS,
        out,
        overrides=[
            "trainer.save_freq=1",
            "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
            # One PPO mini-batch per step, seen twice: the second epoch is off-policy (so ESPO clips), and
            # the loss-side old entropy covers exactly the tokens of the trainer's `actor/entropy`.
            "data.train_batch_size=16",
            "actor_rollout_ref.actor.ppo_mini_batch_size=16",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=128",
            "actor_rollout_ref.actor.ppo_epochs=2",
        ],
        echo=False,
        timeout_s=900,
    )
    log = Path(result.out_dir, "train.log")
    assert result.ok, f"trainer exited with {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    return result


def _train_steps(result) -> list[dict]:
    return [s for s in result.steps if "timing_s/step" in s]


@pytest.mark.slow
def test_every_step_completes(espo_run):
    assert [s["step"] for s in _train_steps(espo_run)] == list(range(1, STEPS + 1))
    assert espo_run.summary["steps_completed"] == STEPS


@pytest.mark.slow
def test_espo_metrics_present_and_finite(espo_run):
    for step in _train_steps(espo_run):
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys(), sorted(espo)
        assert all(math.isfinite(v) for v in espo.values()), espo
        for key in ("critic/score/mean", "actor/entropy", "actor/pg_loss", "actor/grad_norm"):
            assert math.isfinite(step[key]), key


@pytest.mark.slow
def test_loss_side_old_entropy_matches_trainer_entropy(espo_run):
    # One PPO mini-batch per step (ppo_mini_batch_size = train_batch_size), so the loss-side aggregate of
    # the old entropy covers exactly the tokens the trainer's `actor/entropy` averages.
    for step in _train_steps(espo_run):
        assert step["actor/espo/old_entropy"] == pytest.approx(step["actor/entropy"], abs=1e-5)


@pytest.mark.slow
def test_espo_clips_off_policy_updates(espo_run):
    steps = _train_steps(espo_run)
    assert max(s["actor/pg_clipfrac"] for s in steps) > 0  # the second epoch is off-policy
    for s in steps:
        assert 0.0 <= s["actor/espo/grad_utilization"] <= 1.0
        assert s["actor/espo/high/eps_mean"] > 0
        assert s["actor/espo/high/token_frac"] + s["actor/espo/low/token_frac"] == pytest.approx(1.0)


@pytest.mark.slow
def test_rollout_weights_follow_every_update(espo_run):
    # The hf server's log-probs equal the actor's old log-probs at every step: the rollout generated with
    # the weights of the latest update (dummy-initialised at start, so the first sync is checked too).
    for step in _train_steps(espo_run):
        assert step["training/rollout_probs_diff_max"] < SYNC_TOLERANCE, step["step"]
    synced = re.findall(
        r"hf rollout: synced (\d+) tensors to replica 0 \(step (\d+)\)", Path(espo_run.out_dir, "train.log").read_text()
    )
    assert [int(s) for _, s in synced] == list(range(0, STEPS + 1))  # initial sync + one after every update
    assert len({n for n, _ in synced}) == 1


@pytest.mark.slow
def test_parameters_change_and_policy_moves_beyond_sync_tolerance(espo_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = Path(espo_run.out_dir)
    for step in _train_steps(espo_run):
        assert step["actor/grad_norm"] > 0
    paths = [out / "model"] + [out / f"checkpoints/global_step_{k}/actor/huggingface" for k in range(1, STEPS + 1)]
    weights = [load_file(p / "model.safetensors") for p in paths]
    for before, after in zip(weights, weights[1:]):
        assert all(torch.isfinite(t).all() for t in after.values())
        assert max((after[k].float() - before[k].float()).abs().max().item() for k in before) > 1e-5

    # Each update moves token probabilities by far more than SYNC_TOLERANCE, so a skipped weight sync would
    # have failed test_rollout_weights_follow_every_update.
    ids = torch.arange(3, 60).unsqueeze(0)
    probs = []
    for p in paths:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            probs.append(torch.softmax(model(ids).logits.float(), dim=-1))
    for before, after in zip(probs, probs[1:]):
        assert (after - before).abs().max().item() > 100 * SYNC_TOLERANCE


@pytest.mark.slow
def test_validation_metrics(espo_run):
    validated = [s for s in espo_run.steps if VAL_KEY in s]
    assert [s["step"] for s in validated] == [0, STEPS]  # val_before_train and test_freq = total steps
    assert all(0.0 <= s[VAL_KEY] <= 1.0 for s in validated)


# ----------------------------------------------------------------------------- other trainer modes, baselines
# Plumbing runs check wiring, not validation: no validation before, during or after training.
NO_VALIDATION = ["trainer.val_before_train=false", "trainer.test_freq=-1"]


@pytest.mark.slow
def test_colocate_async_mode_with_the_trainers_batch_threshold(tmp_path):
    """plugin_colocate_async (veRL's colocate_async trainer: partial rollouts, weights one step behind) with
    espo.grouping=batch: the trainer computes one entropy threshold over the step and ships it to the loss. The
    sync mode's loss-side checks hold, and the threshold splits the step's tokens 20 % / 80 %."""
    from verl_espo.smoke import run_smoke

    overrides = [
        "trainer.v1.trainer_mode=plugin_colocate_async",
        "actor_rollout_ref.actor.policy_loss.espo.grouping=batch",
        "data.train_batch_size=16",  # 128 responses: one mini-batch and one micro-batch per step
        "actor_rollout_ref.actor.ppo_mini_batch_size=16",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=128",
        *NO_VALIDATION,
    ]
    result = run_smoke("espo", 2, tmp_path / "espo_async", overrides=overrides, echo=False, timeout_s=900)
    assert result.ok, Path(result.out_dir, "train.log").read_text()[-5000:]
    steps = _train_steps(result)
    assert [s["step"] for s in steps] == [1, 2]
    for step in steps:
        espo = {k: v for k, v in step.items() if k.startswith("actor/espo/")}
        assert set(ESPO_KEYS) <= espo.keys() and all(math.isfinite(v) for v in espo.values())
        # one mini-batch per step: the loss saw exactly the old entropy the trainer computed
        assert step["actor/espo/old_entropy"] == pytest.approx(step["actor/entropy"], abs=1e-5)
        # The trainer's threshold reached the loss, and the micro-batch is the whole step: at least ceil(0.2 N)
        # tokens reach it (more only on ties, rare in fp32), so the high group holds 20 % of the step's tokens,
        # not 20 % of each response.
        assert step["actor/espo/entropy_threshold"] == pytest.approx(step["actor/step_entropy_threshold"], rel=1e-5)
        assert 0.2 <= step["actor/espo/high/token_frac"] < 0.25
    assert "'trainer_mode': 'plugin_colocate_async'" in Path(result.out_dir, "train.log").read_text()


@pytest.mark.parametrize("algo,loss_mode", [("grpo", "vanilla"), ("gspo", "gspo")])
def test_baseline_smoke_configs_are_the_espo_smoke_with_veRLs_own_loss_and_trainer(algo, loss_mode):
    """The GRPO and GSPO smoke configs run veRL's own loss on veRL's own `sync` trainer (nothing of the plugin
    but the CPU platform and the hf rollout, which every ESPO run exercises): they compose, pass veRL's driver
    checks, name a registered loss and trainer, and differ from the ESPO smoke config only in the algorithm."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from verl.trainer.main_ppo import validate_config
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
    from verl.utils.config import omega_conf_to_dataclass

    paths = ["actor_rollout_ref.model.path=/m", "data.train_files=/t", "data.val_files=/v"]
    configs = {}
    for name in (algo, "espo"):
        with initialize_config_module(config_module="verl_espo.config", version_base=None):
            configs[name] = OmegaConf.to_container(compose(config_name=f"{name}_smoke", overrides=paths))
    cfg = OmegaConf.create(configs[algo])
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == loss_mode
    assert cfg.trainer.v1.trainer_mode == "sync" and cfg.algorithm.adv_estimator == "grpo"
    get_trainer_cls("sync"), get_policy_loss_fn(loss_mode)  # registered in veRL
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    theirs, ours = dict(flat(configs[algo])), dict(flat(configs["espo"]))
    differ = {k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k)}
    actor = "actor_rollout_ref.actor."
    algorithm_keys = (f"{actor}policy_loss.", f"{actor}loss_agg_mode", f"{actor}clip_ratio_",
                      f"{actor}entropy_from_logits_with_chunking", "trainer.experiment_name",
                      "trainer.v1.trainer_mode")  # fmt: skip
    assert all(k.startswith(algorithm_keys) for k in differ), sorted(differ)


# ----------------------------------------------------------------------------- hf sampler (fast)
@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def _gen(model, prompts, spec, max_new=12, seed=0, eos=(1,)):
    from verl_espo.rollout.hf_generate import generate_batch

    generator = torch.Generator().manual_seed(seed)
    return generate_batch(
        model, prompts, [max_new] * len(prompts), spec,
        eos_token_ids=list(eos), pad_token_id=0, want_log_probs=True, generator=generator,
    )  # fmt: skip


def test_hf_log_probs_match_teacher_forcing(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec

    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]  # ragged: left padding must not change the result
    for spec in (SamplingSpec(temperature=0.7), SamplingSpec(temperature=0)):
        for prompt, out in zip(prompts, _gen(tiny_lm, prompts, spec)):
            assert out.token_ids and len(out.log_probs) == len(out.token_ids)
            ids = torch.tensor([prompt + out.token_ids])
            with torch.no_grad():
                logits = tiny_lm(ids).logits[0, len(prompt) - 1 : -1].float()
            temperature = spec.temperature if spec.temperature > 0 else 1.0
            ref = torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(out.log_probs), ref, atol=1e-5, rtol=0)
            if spec.temperature == 0:
                assert out.token_ids == logits.argmax(-1).tolist()[: len(out.token_ids)]


def test_hf_eos_cut_and_lengths(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec, generate_batch

    eos = 17
    outs = generate_batch(
        tiny_lm, [[5, 6], [7]], [3, 9], SamplingSpec(temperature=1.0), eos_token_ids=[eos], pad_token_id=0,
        want_log_probs=False, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert len(outs[0].token_ids) <= 3 and len(outs[1].token_ids) <= 9
    for out in outs:
        assert out.log_probs is None
        assert eos not in out.token_ids[:-1]
        assert (out.finish_reason == "stop") == (out.token_ids[-1] == eos)


def test_hf_top_k_one_is_greedy(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec

    greedy = _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=0))[0].token_ids
    for seed in range(3):
        assert _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=1.3, top_k=1), seed=seed)[0].token_ids == greedy
        assert _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=1.3, top_p=1e-6), seed=seed)[0].token_ids == greedy


def test_hf_top_p_keeps_the_nucleus():
    from verl_espo.rollout.hf_generate import SampleAndRecord, SamplingSpec

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = SampleAndRecord(SamplingSpec(top_p=0.7))._filter(logits)
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    kept = SampleAndRecord(SamplingSpec(top_k=3))._filter(logits)
    assert torch.isfinite(kept).tolist() == [[True, True, True, False]]
