"""Expert rows in a policy loss (CHORD, arXiv 2508.11408): ``L = (1 - mu) L_RL(rollout rows) + mu L_SFT(expert
rows)`` (Eq. 3), shared by the ``egspo`` and ``chord`` losses.

``L_RL`` is the loss's token losses on the rollout tokens, aggregated with the actor's ``loss_agg_mode`` over the
rollout rows of the whole mini-batch; ``L_SFT`` is SFT-phi (Eq. 6) or plain SFT (Eq. 1), veRL's ``token-mean``
over the expert tokens of the whole mini-batch. Both go through veRL's ``agg_loss`` with the step's per-type
counts from the trainer (``hybrid_counts``) in place of ``global_batch_info``'s totals, so value and gradient do
not change when the mini-batch is split into micro-batches or data-parallel ranks, whether or not a micro-batch
holds an expert row. Without expert rows, ``L_RL`` is aggregated exactly as veRL aggregates its own losses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss
from verl.workers.config import ActorConfig

from verl_espo.config.loss import HYBRID_KEY_PREFIX, HybridConfig
from verl_espo.core.chord import HYBRID_COUNT_KEYS, hybrid_counts, sft_token_losses
from verl_espo.core.common import masked, share, to_floats
from verl_espo.loss_inputs import MissingLossInputError, loss_input

__all__ = ["ExpertRows", "expert_rows", "mix_with_sft"]


@dataclass(frozen=True)
class ExpertRows:
    """The expert rows of a (micro-)batch (``(B,)`` bool) and the step's SFT weight ``mu``."""

    rows: torch.Tensor
    mu: float


def expert_rows(loss_mode: str, response_mask: torch.Tensor, expert_mask: Any, mu: Any) -> Optional[ExpertRows]:
    """The validated ``expert_mask`` (``(B,)`` bool) and ``mu`` (keywords, else the actor loss's extras); ``None``
    when the batch has no expert rows (pure RL)."""
    expert_mask, mu = loss_input("expert_mask", expert_mask), loss_input("mu", mu)
    if expert_mask is None:
        return None
    rows = expert_mask.reshape(-1).bool().to(response_mask.device)
    if rows.shape[0] != response_mask.shape[0]:
        raise ValueError(f"expert_mask has {rows.shape[0]} rows, the batch {response_mask.shape[0]}")
    if mu is None:
        raise MissingLossInputError(
            f"expert rows reached the {loss_mode} loss without `mu`, the SFT weight the trainer computes each "
            f"step from {HYBRID_KEY_PREFIX}.*; pass `mu=` when calling the loss directly"
        )
    if not 0.0 <= float(mu) <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    return ExpertRows(rows, float(mu))


def _step_counts(
    given: Optional[Mapping[str, Any]], config: ActorConfig, mask: torch.Tensor, rows: torch.Tensor
) -> dict[str, int]:
    """The mini-batch's per-type counts: from the trainer, or (outside veRL's workers only) from this batch."""
    info = config.global_batch_info
    counts = loss_input("hybrid_counts", given)
    if counts is None:
        if info.get("batch_num_tokens") is not None or int(info.get("dp_size", 1) or 1) > 1:
            raise MissingLossInputError(
                "hybrid training (expert rows in the batch) needs the step's rollout/expert token and row counts "
                "(`hybrid_counts`) that the plugin's trainer computes (`trainer.v1.trainer_mode=plugin_sync`); none "
                "reached the loss, and a per-micro-batch count would make the loss depend on how the batch is split"
            )
        return hybrid_counts(mask.sum(dim=-1), rows)
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


def _weighted_tokens(tokens: float, weight_mean: float) -> float:
    """``sum w_t`` as ``tokens * mean w``; a step whose weights are all 0 has a zero loss, any positive value does."""
    return tokens * weight_mean if tokens * weight_mean > 0.0 else 1.0


def mix_with_sft(
    pg_losses: torch.Tensor,
    rollout_mask: torch.Tensor,
    log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    experts: Optional[ExpertRows],
    hybrid: HybridConfig,
    config: ActorConfig,
    loss_agg_mode: str,
    counts: Optional[Mapping[str, Any]] = None,
    rl_weight_mean: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, actor/hybrid/* metrics)`` of the token losses ``pg_losses`` on ``rollout_mask`` and, with expert
    rows, CHORD's SFT term on them (module docstring); ``counts``: the step's ``hybrid_counts`` (else the extras).

    ``rl_weight_mean``: the RL part's ``token-mean`` denominator becomes its rollout token count times this mean
    weight (EGSPO's ``rl_normalization=gate_weight``); ``None`` keeps the token count.
    """
    info = config.global_batch_info
    if experts is None:
        rl_info = dict(info)
        if rl_weight_mean is not None:
            tokens = info.get("batch_num_tokens")
            tokens = float(rollout_mask.sum()) if tokens is None else float(tokens)
            rl_info["batch_num_tokens"] = _weighted_tokens(tokens, rl_weight_mean)
        return agg_loss(loss_mat=pg_losses, loss_mask=rollout_mask, loss_agg_mode=loss_agg_mode, **rl_info), {}

    mask = response_mask.bool()
    counts = _step_counts(counts, config, mask, experts.rows)
    dp_size = int(info.get("dp_size", 1) or 1)
    rl_tokens = max(counts["rollout_tokens"], 1)
    if rl_weight_mean is not None:
        rl_tokens = _weighted_tokens(float(counts["rollout_tokens"]), rl_weight_mean)
    rl_info = dict(info, batch_num_tokens=rl_tokens, global_batch_size=max(counts["rollout_rows"], 1))
    rl_loss = agg_loss(loss_mat=pg_losses, loss_mask=rollout_mask, loss_agg_mode=loss_agg_mode, **rl_info)

    # L_SFT on the expert rows only (gathered once: a fifth of the rows in CHORD's setting).
    index = experts.rows.nonzero().reshape(-1)
    expert_tokens = mask.index_select(0, index)
    (expert_log_prob,) = masked(expert_tokens, log_prob.index_select(0, index))  # padding: 0, never NaN
    sft_losses, sft_weights = sft_token_losses(expert_log_prob, hybrid.sft_phi)
    sft_loss = agg_loss(
        loss_mat=sft_losses,
        loss_mask=expert_tokens,
        loss_agg_mode="token-mean",  # CHORD Eqs. 1 and 6
        dp_size=dp_size,
        batch_num_tokens=max(counts["expert_tokens"], 1),
        global_batch_size=max(counts["expert_rows"], 1),
    )
    mu = experts.mu
    loss = rl_loss if counts["expert_tokens"] == 0 else (1.0 - mu) * rl_loss + mu * sft_loss  # CHORD Eq. 3

    with torch.no_grad():
        n_expert = torch.count_nonzero(expert_tokens)
        expert_nll = torch.where(expert_tokens, -expert_log_prob.to(sft_losses.dtype), 0.0).sum()
        metrics = to_floats(
            {
                "actor/hybrid/rl_loss": rl_loss,
                "actor/hybrid/sft_loss": sft_loss,
                "actor/hybrid/sft_weight_mean": share(torch.where(expert_tokens, sft_weights, 0.0).sum(), n_expert),
                "actor/hybrid/expert_nll": share(expert_nll, n_expert),
            }
        )
    metrics["actor/hybrid/mu"] = mu
    metrics.update({f"actor/hybrid/{key}": float(value) for key, value in counts.items()})
    return loss, metrics
