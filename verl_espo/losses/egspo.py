"""The ``egspo`` and ``chord`` policy losses registered in veRL's policy-loss registry.

Both are ``L = (1 - mu) L_RL(rollout rows) + mu L_SFT(expert rows)`` when expert rows are present (CHORD
arXiv 2508.11408, Eq. 3) and ``L_RL`` alone otherwise. ``L_RL`` is veRL's ``vanilla`` PPO token loss, times
EGSPO's entropy-gate weight for ``egspo`` (arXiv 2602.03309) and unweighted for ``chord``: the two losses
differ only in the gate. ``L_SFT`` is SFT-phi (``policy_loss.hybrid.sft_phi``) or plain SFT.

Normalisation: ``L_RL`` uses the actor's ``loss_agg_mode`` over the rollout rows of the whole mini-batch and
``L_SFT`` the token mean over its expert tokens; the counts come from the trainer (``hybrid_counts``), so
value and gradient do not change when the mini-batch is split into micro-batches or data-parallel ranks,
whether or not a micro-batch holds an expert row. Without expert rows, ``L_RL`` is aggregated exactly as
veRL aggregates ``vanilla`` (``global_batch_info``). ``egspo.rl_normalization=gate_weight`` replaces the RL
part's token count by the sum of the gate's weights (the token count times the step's mean weight,
``step_gate_weight_mean``, from the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.config import ActorConfig

from verl_espo.config.loss import EGSPO_KEY_PREFIX, HYBRID_KEY_PREFIX, EGSPOConfig, HybridConfig
from verl_espo.core.chord import hybrid_counts, sft_token_losses
from verl_espo.core.egspo import egspo_metrics, egspo_token_terms, gate_weights
from verl_espo.core.entropy import sequence_high_entropy_mask, threshold_high_entropy_mask
from verl_espo.loss_inputs import MissingLossInputError, current_extras, missing_old_entropy_message

__all__ = ["compute_policy_loss_egspo", "compute_policy_loss_chord", "HYBRID_COUNT_KEYS", "step_gate_weight_mean"]

#: The step-level counts the trainer hands over for hybrid normalisation (see ``HybridCounts`` in the trainer).
HYBRID_COUNT_KEYS = ("rollout_tokens", "rollout_rows", "expert_tokens", "expert_rows")


def _blocks(config: Optional[ActorConfig], loss_mode: str) -> tuple[EGSPOConfig, HybridConfig]:
    if config is None:
        raise ValueError(f"the {loss_mode} policy loss needs the actor config (`config=`)")
    policy_loss = config.policy_loss
    egspo = policy_loss.get("egspo", None) if policy_loss is not None else None
    hybrid = policy_loss.get("hybrid", None) if policy_loss is not None else None
    if not isinstance(egspo, EGSPOConfig) or not isinstance(hybrid, HybridConfig):
        raise ValueError(
            f"loss_mode={loss_mode} needs actor_rollout_ref.actor.policy_loss._target_="
            "verl_espo.config.PluginPolicyLossConfig (set by `--config-path=pkg://verl_espo.config "
            f"--config-name={loss_mode}_trainer`); got policy_loss of type {type(policy_loss).__name__}"
        )
    return egspo, hybrid


def _gate(
    params: EGSPOConfig,
    old_entropy: Optional[torch.Tensor],
    rollout_mask: torch.Tensor,
    entropy_threshold: Optional[float],
    metrics: dict[str, Any],
) -> torch.Tensor:
    """The high-entropy set of the rollout tokens under ``egspo.gate``."""
    if old_entropy is None:
        raise MissingLossInputError(missing_old_entropy_message("EGSPO gates tokens by", "egspo"))
    if old_entropy.shape != rollout_mask.shape:
        raise ValueError(f"old_entropy has shape {tuple(old_entropy.shape)}, expected {tuple(rollout_mask.shape)}")
    if params.gate == "sequence":
        return sequence_high_entropy_mask(old_entropy, rollout_mask, params.high_entropy_ratio)
    if params.gate == "threshold":
        threshold = float(params.threshold)
    else:
        if entropy_threshold is None:
            raise MissingLossInputError(
                f"{EGSPO_KEY_PREFIX}.gate=batch needs the step-level entropy threshold that the plugin's trainer "
                "computes once per step over the rollout tokens (`trainer.v1.trainer_mode=plugin_sync`, set by "
                "pkg://verl_espo.config/egspo_trainer); none reached the loss. When calling the loss directly, "
                "pass `entropy_threshold=`, or use gate=sequence / gate=threshold."
            )
        threshold = float(entropy_threshold)
    metrics["actor/egspo/entropy_threshold"] = threshold
    return threshold_high_entropy_mask(old_entropy, rollout_mask, threshold)


def step_gate_weight_mean(
    params: EGSPOConfig,
    old_entropy: torch.Tensor,
    old_log_prob: torch.Tensor,
    rollout_mask: torch.Tensor,
    entropy_threshold: Optional[float] = None,
) -> float:
    """Mean gate weight ``sum w_t / N`` over the ``N`` rollout tokens of a step (``egspo.rl_normalization=
    gate_weight``), in float64.

    ``w_t`` is :func:`verl_espo.core.egspo.gate_weights` on the old policy (``phi_source=old``) under the configured
    gate; the trainer calls this once per step on the step's padded ``(B, T)`` tensors.
    """
    mask = rollout_mask.bool()
    high = _gate(params, old_entropy, mask, entropy_threshold, {})
    weights = gate_weights(high, old_log_prob.double(), float(params.phi_scale))
    return float(torch.where(mask, weights, 0.0).sum() / mask.sum().clamp(min=1))


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


def _rl_denominator(tokens: float, gate_weight_mean: float) -> float:
    """``sum w_t`` as ``tokens * mean w``; a step whose weights are all 0 has a zero loss, any positive value does."""
    return tokens * gate_weight_mean if tokens * gate_weight_mean > 0.0 else 1.0


def _hybrid_counts(
    counts: Optional[Mapping[str, Any]], config: ActorConfig, response_mask: torch.Tensor, expert_mask: torch.Tensor
) -> dict[str, int]:
    """The mini-batch's per-type counts: from the trainer, or (outside veRL's workers only) from this batch."""
    info = config.global_batch_info
    inside_worker = info.get("batch_num_tokens") is not None or int(info.get("dp_size", 1) or 1) > 1
    if counts is None:
        if inside_worker:
            raise MissingLossInputError(
                "hybrid training (expert rows in the batch) needs the step's rollout/expert token and row counts "
                "that the plugin's trainer computes (`trainer.v1.trainer_mode=plugin_sync`); none reached the loss, "
                "and a per-micro-batch count would make the loss depend on how the batch is split"
            )
        return hybrid_counts(response_mask.sum(dim=-1), expert_mask)
    missing = [k for k in HYBRID_COUNT_KEYS if k not in counts]
    if missing:
        raise ValueError(f"hybrid_counts lacks {missing}; expected keys {list(HYBRID_COUNT_KEYS)}")
    counts = {k: int(counts[k]) for k in HYBRID_COUNT_KEYS}
    total = info.get("batch_num_tokens")
    if total is not None and counts["rollout_tokens"] + counts["expert_tokens"] != int(total):
        raise ValueError(
            f"the trainer's hybrid counts ({counts['rollout_tokens']} rollout + {counts['expert_tokens']} expert "
            f"tokens) differ from the mini-batch's {int(total)} tokens: hybrid training needs one PPO mini-batch per "
            "step (actor.ppo_mini_batch_size == data.train_batch_size), which the plugin's trainer checks at start-up"
        )
    return counts


def _policy_loss(
    loss_mode: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Optional[ActorConfig],
    rollout_is_weights: Optional[torch.Tensor],
    old_entropy: Optional[torch.Tensor],
    entropy_threshold: Optional[float],
    expert_mask: Optional[torch.Tensor],
    mu: Optional[float],
    hybrid_counts: Optional[Mapping[str, Any]],
    gate_weight_mean: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    params, hybrid = _blocks(config, loss_mode)
    extras = current_extras()
    gate_weight_mean = extras.get("gate_weight_mean") if gate_weight_mean is None else gate_weight_mean
    old_entropy = extras.get("old_entropy") if old_entropy is None else old_entropy
    entropy_threshold = extras.get("entropy_threshold") if entropy_threshold is None else entropy_threshold
    expert_mask = extras.get("expert_mask") if expert_mask is None else expert_mask
    mu = extras.get("mu") if mu is None else mu
    hybrid_counts = extras.get("hybrid_counts") if hybrid_counts is None else hybrid_counts

    mask = response_mask.bool()
    if expert_mask is not None:
        expert_mask = expert_mask.reshape(-1).bool().to(mask.device)
        if expert_mask.shape[0] != mask.shape[0]:
            raise ValueError(f"expert_mask has {expert_mask.shape[0]} rows, the batch {mask.shape[0]}")
        if mu is None:
            raise MissingLossInputError(
                f"expert rows reached the {loss_mode} loss without `mu`, the SFT weight the trainer computes each "
                f"step from {HYBRID_KEY_PREFIX}.*; pass `mu=` when calling the loss directly"
            )
        mu = float(mu)
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1], got {mu}")
        rollout_mask = mask & ~expert_mask.unsqueeze(-1)
    else:
        rollout_mask = mask

    metrics: dict[str, Any] = {}
    if loss_mode == "egspo":
        high = _gate(params, old_entropy, rollout_mask, entropy_threshold, metrics)
        phi_source, phi_scale = params.phi_source, float(params.phi_scale)
    else:
        high, phi_source, phi_scale = None, "old", 1.0  # no gate: plain PPO
    clip_ratio_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    clip_ratio_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    terms = egspo_token_terms(
        log_prob,
        old_log_prob,
        advantages,
        rollout_mask,
        high,
        phi_source=phi_source,
        phi_scale=phi_scale,
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        clip_ratio_c=config.get("clip_ratio_c", 3.0),
        rollout_is_weights=rollout_is_weights,
    )
    rl_metrics = egspo_metrics(terms)
    if loss_mode == "egspo":
        metrics.update(rl_metrics)
    else:  # no gate: only veRL's PPO metrics
        metrics.update({k: v for k, v in rl_metrics.items() if not k.startswith("actor/egspo/")})

    info = config.global_batch_info
    weight_mean = None
    if loss_mode == "egspo" and params.rl_normalization == "gate_weight":
        weight_mean = _gate_weight_mean(info, loss_agg_mode, gate_weight_mean, terms.weights, rollout_mask)
        metrics["actor/egspo/gate_weight_mean"] = weight_mean
    if expert_mask is None:
        rl_info = dict(info)
        if weight_mean is not None:
            tokens = info.get("batch_num_tokens")
            tokens = float(rollout_mask.sum()) if tokens is None else float(tokens)
            rl_info["batch_num_tokens"] = _rl_denominator(tokens, weight_mean)
        loss = agg_loss(loss_mat=terms.pg_losses, loss_mask=rollout_mask, loss_agg_mode=loss_agg_mode, **rl_info)
        return loss, metrics

    counts = _hybrid_counts(hybrid_counts, config, mask, expert_mask)
    dp_size = int(info.get("dp_size", 1) or 1)
    rl_tokens = max(counts["rollout_tokens"], 1)
    if weight_mean is not None:
        rl_tokens = _rl_denominator(float(counts["rollout_tokens"]), weight_mean)
    rl_info = dict(info, batch_num_tokens=rl_tokens, global_batch_size=max(counts["rollout_rows"], 1))
    rl_loss = agg_loss(loss_mat=terms.pg_losses, loss_mask=rollout_mask, loss_agg_mode=loss_agg_mode, **rl_info)

    # L_SFT: token mean over the expert tokens of the whole mini-batch (CHORD Eq. 1 / Eq. 6), computed on the
    # expert rows only (gathered once: a fifth of the rows in CHORD's setting).
    expert_rows = expert_mask.nonzero().reshape(-1)
    expert_tokens = mask.index_select(0, expert_rows)
    expert_log_prob = log_prob.index_select(0, expert_rows)
    sft_losses, sft_weights = sft_token_losses(expert_log_prob, hybrid.sft_phi)
    sft_loss = torch.where(expert_tokens, sft_losses, 0.0).sum() / max(counts["expert_tokens"], 1) * dp_size
    if counts["expert_tokens"] == 0:
        loss = rl_loss  # no expert token in the step: nothing to mix
    else:
        loss = (1.0 - mu) * rl_loss + mu * sft_loss  # CHORD Eq. 3

    with torch.no_grad():
        n_expert = torch.count_nonzero(expert_tokens).clamp(min=1)
        local = torch.stack(
            [
                rl_loss.detach().to(sft_loss.dtype),
                sft_loss.detach(),
                torch.where(expert_tokens, sft_weights, 0.0).sum() / n_expert,
                torch.where(expert_tokens, -expert_log_prob.detach().to(sft_loss.dtype), 0.0).sum() / n_expert,
            ]
        ).tolist()
    metrics.update(
        {
            "actor/hybrid/mu": mu,
            # The two parts, normalised like the loss (summed over micro-batches by the plugin's actor loss).
            "actor/hybrid/rl_loss": local[0],
            "actor/hybrid/sft_loss": local[1],
            "actor/hybrid/sft_weight_mean": local[2],
            "actor/hybrid/expert_nll": local[3],
            "actor/hybrid/rollout_tokens": float(counts["rollout_tokens"]),
            "actor/hybrid/expert_tokens": float(counts["expert_tokens"]),
            "actor/hybrid/rollout_rows": float(counts["rollout_rows"]),
            "actor/hybrid/expert_rows": float(counts["expert_rows"]),
        }
    )
    return loss, metrics


_DOC_ARGS = """
    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(B, T)`` padded tensors, as for veRL's losses.
        loss_agg_mode: the actor's ``loss_agg_mode`` for the RL part.
        config: the actor config whose ``policy_loss`` is a :class:`~verl_espo.config.PluginPolicyLossConfig`.
        rollout_is_weights: optional ``(B, T)`` rollout-correction weights on the RL token losses.
        old_entropy: ``(B, T)`` old-policy entropy (the gate of ``egspo``).
        entropy_threshold: the step's entropy threshold (``egspo.gate=batch``).
        expert_mask: ``(B,)`` bool, expert-demonstration rows; ``None`` is pure RL.
        mu: the SFT weight of the step (required with ``expert_mask``).
        hybrid_counts: the mini-batch's ``rollout_tokens``, ``rollout_rows``, ``expert_tokens``, ``expert_rows``.
        gate_weight_mean: ``egspo`` with ``egspo.rl_normalization=gate_weight``: the step's mean ``w_t`` over its
            rollout tokens (:func:`step_gate_weight_mean`); the RL part's token-mean denominator becomes the
            mini-batch's rollout tokens times it (the sum of the gate's weights when the step is one mini-batch).

    Keyword inputs left as ``None`` are taken from the plugin's actor loss (:mod:`verl_espo.loss_inputs`).
    Returns ``(loss, metrics)``.
"""


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
    return _policy_loss(
        "egspo", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights,
        old_entropy, entropy_threshold, expert_mask, mu, hybrid_counts, gate_weight_mean,
    )  # fmt: skip


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
    old_entropy: torch.Tensor | None = None,  # accepted and unused: CHORD has no gate
    entropy_threshold: float | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    return _policy_loss(
        "chord", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights,
        None, None, expert_mask, mu, hybrid_counts,
    )  # fmt: skip


compute_policy_loss_egspo.__doc__ = (
    "EGSPO: entropy-gated PPO on rollout tokens (+ CHORD's SFT term on expert rows).\n" + _DOC_ARGS
)
compute_policy_loss_chord.__doc__ = "CHORD: plain PPO on rollout tokens + SFT(-phi) on expert rows.\n" + _DOC_ARGS
