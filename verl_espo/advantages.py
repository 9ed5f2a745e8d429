"""Advantage estimators the plugin registers with veRL's ``register_adv_est``.

* ``hybrid_grpo``: GRPO for hybrid SFT + RL batches. Rollout rows get exactly veRL's ``grpo`` advantage (the
  same function on the same rows, so identical values when there is no expert row); expert rows (uid prefix
  ``expert-``, set by the plugin's trainer) get zero and never enter a rollout group's statistics.
* ``espo_verified``: ESPO's Eq. 11 (arXiv 2512.00499) read literally: GRPO normalisation over the responses of
  a prompt whose verification succeeded (the set G), zero advantage for the others. A reward function reports
  a failed verification by returning a non-finite score (``float("nan")``); with every response verified it
  equals ``grpo`` exactly. veRL's ``critic/score/*`` metrics then include the NaN, which makes failures visible.

Both read ``algorithm.norm_adv_by_std_in_grpo`` like ``grpo``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, register_adv_est

__all__ = ["EXPERT_UID_PREFIX", "is_expert_uid", "compute_hybrid_grpo_advantage", "compute_espo_verified_advantage"]

#: uid prefix the plugin's trainer gives expert-demonstration rows.
EXPERT_UID_PREFIX = "expert-"


def is_expert_uid(index: np.ndarray) -> np.ndarray:
    """Boolean array: which rows are expert demonstrations (by their uid)."""
    return np.array([str(uid).startswith(EXPERT_UID_PREFIX) for uid in index], dtype=bool)


def _grpo_on_rows(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    rows: np.ndarray,
    config: Optional[Any],
    epsilon: float,
) -> torch.Tensor:
    """veRL's ``grpo`` on the selected rows, zero elsewhere."""
    advantages = torch.zeros_like(token_level_rewards)
    if rows.any():
        selected = torch.from_numpy(rows)
        norm = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
        values, _ = compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards[selected],
            response_mask=response_mask[selected],
            index=index[rows],
            epsilon=epsilon,
            norm_adv_by_std_in_grpo=norm,
            config=config,
        )
        advantages[selected] = values.to(advantages.dtype)
    return advantages


@register_adv_est("hybrid_grpo")
def compute_hybrid_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Optional[Any] = None,
    epsilon: float = 1e-6,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO on rollout rows, zero on expert rows (``(advantages, returns)``, both ``(B, T)``)."""
    index = np.asarray(index, dtype=object)
    advantages = _grpo_on_rows(token_level_rewards, response_mask, index, ~is_expert_uid(index), config, epsilon)
    return advantages, advantages


@register_adv_est("espo_verified")
def compute_espo_verified_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Optional[Any] = None,
    epsilon: float = 1e-6,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPO Eq. 11: GRPO over the verified responses of each prompt (finite score), zero for the others."""
    index = np.asarray(index, dtype=object)
    scores = token_level_rewards.sum(dim=-1)
    verified = torch.isfinite(scores).numpy() & ~is_expert_uid(index)
    rewards = torch.where(
        torch.isfinite(token_level_rewards), token_level_rewards, torch.zeros_like(token_level_rewards)
    )
    advantages = _grpo_on_rows(rewards, response_mask, index, verified, config, epsilon)
    return advantages, advantages
