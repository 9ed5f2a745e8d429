"""EGSPO stage 1 (the SFT warm-up on veRL's SFT trainer) and the chain into the RL stage (``verl_espo.stages``).

Fast tests: the SFT configs compose on ``pkg://verl_espo.config`` into veRL's own config dataclasses, veRL's SFT
dataset reads the toy demonstrations under the CPU config with the loss on the assistant turn only, the chain
builds commands whose overrides compose, and finds, completes and hands over the SFT weights. The slow test runs
stage 1 with ``torchrun`` on CPU and checks what the RL stage will load.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
import verl  # noqa: F401  (loads the plugin: CPU platform, registrations)
from hydra import compose, initialize_config_module
from verl.utils.config import omega_conf_to_dataclass

from verl_espo import stages
from verl_espo.toy.assets import build_assets, build_tokenizer
from verl_espo.toy.task import expert_response, sample_problems, write_expert_dataset


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        return compose(config_name=name, overrides=overrides)


def overrides_of(cmd: list[str]) -> list[str]:
    """The Hydra overrides of a launch command: everything after ``--config-name=...``."""
    i = next(i for i, arg in enumerate(cmd) if arg.startswith("--config-name="))
    return cmd[i + 1 :]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The toy tokenizer and a random tiny Qwen2 (no warm-up: a few seconds)."""
    return build_assets(tmp_path_factory.mktemp("base"), warmup_steps=0)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> tuple[Path, Path]:
    return write_expert_dataset(tmp_path_factory.mktemp("data"), n=64)


# ----------------------------------------------------------------------------- configs
def test_sft_config_composes_with_chord_settings():
    cfg = compose_cfg("egspo_sft", ["model.path=/m", "data.train_files=/d.parquet"])
    ckpt = omega_conf_to_dataclass(cfg.checkpoint)
    assert "hf_model" in ckpt.save_contents  # Hugging Face weights for the RL stage
    assert ckpt.load_contents == ["model", "optimizer", "extra"]  # set explicitly, not interpolated
    optim = omega_conf_to_dataclass(cfg.optim)
    assert optim.lr in (1e-6, 5e-6, 1e-5)  # CHORD's grid
    assert optim.betas == [0.9, 0.999] and optim.lr_scheduler_type == "cosine"
    assert 1 <= cfg.trainer.total_epochs <= 3  # CHORD: at most 3 epochs
    assert cfg.data.train_batch_size == 64  # CHORD math SFT batch
    assert cfg.data.messages_key == "messages"
    assert cfg.data.max_token_len_per_gpu >= cfg.data.max_length  # veRL asserts it for dynamic batches
    assert cfg.trainer.save_freq == "after_each_epoch"
    omega_conf_to_dataclass(cfg.engine)  # veRL's own dataclasses accept the rest
    omega_conf_to_dataclass(cfg.profiler)


def test_sft_config_defaults_to_chord_model_and_data():
    cfg = compose_cfg("egspo_sft", [])
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct"  # CHORD's policy
    assert cfg.data.train_files == "~/data/openr1_math/sft.parquet"  # python -m verl_espo.data openr1_math --out ~/data


