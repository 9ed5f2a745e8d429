"""The reproduction recipes (``recipes/``) and their launcher (``python -m verl_espo.recipes``).

Every run of the papers' tables composes with Hydra, its actor and rollout configs instantiate, and veRL's own
config validation, the plugin's start-up checks and the recipes' scale checks pass for the stated world size, with
no worker started. A table written by hand from the papers pins each run's key settings; the methods of one table
differ only in the keys their ``algo`` option sets. The launcher's plans (commands, names, SFT chain, resume) are
checked without running anything. The slow test runs the ESPO recipe at toy scale on CPU for two steps, through the
recipe's own vLLM rollout (vLLM's CPU build; the ``hf`` rollout where vLLM is not installed).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import io
import math
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from verl_espo import recipes
from verl_espo.runner import read_steps

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
DATA_ROOT = "/data/root"  # composing never reads the files


@pytest.fixture(scope="module", autouse=True)
def parse_each_config_file_once():
    """Hydra re-reads and re-parses the ~100 YAML files of veRL's config tree on every composition (pure-Python
    YAML, most of a composition's second). Within this module each distinct file text is parsed once and handed out
    as a copy, so compositions give the same configs, faster."""
    original = OmegaConf.load
    parsed: dict[str, object] = {}

    def load(file_):
        if not hasattr(file_, "read"):
            return original(file_)
        text = file_.read()
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        if text not in parsed:
            parsed[text] = original(io.StringIO(text))
        return copy.deepcopy(parsed[text])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OmegaConf, "load", staticmethod(load))
        yield


@lru_cache(maxsize=None)
def composed(recipe: str, overrides: tuple[str, ...] = ()):
    return recipes.compose_recipe(recipe, [f"recipe.data_root={DATA_ROOT}", *overrides])


def with_values(cfg, overrides: tuple[str, ...]):
    """A copy of a composed config with ``key=value`` overrides applied (for checks of the checks)."""
    cfg = copy.deepcopy(cfg)
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value))
    return cfg


@lru_cache(maxsize=None)
def flat_of(recipe: str, overrides: tuple[str, ...], resolve: bool) -> dict:
    return flat(composed(recipe, overrides), resolve)


def flat(cfg, resolve: bool = True) -> dict:
    """``{dotted.key: value}`` of the config, interpolations resolved or not (lists are values)."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=resolve), "")
    return out


# ----------------------------------------------------------------------------- the papers' tables
ESPO_MODELS = {
    "espo/qwen3_1.7b_base": "Qwen/Qwen3-1.7B-Base",
    "espo/qwen3_4b_base": "Qwen/Qwen3-4B-Base",
    "espo/qwen3_14b_base": "Qwen/Qwen3-14B-Base",
    "espo/qwen3_30b_a3b_base": "Qwen/Qwen3-30B-A3B-Base",
}
ACTOR = "actor_rollout_ref.actor"
LOSS = f"{ACTOR}.policy_loss"
# ESPO arXiv 2512.00499 Sec. 4.1: SimpleRL (8,192 prompts), 3 epochs, lr 1e-6 fixed, 8 samples at temperature 1.0,
# 16,384 max response, batch 128, avg@32, 32 x H100.
ESPO_COMMON = {
    f"{ACTOR}.optim.lr": 1e-6,
    f"{ACTOR}.optim.lr_scheduler_type": "constant",
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.n": 32,
    "data.max_response_length": 16384,
    "data.train_batch_size": 128,
    "trainer.total_epochs": 3,
    "data.train_files": [f"{DATA_ROOT}/espo/simplerl_zoo/train.parquet"],
    "data.val_files": [
        f"{DATA_ROOT}/espo/{s}/test.parquet" for s in ("math500", "aime2024", "aime2025", "hmmt_feb2025")
    ],
    "gpus": 32,
}
ESPO_METHODS = {
    # ESPO Table 3 (alpha 0.02) and Fig. 6 (rho 0.2); Eq. 8's adaptive clip
    "espo": {f"{LOSS}.loss_mode": "espo", f"{LOSS}.espo.alpha": 0.02, f"{LOSS}.espo.high_entropy_ratio": 0.2,
             f"{LOSS}.espo.clip": "adaptive", "trainer.v1.trainer_mode": "plugin_sync"},
    # ESPO Sec. 4.4: sequence-level (0.0003, 0.0004) = GSPO; token-level (0.2, 0.28) = DAPO
    "gspo": {f"{LOSS}.loss_mode": "gspo", f"{ACTOR}.clip_ratio_low": 3e-4, f"{ACTOR}.clip_ratio_high": 4e-4},
    "dapo": {f"{LOSS}.loss_mode": "vanilla", f"{ACTOR}.clip_ratio_low": 0.2, f"{ACTOR}.clip_ratio_high": 0.28,
             f"{ACTOR}.loss_agg_mode": "token-mean"},
    "cispo": {f"{LOSS}.loss_mode": "cispo"},
    "gmpo": {f"{LOSS}.loss_mode": "gmpo"},
}  # fmt: skip
# ESPO Sec. 4.4, all on Qwen3-30B-A3B: fixed clips, no grouping, rho 0.1 / 0.4, alpha 0.01 / 0.05 / 0.10.
ESPO_ABLATIONS = {
    ("algo=espo_fixed_seq_clip",): {f"{LOSS}.espo.clip": "fixed", f"{ACTOR}.clip_ratio_low": 3e-4,
                                    f"{ACTOR}.clip_ratio_high": 4e-4},
    ("algo=espo_fixed_token_clip",): {f"{LOSS}.espo.clip": "fixed", f"{ACTOR}.clip_ratio_low": 0.2,
                                      f"{ACTOR}.clip_ratio_high": 0.28},
    ("algo=espo_no_grouping",): {f"{LOSS}.espo.grouping": "token", f"{LOSS}.espo.clip": "adaptive"},
    ("algo=espo_one_group",): {f"{LOSS}.espo.high_entropy_ratio": 1.0, f"{LOSS}.espo.grouping": "sequence",
                               f"{LOSS}.espo.clip": "adaptive"},
    **{(f"{LOSS}.espo.high_entropy_ratio={rho}",): {f"{LOSS}.espo.high_entropy_ratio": rho} for rho in (0.1, 0.4)},
    **{(f"{LOSS}.espo.alpha={alpha}",): {f"{LOSS}.espo.alpha": alpha} for alpha in (0.01, 0.05, 0.10)},
}  # fmt: skip

