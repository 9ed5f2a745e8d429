"""The plugin's ``vllm_cpu`` piece (imported by :mod:`verl_espo._plugin` in every process that imports veRL).

Installs :mod:`verl_espo.vllm_cpu.dist_alias`, so that veRL's vLLM version check finds ``vllm-cpu`` under the
name ``vllm``. It is a no-op unless ``vllm-cpu`` is installed and ``vllm`` is not; it imports nothing heavy.
"""

from verl_espo.vllm_cpu import dist_alias

dist_alias.install()