def test_cpu_config_composes_for_the_tiny_model(tiny_model):
    cfg = compose_cfg("egspo_sft_smoke", [f"model.path={tiny_model}", "data.train_files=/d.parquet"])
    engine = omega_conf_to_dataclass(cfg.engine)
    assert engine.strategy == "fsdp2" and engine.model_dtype == "fp32" and not engine.use_torch_compile
    assert engine.mixed_precision == {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
    model = omega_conf_to_dataclass(cfg.model)  # loads the tiny model's HF config and tokenizer
    assert not model.use_remove_padding and model.override_config["attn_implementation"] == "eager"
    assert cfg.trainer.device == "cpu" and cfg.trainer.resume_mode == "disable"
    assert cfg.data.num_workers == 0
    assert cfg.checkpoint.save_contents == ["model", "optimizer", "extra", "hf_model"]  # inherited


def test_sft_dataset_reads_toy_demonstrations_with_loss_on_the_answer(tiny_model, toy_data):
    """veRL's MultiTurnSFTDataset under the CPU config: every row fits, the loss covers the assistant turn only."""
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    _, sft_parquet = toy_data
    cfg = compose_cfg("egspo_sft_smoke", [f"model.path={tiny_model}", f"data.train_files={sft_parquet}"])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    dataset = MultiTurnSFTDataset(str(sft_parquet), tokenizer, cfg.data)
    problems = sample_problems(64, seed=100)  # write_expert_dataset's draw
    assert len(dataset) == len(problems)
    for i in (0, 1, 63):
        item = dataset[i]
        ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": problems[i].prompt}], tokenize=False, add_generation_prompt=True
        )
        answer = expert_response(problems[i]) + "<|im_end|>\n"
        assert tokenizer.decode(ids) == prompt + answer
        assert len(ids) <= cfg.data.max_length
        trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        assert trained == answer  # the answer and the end of turn; none of the prompt


# ----------------------------------------------------------------------------- commands
CLUSTER_ARGS = [
    "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpus", "8", "--out", "/runs/egspo",
    "--sft-files", "/d/openr1_math/sft.parquet",
    "--train-files", "/d/openr1_math/train.parquet", "--val-files", "/d/math500/test.parquet", "/d/aime24/test.parquet",
    "--expert-files", "/d/openr1_math/train.parquet",
    "--sft-override", "optim.lr=5e-6", "--rl-override", "trainer.total_training_steps=500",
]  # fmt: skip


def test_sft_command_is_torchrun_on_the_plugin_config():
    cmd = stages.sft_command("Qwen/Q", ["/d/a.parquet", "/d/b.parquet"], "/runs/sft", nproc=8, overrides=["x=1"])
    i = cmd.index("-m")
    assert Path(cmd[0]).name == "torchrun" or cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=8" in cmd[:i] and "--standalone" in cmd[:i]
    assert cmd[i + 1] == "verl.trainer.sft_trainer"
    assert cmd[i + 2 : i + 4] == ["--config-path=pkg://verl_espo.config", "--config-name=egspo_sft"]
    assert overrides_of(cmd) == [
        "model.path=Qwen/Q",
        "data.train_files=[/d/a.parquet,/d/b.parquet]",
        "trainer.default_local_dir=/runs/sft",
        "x=1",
    ]
    with pytest.raises(ValueError, match="--gpus"):
        stages.sft_command("m", ["/d.parquet"], "/o", nproc=0)


def test_rl_command_starts_from_the_sft_weights():
    hf = "/runs/sft/global_step_234/huggingface"
    cmd = stages.rl_command(hf, ["/t.parquet"], ["/v.parquet"], "/runs/rl", gpus=4, expert_files=["/e.parquet"])
    assert cmd[1:5] == [
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://verl_espo.config",
        "--config-name=egspo_trainer",
    ]
    assert overrides_of(cmd) == [
        f"actor_rollout_ref.model.path={hf}",
        "data.train_files=/t.parquet",
        "data.val_files=/v.parquet",
        "data.expert.files=[/e.parquet]",
        "actor_rollout_ref.rollout.name=vllm",
        "trainer.n_gpus_per_node=4",
        "trainer.nnodes=1",
        "trainer.default_local_dir=/runs/rl",
    ]
    pure_rl = stages.rl_command(hf, ["/t.parquet"], ["/v.parquet"], "/runs/rl", gpus=4)
    assert not any(arg.startswith("data.expert.files=") for arg in pure_rl)