EGSPO = "egspo/qwen2.5_7b_instruct"
# CHORD arXiv 2508.11408 (Sec. 4.1, App. A; Trinity-RFT mix_chord.yaml), EGSPO's setting: Qwen2.5-7B-Instruct,
# 32 prompts x 8 rollouts (+ 64 expert rows), lr 1e-6, temperature 1.0, strictly on-policy, 8 GPUs.
EGSPO_COMMON = {
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-7B-Instruct",
    f"{ACTOR}.optim.lr": 1e-6,
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "data.train_batch_size": 32,
    f"{ACTOR}.ppo_mini_batch_size": 32,
    f"{ACTOR}.ppo_epochs": 1,
    "data.max_response_length": 16384,
    "reward.custom_reward_function.path": "pkg://verl_espo.rewards.chord",
    "data.train_files": [f"{DATA_ROOT}/chord/openr1_math/train.parquet"],
    "gpus": 8,
}
EXPERT = {"data.expert.files": [f"{DATA_ROOT}/chord/openr1_math/sft.parquet"], "data.expert.batch_size": 64}
EGSPO_METHODS = {
    "egspo": {f"{LOSS}.loss_mode": "egspo", f"{LOSS}.egspo.high_entropy_ratio": 0.2, f"{LOSS}.hybrid.mu_peak": 0.1,
              f"{LOSS}.hybrid.mu_valley": 0.1, f"{LOSS}.hybrid.sft_phi": True, **EXPERT},
    "grpo": {f"{LOSS}.loss_mode": "vanilla", f"{ACTOR}.clip_ratio_low": 0.2, f"{ACTOR}.clip_ratio_high": 0.2,
             "data.expert.files": None},
    # CHORD Sec. 4.3: CHORD-phi mu = 0.1 constant with phi; CHORD-mu 0.9 -> 0.05 over 200 steps, plain SFT
    "chord_phi": {f"{LOSS}.loss_mode": "chord", f"{LOSS}.hybrid.mu_peak": 0.1, f"{LOSS}.hybrid.mu_valley": 0.1,
                  f"{LOSS}.hybrid.mu_decay_steps": 0, f"{LOSS}.hybrid.sft_phi": True, **EXPERT},
    "chord_mu": {f"{LOSS}.loss_mode": "chord", f"{LOSS}.hybrid.mu_peak": 0.9, f"{LOSS}.hybrid.mu_valley": 0.05,
                 f"{LOSS}.hybrid.mu_decay_steps": 200, f"{LOSS}.hybrid.sft_phi": False, **EXPERT},
}  # fmt: skip

