"""Bundled toy assets for the no-GPU default run: a tiny local model, tokenizer and synthetic task (no downloads).

* :mod:`verl_espo.toy.assets`: character-level tokenizer, tiny Qwen2, :func:`build_assets` (model path), and
  :func:`build_vllm_cpu_assets` (head size 32, for veRL's vLLM rollout on CPU; ``python -m verl_espo.toy``);
* :mod:`verl_espo.toy.task`: one-digit addition with ``\\boxed{}`` answers, :func:`write_dataset` (parquet);
* :mod:`verl_espo.toy.warmup`: the seconds-long format warm-up :func:`build_assets` runs.

Rewards: ``data_source="toy_arithmetic"``, scored by :func:`verl_espo.rewards.math.compute_score`.
"""

from verl_espo.toy.assets import VLLM_CPU_MODEL, build_assets, build_vllm_cpu_assets
from verl_espo.toy.task import DATA_SOURCE, write_dataset

__all__ = ["DATA_SOURCE", "VLLM_CPU_MODEL", "build_assets", "build_vllm_cpu_assets", "write_dataset"]
