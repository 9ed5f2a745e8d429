"""The ``egspo`` policy loss (arXiv 2602.03309) registered in veRL's policy-loss registry; its spec is
:data:`verl_espo.core.egspo.EGSPO_SPEC`.

``L_RL`` is veRL's ``vanilla`` PPO token loss on the rollout tokens times the entropy-gate weight
(:mod:`verl_espo.core.egspo`); with expert rows it is mixed with CHORD's SFT term (:mod:`verl_espo.losses.hybrid`).
``egspo.rl_normalization=gate_weight`` replaces the RL part's token count by the sum of the gate's weights (the
token count times the step's mean weight, :func:`~verl_espo.core.egspo.step_gate_weight_mean`, the spec's step
statistic ``gate_weight_mean``, computed by the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import register_policy_loss
from verl.workers.config import ActorConfig

from verl_espo.config.loss import EGSPO_KEY_PREFIX, EGSPOConfig
from verl_espo.core.common import to_floats, with_rollout_weights
from verl_espo.core.egspo import EGSPO_SPEC, egspo_metrics, egspo_token_terms, gate_high_mask
from verl_espo.loss_inputs import MissingLossInputError, loss_input, missing_old_entropy_message
from verl_espo.losses.common import clip_ratios, config_blocks
from verl_espo.losses.hybrid import expert_rows, mix_with_sft

__all__ = ["compute_policy_loss_egspo"]


def _gate(
    params: EGSPOConfig, old_entropy: Optional[torch.Tensor], rollout_mask: torch.Tensor, threshold: Optional[float]
) -> tuple[torch.Tensor, Optional[float]]:
    """The high-entropy set of the rollout tokens under ``egspo.gate``, and the threshold it used (if any)."""
    if old_entropy is None:
        raise MissingLossInputError(missing_old_entropy_message("EGSPO gates tokens by", "egspo"))
    if old_entropy.shape != rollout_mask.shape:
        raise ValueError(f"old_entropy has shape {tuple(old_entropy.shape)}, expected {tuple(rollout_mask.shape)}")
    if params.gate == "sequence":
        threshold = None
    elif params.gate == "threshold":
        threshold = float(params.threshold)
    elif threshold is None:
        raise MissingLossInputError(
            f"{EGSPO_KEY_PREFIX}.gate=batch needs the step-level entropy threshold that the plugin's trainer "
            "computes once per step over the rollout tokens (`trainer.v1.trainer_mode=plugin_sync`, set by "
            "pkg://verl_espo.config/egspo_trainer); none reached the loss. When calling the loss directly, "
            "pass `entropy_threshold=`, or use gate=sequence / gate=threshold."
        )
    else:
        threshold = float(threshold)
    return gate_high_mask(params.gate, old_entropy, rollout_mask, params.high_entropy_ratio, threshold), threshold


def _gate_weight_mean(
    info: Mapping[str, Any],
    loss_agg_mode: str,
    gate_weight_mean: Optional[float],
    weights: torch.Tensor,
    rollout_mask: torch.Tensor,
) -> float:
    """The step's mean gate weight: from the trainer, or (outside veRL's workers only) from this batch."""
    key = f"{EGSPO_KEY_PREFIX}.rl_normalization=gate_weight"
    if loss_agg_mode != "token-mean":
        raise ValueError(
            f"{key} divides a token sum by the gate's weights and needs actor_rollout_ref.actor.loss_agg_mode="
            f"token-mean, got {loss_agg_mode!r}; set loss_agg_mode=token-mean or rl_normalization=tokens"
        )
    if gate_weight_mean is None:
        inside_worker = info.get("batch_num_tokens") is not None or int(info.get("dp_size", 1) or 1) > 1
        if inside_worker:
            raise MissingLossInputError(
                f"{key} needs the step's mean gate weight, which the plugin's trainer computes "
                "(`trainer.v1.trainer_mode=plugin_sync`); none reached the loss, and a per-micro-batch value would "
                "make the loss depend on how the batch is split. When calling the loss directly, pass "
                "`gate_weight_mean=`"
            )
        gate_weight_mean = float(torch.where(rollout_mask, weights, 0.0).sum() / rollout_mask.sum().clamp(min=1))
    gate_weight_mean = float(gate_weight_mean)
    if not (math.isfinite(gate_weight_mean) and gate_weight_mean >= 0.0):
        raise ValueError(f"gate_weight_mean must be finite and >= 0, got {gate_weight_mean}")
    return gate_weight_mean


@register_policy_loss("egspo")  # type: ignore[arg-type]
def compute_policy_loss_egspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[ActorConfig] = None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    old_entropy: torch.Tensor | None = None,
    entropy_threshold: float | None = None,
    expert_mask: torch.Tensor | None = None,
    mu: float | None = None,
    hybrid_counts: Mapping[str, Any] | None = None,
    gate_weight_mean: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """EGSPO: entropy-gated PPO on the rollout tokens (+ CHORD's SFT term on expert rows), veRL's signature.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(B, T)`` padded tensors, as for veRL's losses.
        loss_agg_mode: the actor's ``loss_agg_mode`` for the RL part.
        config: the actor config whose ``policy_loss`` is a :class:`~verl_espo.config.PluginPolicyLossConfig`.
        rollout_is_weights: optional ``(B, T)`` rollout-correction weights on the RL token losses.
        old_entropy: ``(B, T)`` old-policy entropy (the gate).
        entropy_threshold: the step's entropy threshold (``egspo.gate=batch``).
        expert_mask: ``(B,)`` bool, expert-demonstration rows; ``None`` is pure RL.
        mu: the SFT weight of the step (required with ``expert_mask``).
        hybrid_counts: the mini-batch's ``rollout_tokens``, ``rollout_rows``, ``expert_tokens``, ``expert_rows``.
        gate_weight_mean: with ``egspo.rl_normalization=gate_weight``, the step's mean ``w_t`` over its rollout
            tokens (:func:`~verl_espo.core.egspo.step_gate_weight_mean`); the RL part's token-mean denominator
            becomes the mini-batch's rollout tokens times it (the sum of the gate's weights when the step is one
            mini-batch).

    Keyword inputs left as ``None`` are taken from the plugin's actor loss (:func:`verl_espo.loss_inputs.loss_input`).

    Returns:
        ``(loss, metrics)``: ``actor/egspo/*`` (:func:`~verl_espo.core.egspo.egspo_metrics`, and
        ``entropy_threshold`` for the ``batch``/``threshold`` gates), veRL's PPO metrics over the rollout tokens,
        and ``actor/hybrid/*`` with expert rows.
    """
    params, hybrid = config_blocks(config, EGSPO_SPEC)
    experts = expert_rows("egspo", response_mask, expert_mask, mu)
    mask = response_mask.bool()
    rollout_mask = mask if experts is None else mask & ~experts.rows.unsqueeze(-1)
    high, threshold = _gate(
        params, loss_input("old_entropy", old_entropy), rollout_mask, loss_input("entropy_threshold", entropy_threshold)
    )
    clip_low, clip_high = clip_ratios(config)
    terms = egspo_token_terms(
        log_prob, old_log_prob, advantages, rollout_mask, high,
        phi_source=params.phi_source, phi_scale=float(params.phi_scale),
        clip_ratio_low=clip_low, clip_ratio_high=clip_high, clip_ratio_c=config.get("clip_ratio_c", 3.0),
    )  # fmt: skip
    pg_losses = with_rollout_weights(terms.pg_losses, rollout_mask, rollout_is_weights)
    weight_mean = None
    if params.rl_normalization == "gate_weight":
        given = loss_input("gate_weight_mean", gate_weight_mean)
        weight_mean = _gate_weight_mean(config.global_batch_info, loss_agg_mode, given, terms.weights, rollout_mask)
    loss, hybrid_metrics = mix_with_sft(
        pg_losses, rollout_mask, log_prob, response_mask, experts, hybrid, config, loss_agg_mode, hybrid_counts,
        rl_weight_mean=weight_mean,
    )  # fmt: skip
    metrics: dict[str, Any] = to_floats(egspo_metrics(terms))
    if weight_mean is not None:
        metrics["actor/egspo/gate_weight_mean"] = weight_mean
    if threshold is not None:
        metrics["actor/egspo/entropy_threshold"] = threshold
    return loss, {**metrics, **hybrid_metrics}
