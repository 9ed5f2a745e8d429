"""vLLM general plugin: on vLLM's CPU platform, keep linear weights as plain parameters for veRL's weight sync.

After loading a model, vLLM's CPU backend hands every dense linear layer and the LM head to
``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm(layer, remove_weight)``, which prepacks the
weight for oneDNN (or the SGL / zentorch kernels) and, for linear layers (``remove_weight=True``, from
``UnquantizedLinearMethod.process_weights_after_loading`` in ``vllm/model_executor/layers/linear.py``),
replaces ``layer.weight`` with an empty parameter. veRL syncs the trainer's weights into the running engine
through ``model.load_weights`` (``verl/workers/rollout/vllm_rollout/utils.py``, the worker extension), which
needs each parameter's ``weight_loader`` and shape; with the packed layout the first sync fails with
``AttributeError: 'Parameter' object has no attribute 'weight_loader'``. For the LM head
(``remove_weight=False``) the packed copy would silently keep the initial weights.

:func:`register` (the ``vllm.general_plugins`` entry point ``verl_espo_cpu_weights``; vLLM calls it in every
process it starts, before a model is loaded) replaces that function with :func:`keep_unpacked_gemm`: for 2-D
weights it leaves ``layer.weight`` in place and computes with ``torch.nn.functional.linear`` on it, so a weight
loaded in place is used by the next forward. Other weights (3-D MoE experts, conv) go to vLLM's function
unchanged. vLLM calls the dispatcher only on its CPU platform (``current_platform.is_cpu()``), and
:func:`register` does nothing on other platforms, so GPU runs are unaffected.

Set ``VERL_ESPO_VLLM_CPU_KEEP_WEIGHTS=0`` to keep vLLM's prepacking (faster GEMMs when serving a fixed model,
without veRL's weight sync). This module imports neither veRL nor, until :func:`register` runs, vLLM.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

__all__ = ["ENV_SWITCH", "LOG_LINE", "TARGET", "active", "keep_unpacked_gemm", "register"]

# Under the `vllm` logger, which vLLM configures in its processes, so the line reaches the trainer log.
logger = logging.getLogger(f"vllm.{__name__}")

#: The line :func:`register` logs (at WARNING: veRL starts vLLM with VLLM_LOGGING_LEVEL=WARN).
LOG_LINE = "verl-espo: vLLM's CPU linear layers keep their weights unpacked for veRL's weight sync (pid %d)"

#: ``module:function`` replaced by :func:`register`.
TARGET = "vllm.model_executor.layers.utils:dispatch_cpu_unquantized_gemm"

#: Environment variable that turns the plugin off (``0``).
ENV_SWITCH = "VERL_ESPO_VLLM_CPU_KEEP_WEIGHTS"

#: Marks the replacement (so that :func:`register` is idempotent and tests can find it).
_MARK = "__verl_espo_keep_unpacked__"


def _linear(x, weight, bias):
    import torch

    return torch.nn.functional.linear(x, weight, bias)


def keep_unpacked_gemm(original: Callable[..., Any]) -> Callable[..., Any]:
    """The replacement of vLLM's ``dispatch_cpu_unquantized_gemm``, delegating non-2-D weights to ``original``."""

    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:
        weight = getattr(layer, "weight", None)
        if weight is None or weight.is_meta or weight.ndim != 2:
            return original(layer, remove_weight)
        # vLLM's `cpu_unquantized_gemm(layer, x, weight, bias)` calls `layer.cpu_linear(x, weight, bias)` with
        # `weight = layer.weight` of that forward: the parameter veRL's sync writes into.
        layer.cpu_linear = _linear

    setattr(dispatch_cpu_unquantized_gemm, _MARK, True)
    dispatch_cpu_unquantized_gemm.__wrapped__ = original  # type: ignore[attr-defined]
    return dispatch_cpu_unquantized_gemm


def active() -> bool:
    """False when ``VERL_ESPO_VLLM_CPU_KEEP_WEIGHTS=0`` (or ``false`` / ``no`` / ``off``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def register() -> None:
    """vLLM general-plugin entry point: install :func:`keep_unpacked_gemm` on the CPU platform (idempotent)."""
    if not active():
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm.model_executor.layers.utils as layer_utils

    from verl_espo.vllm_cpu import dist_alias

    dist_alias.install()  # vLLM-side processes see the same `vllm` distribution as veRL's
    original = layer_utils.dispatch_cpu_unquantized_gemm
    if getattr(original, _MARK, False):
        return
    # vLLM imports the function inside `process_weights_after_loading` at call time, so the module attribute
    # is what it calls.
    layer_utils.dispatch_cpu_unquantized_gemm = keep_unpacked_gemm(original)
    logger.warning(LOG_LINE, os.getpid())