LADDER = {
    "ladder/qwen2.5_0.5b_instruct_gsm8k": {"actor_rollout_ref.model.path": "Qwen/Qwen2.5-0.5B-Instruct", "gpus": 1,
                                           "data.val_files": [f"{DATA_ROOT}/espo/gsm8k/test.parquet"]},
    "ladder/qwen3_1.7b_base_dapo_math": {"actor_rollout_ref.model.path": "Qwen/Qwen3-1.7B-Base", "gpus": 1,
                                         "data.val_files": [f"{DATA_ROOT}/espo/aime2024/test.parquet"],
                                         "actor_rollout_ref.rollout.val_kwargs.n": 32},
}  # fmt: skip
LADDER_METHODS = {
    "grpo": {f"{LOSS}.loss_mode": "vanilla"},
    "gspo": {f"{LOSS}.loss_mode": "gspo"},
    "espo": {f"{LOSS}.loss_mode": "espo", f"{LOSS}.espo.alpha": 0.02},
    "egspo": {f"{LOSS}.loss_mode": "egspo", "data.expert.files": None},  # no expert traces: pure gated RL
}


#: The baselines run on every size with the same algo options; composing them on the smallest and on the MoE model
#: covers both kinds of scale settings (each composition parses veRL's whole config tree, about a second).
ESPO_BASELINE_SIZES = ("espo/qwen3_1.7b_base", "espo/qwen3_30b_a3b_base")


def _runs() -> list[tuple[str, tuple[str, ...], dict]]:
    runs = []
    for recipe, model in ESPO_MODELS.items():
        methods = ESPO_METHODS if recipe in ESPO_BASELINE_SIZES else {"espo": ESPO_METHODS["espo"]}
        for method, settings in methods.items():
            expected = {**ESPO_COMMON, "actor_rollout_ref.model.path": model, "recipe.method": method, **settings}
            runs.append((recipe, (f"algo={method}",), expected))
    for overrides, settings in ESPO_ABLATIONS.items():
        expected = {**ESPO_COMMON, "actor_rollout_ref.model.path": ESPO_MODELS["espo/qwen3_30b_a3b_base"]}
        runs.append(("espo/qwen3_30b_a3b_base", overrides, {**expected, f"{LOSS}.loss_mode": "espo", **settings}))
    for method, settings in EGSPO_METHODS.items():
        runs.append((EGSPO, (f"algo={method}",), {**EGSPO_COMMON, "recipe.method": method, **settings}))
    for recipe, common in LADDER.items():
        for method, settings in LADDER_METHODS.items():
            expected = {f"{ACTOR}.optim.lr": 1e-6, "actor_rollout_ref.rollout.n": 8, **common, **settings}
            runs.append((recipe, (f"algo={method}",), expected))
    return runs


RUNS = _runs()
RUN_IDS = [f"{recipe}[{' '.join(overrides)}]" for recipe, overrides, _ in RUNS]


def test_every_recipe_file_is_in_the_tables():
    assert recipes.recipe_names() == sorted({recipe for recipe, _, _ in RUNS})
    assert sorted(p.stem for p in (RECIPES / "algo").glob("*.yaml")) == sorted(
        {o.split("=", 1)[1] for _, overrides, _ in RUNS for o in overrides if o.startswith("algo=")}
    )


@pytest.mark.parametrize(("recipe", "overrides", "expected"), RUNS, ids=RUN_IDS)
def test_run_matches_the_paper_and_passes_verl_validation(recipe, overrides, expected):
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import FSDPActorConfig

    from verl_espo.config import PluginPolicyLossConfig

    cfg = composed(recipe, overrides)
    for key, value in expected.items():
        if key == "gpus":
            assert cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == value
            continue
        actual = OmegaConf.select(cfg, key, default=None)
        actual = OmegaConf.to_container(actual, resolve=True) if OmegaConf.is_config(actual) else actual
        if isinstance(value, float):
            assert isinstance(actual, float) and math.isclose(actual, value), (key, actual)
        else:
            assert actual == value, (key, actual)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor, FSDPActorConfig) and actor.strategy == "fsdp2"
    if actor.policy_loss.loss_mode in ("espo", "egspo", "chord"):
        assert isinstance(actor.policy_loss, PluginPolicyLossConfig)
    recipes.check_recipe(cfg)  # veRL's validate_config, the plugin's check_trainer_config, the scale checks


# ----------------------------------------------------------------------------- methods differ only by method
def _yaml_keys(path: Path) -> set[str]:
    """Dotted keys an ``algo`` option sets, including those of the configs in its defaults list."""
    data = OmegaConf.to_container(OmegaConf.load(path))
    keys: set[str] = set()
    for entry in data.pop("defaults", []):
        if entry == "_self_":
            continue
        if entry.startswith("/"):
            keys |= _yaml_keys(Path(str(resources.files("verl_espo.config").joinpath(f"{entry[1:]}.yaml"))))
        else:  # a sibling: another algo option, or another config next to a plugin config
            keys |= _yaml_keys(path.parent / f"{entry}.yaml")
    stack = [("", data)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict) and value:
                stack.append((f"{prefix}{key}.", value))
            else:
                keys.add(f"{prefix}{key}")
    return keys


