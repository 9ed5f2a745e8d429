"""A CPU platform for veRL 0.9.x, registered through veRL's platform registry as ``cpu``.

Selected with ``VERL_PLATFORM=cpu`` (never auto-detected, so GPU machines are unaffected). With it the
FSDP2 engine, the actor/ref workers and the trainer run on CPU with gloo process groups, and Ray
schedules them on logical "GPU" resources (``ray_kwargs.ray_init.num_gpus``), which is what veRL's
resource pools ask for.

What needs more than veRL's public hooks, and the smallest upstream change that would remove it:

* ``verl.utils.distributed.initialize_global_process_group_ray`` (and ``initialize_global_process_group``)
  build the backend string ``"cpu:gloo,{device}:{backend}"``, which torch rejects for ``device == "cpu"``
  ("Duplicate device type cpu"). :func:`install` wraps both so that on this platform the backend is
  ``"cpu:gloo"``. Upstream fix: build the string as ``"cpu:gloo"`` when ``get_device_name() == "cpu"``.
* veRL's FSDP engines are registered for ``device=["cuda", "npu"]`` only; :func:`install` registers the
  same classes for ``"cpu"`` through the public ``EngineRegistry.register``.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from typing import Any, Optional

import psutil
import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

__all__ = ["PlatformCPU", "CPUDeviceModule", "install", "is_selected"]

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"


class CPUDeviceModule:
    """Stands in for ``torch.cuda``: ``torch.cpu``'s functions plus the memory and device calls veRL makes."""

    def current_device(self) -> torch.device:
        # veRL moves models with `.to(get_device_id())`; an index would mean a CUDA device.
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def is_available(self) -> bool:
        return True

    def get_device_name(self, *args: Any, **kwargs: Any) -> str:
        return "CPU"

    def mem_get_info(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    def memory_allocated(self, *args: Any, **kwargs: Any) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    empty_cache = reset_peak_memory_stats = synchronize = set_device = ipc_collect = _noop
    manual_seed = manual_seed_all = _noop

    def get_rng_state(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        torch.set_rng_state(state)

    def __getattr__(self, name: str) -> Any:
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        raise AttributeError(f"the CPU device module has no attribute {name!r}")


_DEVICE_MODULE = CPUDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """veRL platform for machines without an accelerator (tests, CI, laptops)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> Any:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # only by explicit choice: VERL_PLATFORM=cpu

    def current_device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # veRL's resource pools ask Ray for GPUs; start Ray with logical GPUs (ray_init.num_gpus=N).
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def is_selected() -> bool:
    """True when this process runs veRL on the CPU platform (``VERL_PLATFORM=cpu``)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def _cpu_backend(fn):
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        if is_selected() and kwargs.get("backend") is None and len(args) < 2:
            kwargs["backend"] = "cpu:gloo"
        return fn(*args, **kwargs)

    wrapper.__verl_espo_cpu__ = True  # type: ignore[attr-defined]
    return wrapper


def _patch_process_group_init() -> None:
    import verl.utils.distributed as dist_utils

    ray_init = dist_utils.initialize_global_process_group_ray
    if not getattr(ray_init, "__verl_espo_cpu__", False):
        dist_utils.initialize_global_process_group_ray = _cpu_backend(ray_init)
    plain_init = dist_utils.initialize_global_process_group
    if not getattr(plain_init, "__verl_espo_cpu__", False):

        @functools.wraps(plain_init)
        def initialize_global_process_group(timeout_second: int = 36000):
            from datetime import timedelta

            torch.distributed.init_process_group(
                backend="cpu:gloo",
                timeout=timedelta(seconds=timeout_second),
                init_method=os.environ.get("DIST_INIT_METHOD", None),
            )
            return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

        initialize_global_process_group.__verl_espo_cpu__ = True  # type: ignore[attr-defined]
        dist_utils.initialize_global_process_group = initialize_global_process_group

    # Modules that imported the function by name before the patch.
    import verl.workers.engine_workers as engine_workers

    engine_workers.initialize_global_process_group_ray = dist_utils.initialize_global_process_group_ray


def _register_cpu_engines() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            try:
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(engine_cls)
            except AssertionError:  # already registered in this process
                pass


_installed = False


def install() -> None:
    """Make veRL runnable on this platform in the current process (idempotent; no-op unless selected)."""
    global _installed
    if _installed or not is_selected():
        return
    _patch_process_group_init()
    _register_cpu_engines()
    _installed = True
    logger.info("verl_espo: CPU platform installed (gloo process groups, FSDP engines on cpu)")
