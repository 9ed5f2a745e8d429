"""Bundled toy assets for the no-GPU default run: a tiny local model, tokenizer and synthetic task (no downloads).

* :mod:`verl_espo.toy.assets`: character-level tokenizer, tiny Qwen2 (head size 32, which both the ``hf``
  rollout and vLLM's CPU attention take), :func:`build_assets` (model path; ``python -m verl_espo.toy OUT``);
* :mod:`verl_espo.toy.task`: one-digit addition with ``\\boxed{}`` answers, :func:`write_dataset` (parquet);
* :mod:`verl_espo.toy.warmup`: the seconds-long format warm-up :func:`build_assets` runs.

Rewards: ``data_source="toy_arithmetic"``, scored by :func:`verl_espo.rewards.math.compute_score`.
"""

from verl_espo.toy.assets import build_assets
from verl_espo.toy.task import DATA_SOURCE, write_dataset

__all__ = ["DATA_SOURCE", "build_assets", "write_dataset"]