def algo_keys(option: str) -> set[str]:
    return _yaml_keys(RECIPES / "algo" / f"{option}.yaml")


def _set_by(keys: set[str], key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


TABLES = [
    *[(recipe, "espo", list(ESPO_METHODS)) for recipe in ESPO_BASELINE_SIZES],
    (
        "espo/qwen3_30b_a3b_base",
        "espo",
        ["espo_fixed_seq_clip", "espo_fixed_token_clip", "espo_no_grouping", "espo_one_group"],
    ),
    (EGSPO, "egspo", list(EGSPO_METHODS)),
    *[(recipe, "grpo", list(LADDER_METHODS)) for recipe in LADDER],
]


@pytest.mark.parametrize(("recipe", "main", "methods"), TABLES, ids=[f"{t[0]}:{t[1]}" for t in TABLES])
def test_methods_of_a_table_differ_only_where_their_method_does(recipe, main, methods):
    """Unresolved, so a value that follows an option's key by interpolation (critic.loss_agg_mode, the run's
    directory from its name) is not a difference of its own."""
    reference = flat_of(recipe, (f"algo={main}",), False)
    for method in methods:
        other = flat_of(recipe, (f"algo={method}",), False)
        allowed = algo_keys(main) | algo_keys(method)
        keys = reference.keys() | other.keys()
        differing = {k for k in keys if reference.get(k, "<absent>") != other.get(k, "<absent>")}
        stray = sorted(k for k in differing if not _set_by(allowed, k))
        assert not stray, f"{recipe}: {main} and {method} differ outside their algo options: {stray}"
        # the settings the papers fix are the same for every method
        main_cfg, other_cfg = composed(recipe, (f"algo={main}",)), composed(recipe, (f"algo={method}",))
        for key in (f"{ACTOR}.optim.lr", "actor_rollout_ref.rollout.n", "data.train_batch_size",
                    "data.max_response_length", f"{ACTOR}.ppo_mini_batch_size", "reward.custom_reward_function.path",
                    f"{ACTOR}.ppo_max_token_len_per_gpu", f"{ACTOR}.ulysses_sequence_parallel_size",
                    "data.train_files", "data.val_files", "trainer.nnodes", "trainer.n_gpus_per_node"):  # fmt: skip
            assert OmegaConf.select(main_cfg, key) == OmegaConf.select(other_cfg, key), (method, key)
        assert other_cfg.trainer.experiment_name.endswith(f"-{method}")


def test_the_diff_test_can_fail():
    """An lr set in an algo option is outside the option's own keys, so the test above would flag it."""
    reference = flat_of("espo/qwen3_1.7b_base", ("algo=espo",), False)
    other = flat(composed("espo/qwen3_1.7b_base", ("algo=gspo", f"{ACTOR}.optim.lr=2e-6")), resolve=False)
    differing = {k for k in reference if reference[k] != other.get(k)}
    allowed = algo_keys("espo") | algo_keys("gspo")
    assert f"{ACTOR}.optim.lr" in differing and not _set_by(allowed, f"{ACTOR}.optim.lr")
    assert _set_by(allowed, f"{LOSS}.espo.alpha") and _set_by(allowed, f"{ACTOR}.clip_ratio_low")


# ----------------------------------------------------------------------------- scale checks
def test_scale_arithmetic_of_the_moe_recipe():
    cfg = composed("espo/qwen3_30b_a3b_base", ("algo=espo",))
    info = cfg.recipe.model_info
    # 30.5e9 params x 16 B over 32 GPUs = 15.25 GB resident, + vLLM 0.6 x 80 = 48 GB <= 72 GB; SP 4 x 8,704 = 34,816
    assert info.params_b * 1e9 * 16 / 32 / 1e9 == pytest.approx(15.25)
    actor = cfg.actor_rollout_ref.actor
    assert actor.ppo_max_token_len_per_gpu * actor.ulysses_sequence_parallel_size == 2 * (1024 + 16384)
    assert info.heads % actor.ulysses_sequence_parallel_size == 0
    assert recipes.scale_problems(cfg) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((f"{ACTOR}.ulysses_sequence_parallel_size=3",), "does not divide the 32 GPUs"),
        ((f"{ACTOR}.ppo_max_token_len_per_gpu=4096",), "cannot hold one sequence"),
        (("actor_rollout_ref.rollout.tensor_model_parallel_size=3",), "does not divide the 8 GPUs of a node"),
        (("actor_rollout_ref.rollout.gpu_memory_utilization=0.9",), "exceed 90% of the GPU"),
        (("actor_rollout_ref.rollout.tensor_model_parallel_size=1",
          "actor_rollout_ref.rollout.gpu_memory_utilization=0.3"), "leave no KV cache"),
        ((f"{ACTOR}.ppo_mini_batch_size=48",), "not a multiple"),
    ],
)  # fmt: skip
def test_scale_checks_catch_settings_that_do_not_fit(overrides, message):
    cfg = with_values(composed("espo/qwen3_30b_a3b_base", ("algo=espo",)), overrides)
    assert any(message in p for p in recipes.scale_problems(cfg)), recipes.scale_problems(cfg)
    with pytest.raises(ValueError, match="scale settings"):
        recipes.check_recipe(cfg)