def test_cluster_commands_compose(capsys):
    """What the chain prints for a GPU node is valid for both configs (every override names an existing key)."""
    assert stages.main(CLUSTER_ARGS + ["--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    sft_cmd, sft_hf, rl_cmd = shlex.split(lines[0]), lines[1], shlex.split(lines[2])
    assert "--nproc_per_node=8" in sft_cmd
    latest = "$(cat /runs/egspo/sft/latest_checkpointed_iteration.txt)"
    assert sft_hf == f"SFT_HF=/runs/egspo/sft/global_step_{latest}/huggingface"
    assert "actor_rollout_ref.model.path=$SFT_HF" in rl_cmd  # shlex.split drops the quotes

    sft = compose_cfg("egspo_sft", overrides_of(sft_cmd))
    assert sft.model.path == "Qwen/Qwen2.5-7B-Instruct" and sft.optim.lr == 5e-6
    assert sft.trainer.default_local_dir == "/runs/egspo/sft"
    rl_overrides = [o.replace("$SFT_HF", "/runs/egspo/sft/global_step_9/huggingface") for o in overrides_of(rl_cmd)]
    rl = compose_cfg("egspo_trainer", rl_overrides)
    assert rl.actor_rollout_ref.model.path == "/runs/egspo/sft/global_step_9/huggingface"
    assert list(rl.data.val_files) == ["/d/math500/test.parquet", "/d/aime24/test.parquet"]
    assert list(rl.data.expert.files) == ["/d/openr1_math/train.parquet"]
    assert rl.trainer.n_gpus_per_node == 8 and rl.trainer.total_training_steps == 500
    assert rl.actor_rollout_ref.actor.policy_loss.loss_mode == "egspo"


def test_dry_run_with_chosen_sft_step_and_skipped_stage_1(capsys):
    argv = [a for a in CLUSTER_ARGS if a != "/d/openr1_math/sft.parquet" and a != "--sft-files"]
    assert stages.main(argv + ["--skip-sft", "--sft-step", "78", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sft_trainer" not in out  # stage 1 skipped
    assert "SFT_HF=/runs/egspo/sft/global_step_78/huggingface" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--gpus", "8"], "--model, --train-files, --val-files, --sft-files required"),
        (["--cpu-smoke", "--dry-run"], "--cpu-smoke builds its own model"),
        (["--cpu-smoke", "--rl-steps", "-1"], "--rl-steps must be >= 0"),
    ],
)
def test_bad_arguments_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        stages.main(argv)
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- the hand-over
def _fake_checkpoint(sft_dir: Path, step: int, weights: bool = True) -> Path:
    hf = sft_dir / f"global_step_{step}" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    if weights:
        (hf / "model.safetensors").write_bytes(b"")
    return hf


def test_find_hf_weights_follows_verl_latest_file(tmp_path):
    early, late = _fake_checkpoint(tmp_path, 78), _fake_checkpoint(tmp_path, 156)
    assert stages.find_hf_weights(tmp_path) == late  # highest step without the tracker file
    (tmp_path / stages.LATEST_FILE).write_text("78")  # veRL's tracker wins
    assert stages.find_hf_weights(tmp_path) == early
    assert stages.find_hf_weights(tmp_path, step=156) == late


def test_find_hf_weights_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run stage 1 first"):
        stages.find_hf_weights(tmp_path)
    _fake_checkpoint(tmp_path, 5, weights=False)
    with pytest.raises(FileNotFoundError, match=r"save_contents=\[model,optimizer,extra,hf_model\]"):
        stages.find_hf_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="global_step_7"):
        stages.find_hf_weights(tmp_path, step=7)


def test_ensure_tokenizer_copies_only_when_missing(tmp_path):
    from transformers import AutoTokenizer

    base, hf = tmp_path / "base", tmp_path / "hf"
    hf.mkdir()
    build_tokenizer(base)
    assert stages.ensure_tokenizer(hf, base) is True
    copied, original = AutoTokenizer.from_pretrained(str(hf)), AutoTokenizer.from_pretrained(str(base))
    text = [{"role": "user", "content": "3+4="}]
    assert copied.apply_chat_template(text, tokenize=True) == original.apply_chat_template(text, tokenize=True)
    assert stages.ensure_tokenizer(hf, "/nonexistent") is False  # present: untouched, base never read


def test_read_sft_losses_orders_by_step_and_skips_validation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [
        {"step": 2, "data": {"train/loss": 0.5, "train/lr": 1e-3}},
        {"step": 1, "data": {"train/loss": 0.9}},
        {"step": 2, "data": {"val/loss": 0.7}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert stages.read_sft_losses(path) == [0.9, 0.5]
    assert stages.read_sft_losses(tmp_path / "absent.jsonl") == []


def test_cpu_smoke_hands_the_sft_weights_to_the_egspo_run(tmp_path, monkeypatch):
    import verl_espo.smoke as smoke

    hf = tmp_path / "sft" / "global_step_32" / "huggingface"
    calls = {}

    def fake_sft(out, overrides, echo):
        calls["sft"] = (Path(out), list(overrides))
        return stages.SFTResult(0, str(tmp_path / "sft"), str(tmp_path / "base"), str(hf), [1.0, 0.5])

    def fake_smoke(algo, steps, out_dir, overrides, *, model_dir, echo):
        calls["rl"] = (algo, steps, Path(out_dir), overrides, model_dir)
        return smoke.SmokeResult(algo, str(out_dir), 0, 1.0, summary={"returncode": 0, "steps_completed": steps})

    monkeypatch.setattr(stages, "run_cpu_sft", fake_sft)
    monkeypatch.setattr(smoke, "run_smoke", fake_smoke)
    summary = stages.run_cpu_smoke(tmp_path, 2, ["optim.lr=1e-2"], ["trainer.test_freq=1"], echo=False)
    assert calls["sft"] == (tmp_path, ["optim.lr=1e-2"])
    assert calls["rl"] == ("egspo", 2, tmp_path / "rl", ["trainer.test_freq=1"], str(hf))
    assert summary["sft"]["hf_dir"] == str(hf) and summary["rl"]["steps_completed"] == 2
    assert json.loads((tmp_path / "stages.json").read_text()) == summary


# ----------------------------------------------------------------------------- stage 1, end to end
def _assistant_nll(model, tokenizer, messages: list) -> float:
    """Token-mean NLL of the assistant turns (answer + end of turn), computed with plain transformers."""
    total, count = 0.0, 0
    for conversation in messages:
        user, assistant = list(conversation)
        prompt = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + assistant["content"] + "<|im_end|>\n")["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        total += nll[len(prompt_ids) - 1 :].sum().item()
        count += len(ids) - len(prompt_ids)
    return total / count


@pytest.mark.slow
def test_stage_1_on_cpu_writes_loadable_trained_weights(tmp_path, tiny_model):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = 6
    result = stages.run_cpu_sft(tmp_path, [f"trainer.total_training_steps={steps}"], model_dir=tiny_model, echo=False)
    log = Path(result.sft_dir, "train.log")
    assert result.ok, f"exit code {result.returncode}:\n" + "\n".join(log.read_text().splitlines()[-60:])
    hf = Path(result.hf_dir)
    assert hf == tmp_path / "sft" / f"global_step_{steps}" / "huggingface"
    assert len(result.losses) == steps and result.losses[-1] < result.losses[0]

    # Loadable as the RL stage loads it: weights, config and tokenizer from the one directory, stored in fp32.
    # (veRL writes "dtype": "bfloat16" into config.json whatever the tensors are, so the dtype is given.)
    with safe_open(str(hf / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    trained = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    tokenizer, base_tokenizer = AutoTokenizer.from_pretrained(str(hf)), AutoTokenizer.from_pretrained(str(tiny_model))
    assert tokenizer.get_vocab() == base_tokenizer.get_vocab()
    assert tokenizer.chat_template == base_tokenizer.chat_template

    trained_sd, base_sd = trained.state_dict(), base.state_dict()
    assert trained_sd.keys() == base_sd.keys()
    changed = [k for k in base_sd if not torch.equal(trained_sd[k], base_sd[k])]
    assert len(changed) > len(base_sd) // 2, f"only {changed} changed"

    # Independently of veRL's logging: the saved weights fit the demonstrations better than the base model.
    messages = pd.read_parquet(tmp_path / "data" / "sft.parquet")["messages"].tolist()[:64]
    assert _assistant_nll(trained, tokenizer, messages) < 0.8 * _assistant_nll(base, tokenizer, messages)
