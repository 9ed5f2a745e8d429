"""veRL's vLLM rollout on CPU (verl_espo/vllm_cpu/): the start-up checks, the distribution alias, the switch config,
the head-size-32 toy model and the refusal before Ray starts. None of these needs vLLM; the vLLM internals the
plugin relies on are pinned in tests/test_vllm_cpu_internals.py."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from verl_espo.vllm_cpu import EXTRA, INSTALL_COMMAND, checks, dist_alias

GIB = 1 << 30
VLLM_INSTALLED = checks.importlib.util.find_spec("vllm") is not None


def _config(model_path=None, device="cpu", **rollout):
    rollout = {
        "name": "vllm",
        "enable_sleep_mode": False,
        "free_cache_engine": False,
        "gpu_memory_utilization": 0.5,
        "engine_kwargs": {"vllm": {"kv_cache_memory_bytes": 256 << 20}},
        **rollout,
    }
    return {
        "trainer": {"device": device},
        "actor_rollout_ref": {"model": {"path": model_path}, "rollout": rollout},
    }


def _model_dir(tmp_path, hidden=64, heads=2, **extra):
    path = tmp_path / f"model-{hidden}-{heads}-{len(list(tmp_path.iterdir()))}"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"hidden_size": hidden, "num_attention_heads": heads, **extra}))
    return str(path)


# ----------------------------------------------------------------------------- start-up checks
def test_checks_pass_for_the_switch_settings(tmp_path):
    checks.check_vllm_cpu_rollout(_config(_model_dir(tmp_path)), memory=(8 * GIB, 16 * GIB), vllm_installed=True)


def test_checks_ignore_other_rollouts_and_devices(tmp_path):
    model = _model_dir(tmp_path, hidden=64, heads=4)  # head size 16: would be refused with vllm on CPU
    for config in (_config(model, name="hf"), _config(model, device="cuda")):
        checks.check_vllm_cpu_rollout(config, memory=(1, 2), vllm_installed=False)


def test_missing_vllm_names_the_extra(tmp_path):
    with pytest.raises(checks.VllmCpuConfigError) as err:
        checks.check_vllm_cpu_rollout(_config(_model_dir(tmp_path)), vllm_installed=False)
    assert f"`{EXTRA}` extra" in str(err.value) and INSTALL_COMMAND in str(err.value)
    assert "rollout.name=hf" in str(err.value)


def test_head_size_vllm_cpu_attention_rejects(tmp_path):
    with pytest.raises(checks.VllmCpuConfigError, match="attention head size 16") as err:
        checks.check_vllm_cpu_rollout(
            _config(_model_dir(tmp_path, hidden=64, heads=4)), memory=(8 * GIB, 16 * GIB), vllm_installed=True
        )
    assert "python -m verl_espo.toy OUT" in str(err.value)
    # An explicit head_dim wins over hidden / heads.
    checks.check_vllm_cpu_rollout(
        _config(_model_dir(tmp_path, hidden=64, heads=4, head_dim=64)), memory=(8 * GIB, 16 * GIB), vllm_installed=True
    )


def test_hub_ids_are_left_to_vllm():
    checks.check_vllm_cpu_rollout(_config("Qwen/Qwen2.5-0.5B"), memory=(8 * GIB, 16 * GIB), vllm_installed=True)


def test_kv_cache_larger_than_available_memory(tmp_path):
    config = _config(_model_dir(tmp_path), engine_kwargs={"vllm": {}}, gpu_memory_utilization=0.92)
    with pytest.raises(checks.VllmCpuConfigError, match="gpu_memory_utilization asks vLLM for 14.72 GiB") as err:
        checks.check_vllm_cpu_rollout(config, memory=(6 * GIB, 16 * GIB), vllm_installed=True)
    assert "kv_cache_memory_bytes" in str(err.value)
    explicit = _config(
        _model_dir(tmp_path, hidden=128, heads=4), engine_kwargs={"vllm": {"kv_cache_memory_bytes": 8 * GIB}}
    )
    with pytest.raises(checks.VllmCpuConfigError, match="kv_cache_memory_bytes asks vLLM for 8.00 GiB"):
        checks.check_vllm_cpu_rollout(explicit, memory=(6 * GIB, 16 * GIB), vllm_installed=True)


def test_kv_cache_fraction_too_small_for_vllm(tmp_path):
    config = _config(_model_dir(tmp_path), engine_kwargs={"vllm": {}}, gpu_memory_utilization=0.02)
    with pytest.raises(checks.VllmCpuConfigError, match="leaves no KV cache"):
        checks.check_vllm_cpu_rollout(config, memory=(12 * GIB, 16 * GIB), vllm_installed=True)


@pytest.mark.parametrize("key", ["enable_sleep_mode", "free_cache_engine"])
def test_sleep_mode_refused(tmp_path, key):
    with pytest.raises(checks.VllmCpuConfigError, match=f"rollout.{key}=true"):
        checks.check_vllm_cpu_rollout(
            _config(_model_dir(tmp_path), **{key: True}), memory=(8 * GIB, 16 * GIB), vllm_installed=True
        )


def test_broken_companion_packages(monkeypatch, tmp_path):
    broken = tmp_path / "torchcodec"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise OSError('Could not load this library: libtorchcodec_core.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchcodec", raising=False)
    with pytest.raises(checks.VllmCpuConfigError, match=r"torchcodec \(OSError: Could not load") as err:
        checks.check_vllm_cpu_rollout(_config(_model_dir(tmp_path)), memory=(8 * GIB, 16 * GIB), vllm_installed=True)
    assert "pip uninstall -y torchvision torchaudio torchcodec" in str(err.value)


# ----------------------------------------------------------------------------- distribution alias
@pytest.fixture
def fake_cpu_build(tmp_path, monkeypatch):
    """A distribution ``fake-engine-cpu`` (importable as nothing) and the alias asked for ``fake-engine``."""
    info = tmp_path / "fake_engine_cpu-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-engine-cpu\nVersion: 1.2.3\nRequires-Dist: numpy\n"
    )
    (info / "entry_points.txt").write_text("[fake.group]\nx = fake_engine:x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(dist_alias, "ALIAS", "fake-engine")
    monkeypatch.setattr(dist_alias, "TARGET", "fake-engine-cpu")
    finder = dist_alias.VllmCpuAliasFinder()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, finder])
    return finder


def test_alias_reports_the_cpu_build_under_the_alias(fake_cpu_build):
    assert metadata.version("fake-engine") == "1.2.3+cpu"
    assert metadata.version("Fake_Engine") == "1.2.3+cpu"  # names are normalised
    dist = metadata.distribution("fake-engine")
    assert dist.metadata["Name"] == "fake-engine" and dist.requires == ["numpy"]


def test_alias_lists_nothing_twice(fake_cpu_build):
    names = [d.metadata["Name"] for d in metadata.distributions()]
    assert "fake-engine-cpu" in names and "fake-engine" not in names
    assert [ep.value for ep in metadata.entry_points(group="fake.group")] == ["fake_engine:x"]


def test_alias_answers_nothing_without_the_cpu_build(monkeypatch):
    monkeypatch.setattr(dist_alias, "ALIAS", "fake-engine")
    monkeypatch.setattr(dist_alias, "TARGET", "fake-engine-cpu-not-installed")
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, dist_alias.VllmCpuAliasFinder()])
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("fake-engine")


def test_alias_version():
    assert dist_alias.alias_version("0.27.0") == "0.27.0+cpu"
    assert dist_alias.alias_version("0.27.0+g1234") == "0.27.0+g1234.cpu"
    assert dist_alias.alias_version("0.27.0+cpu") == "0.27.0+cpu"


def test_plugin_piece_installs_the_alias_once():
    import verl  # noqa: F401  (loads the plugin)

    from verl_espo import _plugin

    assert "vllm_cpu" not in _plugin.FAILED
    assert dist_alias.installed()
    assert dist_alias.install() is False  # idempotent
    assert sum(getattr(f, "verl_espo_vllm_cpu_alias", False) for f in sys.meta_path) == 1


# ----------------------------------------------------------------------------- the switch config
def _compose(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        return compose(config_name="espo_smoke", overrides=list(overrides), return_hydra_config=True)


def test_switch_sets_the_cpu_defaults():
    cfg = _compose("+smoke_rollout=vllm", "actor_rollout_ref.model.path=/m")
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.name == "vllm" and rollout.dtype == "float32" and rollout.calculate_log_probs
    assert rollout.enforce_eager and not rollout.enable_sleep_mode and not rollout.free_cache_engine
    assert rollout.engine_kwargs.vllm.kv_cache_memory_bytes == 256 << 20
    assert cfg.hydra.callbacks.verl_espo_vllm_cpu._target_ == "verl_espo.vllm_cpu.checks.VllmCpuPreflight"
    # The trainer's rollout config accepts every key the switch sets.
    from verl.utils.config import omega_conf_to_dataclass

    assert omega_conf_to_dataclass(rollout).enable_sleep_mode is False


def test_preflight_callback_runs_the_checks(tmp_path):
    from hydra.utils import instantiate

    model = _model_dir(tmp_path, hidden=64, heads=4)
    cfg = _compose("+smoke_rollout=vllm", f"actor_rollout_ref.model.path={model}")
    callback = instantiate(cfg.hydra.callbacks.verl_espo_vllm_cpu)
    with pytest.raises(SystemExit, match="VllmCpuConfigError: .*(head size 16|`vllm-cpu` extra)"):
        callback.on_run_start(config=cfg, task_function=None)


def test_smoke_configs_check_a_bare_vllm_rollout(tmp_path):
    """Without the switch, `rollout.name=vllm` on a smoke config is checked too (smoke_cpu.yaml has the callback):
    the default rollout settings are refused with the switch as the fix."""
    from hydra.utils import instantiate

    cfg = _compose("actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.model.path={_model_dir(tmp_path)}")
    callback = instantiate(cfg.hydra.callbacks.verl_espo_vllm_cpu)
    expected = "+smoke_rollout=vllm" if VLLM_INSTALLED else "`vllm-cpu` extra"
    with pytest.raises(SystemExit, match=re.escape(expected)):
        callback.on_run_start(config=cfg, task_function=None)
    callback.on_run_start(config=_compose("actor_rollout_ref.model.path=/m"), task_function=None)  # hf: no-op


def test_main_ppo_refuses_before_ray_starts(tmp_path):
    """The stock trainer entry point with the switch and a toy model of head size 16 stops in the Hydra callback:
    no Ray, and a message naming the fix (without vLLM: the extra)."""
    from verl_espo.toy.assets import build_tiny_model, build_tokenizer

    model = tmp_path / "model16"
    build_tiny_model(model, build_tokenizer(model), hidden_size=64, num_heads=4)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", "--config-path=pkg://verl_espo.config",
        "--config-name=espo_smoke", "+smoke_rollout=vllm", f"actor_rollout_ref.model.path={model}",
        "data.train_files=x.parquet", "data.val_files=x.parquet", f"hydra.run.dir={tmp_path / 'hydra'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ray init kwargs" not in output and "Started a local Ray instance" not in output
    expected = "attention head size 16" if VLLM_INSTALLED else "`vllm-cpu` extra"
    assert "VllmCpuConfigError" in output and expected in output, output[-3000:]


# ----------------------------------------------------------------------------- the toy model
def test_the_bundled_model_is_one_vllm_cpu_attention_takes(tmp_path):
    from verl_espo.toy.__main__ import main

    assert main([str(tmp_path / "m"), "--seed", "0"]) == 0
    record = json.loads(Path(tmp_path / "m" / "toy_assets.json").read_text())
    assert record["model"]["head_dim"] == 32 and 32 in checks.CPU_ATTENTION_HEAD_SIZES
    checks._check_head_size(str(tmp_path / "m"))


# ----------------------------------------------------------------------------- python -m verl_espo.compare
def test_compare_passes_the_switch_to_every_run(tmp_path, monkeypatch):
    """`python -m verl_espo.compare --model-dir M +smoke_rollout=vllm`: the switch reaches each algorithm's run, all
    from the one model given with --model-dir."""
    import verl_espo.compare as compare_module
    from verl_espo.smoke import VLLM_ROLLOUT as SWITCH
    from verl_espo.smoke import SmokeResult

    calls = []

    def runner(algo, steps, out, overrides, *, model_dir, echo):
        calls.append((algo, overrides, model_dir))
        return SmokeResult(algo, str(out), 1, 0.0)  # no metrics: nothing to report

    compare = compare_module.compare
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: compare(*a, **k, runner=runner))
    compare_module.main(["--out", str(tmp_path), "--model-dir", str(tmp_path / "m32"), "--steps", "2", SWITCH])
    assert [c[0] for c in calls] == list(compare_module.DEFAULT_ALGOS)
    assert all(c[1] == [SWITCH] and c[2] == tmp_path / "m32" for c in calls)


@pytest.mark.parametrize("algo", ["espo", "gspo", "grpo", "egspo", "chord"])
def test_every_compared_algorithm_composes_with_the_switch(algo, tmp_path):
    """What each compared run hands veRL's main_ppo, plus the switch, composes to veRL's vLLM rollout with the CPU
    settings and passes veRL's and the plugin's start-up checks."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from verl.trainer.main_ppo import validate_config
    from verl.utils.config import omega_conf_to_dataclass

    from verl_espo.smoke import VLLM_ROLLOUT as SWITCH
    from verl_espo.smoke import _command
    from verl_espo.trainer.checks import check_trainer_config

    model = tmp_path / "model"
    extra = [f"data.expert.files=[{tmp_path / 'expert.parquet'}]"] if algo in ("egspo", "chord") else []
    argv = _command(algo, tmp_path, model, tmp_path / "t", tmp_path / "v", 2, [SWITCH, *extra])
    overrides = [a for a in argv[argv.index(f"--config-name={algo}_smoke") + 1 :] if not a.startswith("hydra.")]
    with initialize_config_module(config_module="verl_espo.config", version_base=None):
        cfg = compose(config_name=f"{algo}_smoke", overrides=overrides, return_hydra_config=True)
    switch = OmegaConf.load(Path(checks.__file__).parents[1] / "config" / "smoke_rollout" / "vllm.yaml")
    rollout = cfg.actor_rollout_ref.rollout
    assert OmegaConf.merge(rollout, switch.actor_rollout_ref.rollout) == rollout  # every setting of the switch holds
    assert rollout.name == "vllm" and cfg.actor_rollout_ref.model.path == str(model)
    assert cfg.hydra.callbacks.verl_espo_vllm_cpu._target_ == "verl_espo.vllm_cpu.checks.VllmCpuPreflight"
    del cfg.hydra
    check_trainer_config(cfg)
    validate_config(config=cfg, use_reference_policy=False, use_critic=False)
    omega_conf_to_dataclass(rollout)