def test_offloading_relieves_the_memory_check():
    # 1.7B on one GPU: 27 GB resident + 40 GB of vLLM is 67 GB (< 72); without the optimizer offload of the ladder
    # recipe (13.6 GB) and with vLLM at 0.6 it is 27.2 + 48 = 75 GB
    ladder = "ladder/qwen3_1.7b_base_dapo_math"
    assert recipes.scale_problems(composed(ladder, ("algo=grpo",))) == []
    crowded = ("actor_rollout_ref.actor.fsdp_config.optimizer_offload=false",
               "actor_rollout_ref.rollout.gpu_memory_utilization=0.6")  # fmt: skip
    assert any(
        "exceed 90%" in p for p in recipes.scale_problems(with_values(composed(ladder, ("algo=grpo",)), crowded))
    )


# ----------------------------------------------------------------------------- headers
@pytest.mark.parametrize("recipe", recipes.recipe_names())
def test_recipe_header_gives_data_and_launch_commands(recipe):
    text = (RECIPES / f"{recipe}.yaml").read_text()
    header = text.split("\nhydra:", 1)[0]
    assert header.startswith("# @package _global_\n# ")
    assert f"python -m verl_espo.recipes data {recipe} --data-root $DATA" in header
    assert f"python -m verl_espo.recipes run {recipe}" in header
    assert f"--config-name={recipe}" in header  # the plain veRL command


def test_group_options_and_shared_parts_open_with_a_comment():
    paths = [p for d in ("algo", "base_model", "dataset", "hardware") for p in (RECIPES / d).glob("*.yaml")]
    paths += list(RECIPES.glob("*/_shared.yaml"))
    for path in paths:
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_" and lines[1].startswith("# "), path


# ----------------------------------------------------------------------------- the launcher's plans
def test_plan_of_an_ablation(tmp_path):
    plan = recipes.plan_run(
        "espo/qwen3_30b_a3b_base", [f"{LOSS}.espo.alpha=0.05"], data_root="/data", out=tmp_path, check=False,
        ray_address="auto",
    )  # fmt: skip
    assert plan.run_dir == tmp_path / "espo" / "qwen3_30b_a3b_base-espo-alpha0.05"
    assert plan.world == 32 and plan.sft_command is None
    command = plan.command
    assert command[1:5] == [
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={RECIPES}",
        "--config-name=espo/qwen3_30b_a3b_base",
    ]
    for arg in ("recipe.data_root=/data", f"{LOSS}.espo.alpha=0.05", "++ray_kwargs.ray_init.address=auto",
                f"trainer.default_local_dir={plan.run_dir / 'checkpoints'}", f"hydra.run.dir={plan.run_dir}",
                "trainer.experiment_name=qwen3_30b_a3b_base-espo-alpha0.05"):  # fmt: skip
        assert arg in command
    metrics = plan.run_dir / "metrics-000.jsonl"
    assert plan.env["VERL_FILE_LOGGER_PATH"] == str(metrics)
    assert f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}" in command
    assert plan.env["VERL_USE_EXTERNAL_MODULES"] == "verl_espo._plugin" and "VERL_PLATFORM" not in plan.env


