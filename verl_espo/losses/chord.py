"""The ``chord`` policy loss (CHORD, arXiv 2508.11408) registered in veRL's policy-loss registry; its spec is
:data:`verl_espo.core.chord.CHORD_SPEC`.

veRL's ``vanilla`` PPO token loss on the rollout tokens, mixed with the SFT(-phi) term on expert rows
(:mod:`verl_espo.losses.hybrid`): EGSPO without its entropy gate, so the two differ only in the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import register_policy_loss
from verl.workers.config import ActorConfig

from verl_espo.core.chord import CHORD_SPEC
from verl_espo.core.common import masked_ppo_token_terms, ppo_metrics, to_floats, with_rollout_weights
from verl_espo.losses.common import clip_ratios, config_blocks
from verl_espo.losses.hybrid import expert_rows, mix_with_sft

__all__ = ["compute_policy_loss_chord"]


@register_policy_loss("chord")  # type: ignore[arg-type]
def compute_policy_loss_chord(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[ActorConfig] = None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    expert_mask: torch.Tensor | None = None,
    mu: float | None = None,
    hybrid_counts: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CHORD: PPO on the rollout tokens + SFT(-phi) on expert rows (Eq. 3), with veRL's ``PolicyLossFn`` signature.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(B, T)`` padded tensors, as for veRL's losses.
        loss_agg_mode: the actor's ``loss_agg_mode`` for the RL part.
        config: the actor config whose ``policy_loss`` is a :class:`~verl_espo.config.PluginPolicyLossConfig`.
        rollout_is_weights: optional ``(B, T)`` rollout-correction weights on the RL token losses.
        expert_mask: ``(B,)`` bool, expert-demonstration rows; ``None`` is pure RL (veRL's ``vanilla``).
        mu: the SFT weight of the step (required with ``expert_mask``).
        hybrid_counts: the mini-batch's ``rollout_tokens``, ``rollout_rows``, ``expert_tokens``, ``expert_rows``.

    Keyword inputs left as ``None`` are taken from the plugin's actor loss (:func:`verl_espo.loss_inputs.loss_input`).

    Returns:
        ``(loss, metrics)``: veRL's PPO metrics over the rollout tokens, and ``actor/hybrid/*`` with expert rows.
    """
    (hybrid,) = config_blocks(config, CHORD_SPEC)
    experts = expert_rows("chord", response_mask, expert_mask, mu)
    mask = response_mask.bool()
    rollout_mask = mask if experts is None else mask & ~experts.rows.unsqueeze(-1)
    clip_low, clip_high = clip_ratios(config)
    ppo = masked_ppo_token_terms(
        log_prob, old_log_prob, advantages, rollout_mask, clip_low, clip_high, config.get("clip_ratio_c", 3.0)
    )
    pg_losses = with_rollout_weights(ppo.pg_losses, rollout_mask, rollout_is_weights)
    loss, hybrid_metrics = mix_with_sft(
        pg_losses, rollout_mask, log_prob, response_mask, experts, hybrid, config, loss_agg_mode, hybrid_counts
    )
    return loss, {**to_floats(ppo_metrics(ppo, rollout_mask)), **hybrid_metrics}