def test_plan_resumes_from_the_latest_checkpoint(tmp_path):
    run_dir = tmp_path / "espo" / "qwen3_1.7b_base-gspo"
    (run_dir / "checkpoints" / "global_step_64").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("64\n")
    (run_dir / "metrics-000.jsonl").write_text("")
    plan = recipes.plan_run("espo/qwen3_1.7b_base", ["algo=gspo"], data_root="/d", out=tmp_path, check=False)
    assert any("global_step_64" in note and "resuming" in note for note in plan.notes)
    assert plan.env["VERL_FILE_LOGGER_PATH"] == str(run_dir / "metrics-001.jsonl")  # the first attempt's log stays
    fresh = recipes.plan_run("espo/qwen3_1.7b_base", ["algo=gspo"], data_root="/d", out=tmp_path, check=False,
                             no_resume=True)  # fmt: skip
    assert "trainer.resume_mode=disable" in fresh.command and not any("resuming" in n for n in fresh.notes)
    ckpt = str(run_dir / "checkpoints" / "global_step_32")
    other = recipes.plan_run("espo/qwen3_1.7b_base", ["algo=gspo"], data_root="/d", out=tmp_path, check=False,
                             resume_from=ckpt)  # fmt: skip
    assert "trainer.resume_mode=resume_path" in other.command and f"trainer.resume_from_path={ckpt}" in other.command
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("65\n")  # a step without its folder
    stale = recipes.plan_run("espo/qwen3_1.7b_base", ["algo=gspo"], data_root="/d", out=tmp_path, check=False)
    assert not any("resuming" in n for n in stale.notes)  # veRL's lookup finds no checkpoint: the run starts afresh
    with pytest.raises(ValueError, match="exclude each other"):
        recipes.plan_run("espo/qwen3_1.7b_base", [], data_root="/d", out=tmp_path, resume_from=ckpt, no_resume=True)
    with pytest.raises(ValueError, match="the launcher sets these"):
        recipes.plan_run("espo/qwen3_1.7b_base", ["hydra.run.dir=/x"], data_root="/d", out=tmp_path)


def test_plan_of_the_egspo_chain(tmp_path):
    plan = recipes.plan_run(EGSPO, ["algo=grpo"], data_root="/d", out=tmp_path, sft=True)  # SFT-then-GRPO, checked
    sft_dir = tmp_path / "egspo" / "sft-qwen2.5_7b_instruct"
    assert plan.sft_dir == sft_dir and plan.run_dir.name == "qwen2.5_7b_instruct-grpo-from-sft"
    sft = plan.sft_command
    assert "--nproc_per_node=8" in sft and "verl.trainer.sft_trainer" in sft and "--config-name=egspo_sft" in sft
    assert "model.path=Qwen/Qwen2.5-7B-Instruct" in sft and "data.train_files=/d/chord/openr1_math/sft.parquet" in sft
    assert f"trainer.default_local_dir={sft_dir}" in sft
    assert f"actor_rollout_ref.model.path={sft_dir}/global_step_LATEST/huggingface" in plan.command
    (sft_dir).mkdir(parents=True)
    (sft_dir / recipes.SFT_DONE).write_text("")
    again = recipes.plan_run(EGSPO, [], data_root="/d", out=tmp_path, sft=True, sft_step=3, check=False)
    assert again.sft_command is None and any("reusing" in n for n in again.notes)  # stage 1 runs once per model
    assert f"actor_rollout_ref.model.path={sft_dir}/global_step_3/huggingface" in again.command
    direct = recipes.plan_run(EGSPO, [], data_root="/d", out=tmp_path, check=False)
    assert any("skips its stage 1" in n for n in direct.notes)
    with pytest.raises(ValueError, match="no SFT stage"):
        recipes.plan_run("espo/qwen3_1.7b_base", [], data_root="/d", out=tmp_path, sft=True, check=False)


def test_run_chains_stage_1_into_rl(tmp_path):
    """``run`` with stand-in commands: stage 1 writes a checkpoint, RL gets its weights; a failed stage 1 stops."""
    sft_dir, run_dir = tmp_path / "sft", tmp_path / "run"
    hf = sft_dir / "global_step_2" / "huggingface"
    write_ckpt = (
        f"import pathlib; p = pathlib.Path({str(hf)!r}); p.mkdir(parents=True); "
        "[(p / n).write_text('{}') for n in ('config.json', 'model.safetensors', 'tokenizer_config.json')]; "
        f"pathlib.Path({str(sft_dir / 'latest_checkpointed_iteration.txt')!r}).write_text('2')"
    )
    record = f"import sys, pathlib; pathlib.Path({str(tmp_path / 'argv')!r}).write_text(sys.argv[1])"
    placeholder = f"actor_rollout_ref.model.path={sft_dir}/global_step_LATEST/huggingface"
    plan = recipes.Plan(
        "egspo/qwen2.5_7b_instruct", run_dir, [sys.executable, "-c", record, placeholder], {}, 8,
        sft_command=[sys.executable, "-c", write_ckpt], sft_dir=sft_dir, base_model="Qwen/Qwen2.5-7B-Instruct",
    )  # fmt: skip
    assert recipes.run(plan, dry_run=False) == 0
    assert (tmp_path / "argv").read_text() == f"actor_rollout_ref.model.path={hf}"
    assert (sft_dir / recipes.SFT_DONE).exists() and (run_dir / "command.txt").exists()
    failing = recipes.Plan(
        plan.recipe, tmp_path / "run2", plan.command, {}, 8, sft_command=[sys.executable, "-c", "raise SystemExit(3)"],
        sft_dir=tmp_path / "sft2",
    )  # fmt: skip
    assert recipes.run(failing, dry_run=False) == 3 and not (tmp_path / "run2").exists()


def test_run_prints_before_running(tmp_path, capsys):
    plan = recipes.plan_run("ladder/qwen2.5_0.5b_instruct_gsm8k", ["algo=espo"], data_root="/d", out=tmp_path)
    assert recipes.run(plan, dry_run=True) == 0
    printed = capsys.readouterr().out
    assert "python -m verl.trainer.main_ppo" in printed.replace(sys.executable, "python")
    assert "VERL_USE_EXTERNAL_MODULES=verl_espo._plugin" in printed and not plan.run_dir.exists()


def test_data_command_lists_the_recipes_sets_with_its_template():
    cmd = recipes.data_command(composed(EGSPO, ("algo=egspo",)))
    assert cmd[1:4] == ["-m", "verl_espo.data", "all"]
    assert cmd[cmd.index("--out") + 1] == f"{DATA_ROOT}/chord" and cmd[cmd.index("--template") + 1] == "chord"
    assert cmd[cmd.index("--only") + 1].split(",") == ["openr1_math", "aime2024", "aime2025", "amc2023", "math500"]
    espo = recipes.data_command(composed("espo/qwen3_4b_base", ("algo=espo",)))
    assert espo[espo.index("--only") + 1] == "simplerl_zoo,math500,aime2024,aime2025,hmmt_feb2025"


def test_cli_dry_runs(capsys):
    assert recipes.main(["ray-worker", "--address", "10.0.0.1:6379", "--num-gpus", "8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "start --address=10.0.0.1:6379 --num-gpus=8" in out and "VERL_USE_EXTERNAL_MODULES=verl_espo._plugin" in out
    assert recipes.main(["data", "ladder/qwen3_1.7b_base_dapo_math", "--data-root", "/d", "--dry-run"]) == 0
    assert "--only dapo_math,aime2024" in capsys.readouterr().out
    assert recipes.main(["run", "espo/nope", "--dry-run"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_the_recipes_folder_comes_from_the_flag_the_variable_or_the_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(recipes.RECIPES_ENV, raising=False)
    assert recipes.find_recipes_dir() == RECIPES  # this checkout's
    mine = tmp_path / "mine"
    for folder in recipes.PAPER_DIRS:
        (mine / folder).mkdir(parents=True)
    (mine / "ladder" / "tiny.yaml").write_text("# @package _global_\n")
    monkeypatch.setenv(recipes.RECIPES_ENV, str(mine))
    assert recipes.recipe_names() == ["ladder/tiny"]
    assert recipes.find_recipes_dir(RECIPES) == RECIPES  # --recipes-dir wins over the variable
    with pytest.raises(ValueError, match=r"no recipes folder at .*elsewhere \(--recipes-dir; it lacks espo/"):
        recipes.find_recipes_dir(tmp_path / "elsewhere")
    monkeypatch.setenv(recipes.RECIPES_ENV, str(tmp_path))
    assert recipes.main(["run", "espo/qwen3_1.7b_base", "--dry-run"]) == 2
    assert f"(${recipes.RECIPES_ENV}; it lacks espo/, egspo/, ladder/)" in capsys.readouterr().err
    assert recipes.main(["list", "--recipes-dir", str(RECIPES)]) == 0
    assert "espo/qwen3_1.7b_base\n" in capsys.readouterr().out


def test_the_cli_is_a_module_and_an_install_without_its_checkout_names_the_flag(tmp_path):
    """``python -m verl_espo.recipes``, here from this checkout; then from a copy of the package alone, as a
    non-editable install puts it in site-packages, where no recipes folder is next to it."""
    import shutil
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != recipes.RECIPES_ENV}
    here = subprocess.run([sys.executable, "-m", "verl_espo.recipes", "list"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=120)  # fmt: skip
    assert here.returncode == 0 and here.stdout.split() == recipes.recipe_names(), here.stderr
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "verl_espo", site / "verl_espo", ignore=shutil.ignore_patterns("__pycache__"))
    installed = subprocess.run([sys.executable, "-m", "verl_espo.recipes", "show", "espo/qwen3_1.7b_base"],
                               capture_output=True, text=True, env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path,
                               timeout=120)  # fmt: skip
    assert installed.returncode == 2, installed.stdout + installed.stderr
    assert f"no recipes folder at {site / 'recipes'} (next to the verl_espo package" in installed.stderr
    assert "pass --recipes-dir DIR" in installed.stderr


# ----------------------------------------------------------------------------- toy scale on CPU
TOY_RECIPE = "espo/qwen3_1.7b_base"


@pytest.mark.parametrize(("recipe", "method"), [(TOY_RECIPE, "espo"), (EGSPO, "egspo")])
def test_cpu_toy_keeps_the_recipe_and_takes_the_smoke_settings(recipe, method):
    """hardware=cpu_toy = the recipe + smoke_cpu: the algorithm, data, reward and names stay the recipe's."""
    paper = composed(recipe, (f"algo={method}",))
    toy = composed(recipe, (f"algo={method}", "hardware=cpu_toy", "actor_rollout_ref.model.path=/tiny"))
    for key in (LOSS, "algorithm.adv_estimator", "trainer.v1.trainer_mode", "data.train_files", "data.val_files",
                "reward.custom_reward_function", "reward.reward_manager", "trainer.project_name",
                "trainer.experiment_name", "data.expert"):  # fmt: skip
        assert OmegaConf.select(toy, key, default=None) == OmegaConf.select(paper, key, default=None), key
    smoke = OmegaConf.load(str(resources.files("verl_espo.config").joinpath("smoke_cpu.yaml")))
    for key in ("trainer.device", "actor_rollout_ref.actor.fsdp_config.model_dtype",
                "actor_rollout_ref.model.override_config.attn_implementation",
                "ray_kwargs.ray_init.num_gpus"):  # fmt: skip
        assert OmegaConf.select(toy, key) == OmegaConf.select(smoke, key), key
    # The rollout stays the recipe's (veRL's vLLM rollout), with the CPU settings of vLLM's engine.
    assert toy.actor_rollout_ref.rollout.name == paper.actor_rollout_ref.rollout.name == "vllm"
    switch = OmegaConf.load(str(resources.files("verl_espo.config").joinpath("smoke_rollout/vllm.yaml")))
    rollout = toy.actor_rollout_ref.rollout
    assert OmegaConf.merge(rollout, switch.actor_rollout_ref.rollout) == rollout  # every setting of the switch holds
    assert toy.trainer.nnodes * toy.trainer.n_gpus_per_node == 1 and toy.trainer.total_training_steps == 2
    assert "file" in toy.trainer.logger and toy.data.filter_overlong_prompts
    recipes.check_recipe(toy)


@pytest.mark.slow
def test_cpu_toy_run_of_a_recipe(tmp_path, monkeypatch, capfd):
    """The ESPO recipe with the head-size-32 toy model and a tiny parquet made by the preparation code, for two
    steps, through the recipe's own vLLM rollout (the ``hf`` rollout, cpu_toy's documented fallback, without vLLM)."""
    from verl_espo.data import DATASETS
    from verl_espo.data import __main__ as data_cli
    from verl_espo.data.common import load_sample
    from verl_espo.toy.assets import build_assets

    data_root = tmp_path / "data"
    cmd = recipes.data_command(recipes.compose_recipe(TOY_RECIPE, [f"recipe.data_root={data_root}"]))
    out, template, only = (cmd[cmd.index(flag) + 1] for flag in ("--out", "--template", "--only"))
    for name in DATASETS:  # the preparation code, reading the in-repo samples instead of the Hub
        module = importlib.import_module(f"verl_espo.data.{name}")
        monkeypatch.setattr(module, "load_hf", lambda *a, _n=name, split, **k: load_sample(_n, split))
    data_cli.prepare_all(out, only.split(","), template)
    model = tmp_path / "model"
    build_assets(model)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    vllm = importlib.util.find_spec("vllm") is not None
    fallback = [] if vllm else ["actor_rollout_ref.rollout.name=hf"]
    plan = recipes.plan_run(
        TOY_RECIPE, ["hardware=cpu_toy", f"actor_rollout_ref.model.path={model}", *fallback], data_root=data_root,
        out=tmp_path / "runs",
    )  # fmt: skip
    assert plan.env["VERL_PLATFORM"] == "cpu"
    code = recipes.run(plan, dry_run=False, timeout_s=300)
    log = "\n".join(capfd.readouterr())  # the trainer's stdout and stderr (Ray forwards its workers' logs)
    assert code == 0, (plan.run_dir / "command.txt").read_text() + log[-5000:]
    assert ("vLLMHttpServer" in log) == vllm and ("hf rollout:" in log) != vllm, "not the rollout the recipe names"
    steps = {s["step"]: s for s in read_steps(plan.run_dir / "metrics-000.jsonl")}
    assert {1, 2} <= set(steps)
    assert all("critic/score/mean" in steps[s] and "actor/espo/high/token_frac" in steps[s] for s in (1, 2))
    val = {k for k in steps[2] if k.startswith("val-core/")}
    for source in ("math500", "aime2025", "hmmt_feb2025"):  # the recipe's validation sets, through its reward
        assert any(k.startswith(f"val-core/{source}/acc/mean@") for k in val), val
    assert (plan.run_dir / ".hydra" / "config.yaml").exists()
