"""The ``espo`` policy loss registered in veRL's policy-loss registry (arXiv 2512.00499); its spec is
:data:`verl_espo.core.espo.ESPO_SPEC`.

This module is veRL plumbing only: it reads ``config.policy_loss.espo``, picks the grouping (the high-entropy
group of ``sequence``/``batch``, or one group per token for ``token``), calls the tensor math in
:mod:`verl_espo.core.espo` and aggregates with veRL's ``agg_loss`` and ``global_batch_info`` (so the loss does
not change when a mini-batch is split into micro-batches or across data-parallel ranks).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.config import ActorConfig

from verl_espo.config.loss import ESPO_KEY_PREFIX, ESPOConfig
from verl_espo.core.entropy import high_entropy_count, sequence_high_entropy_mask, threshold_high_entropy_mask
from verl_espo.core.espo import ESPO_SPEC, espo_metrics, espo_token_grouping_terms, espo_token_terms
from verl_espo.loss_inputs import MissingLossInputError, loss_input, missing_old_entropy_message
from verl_espo.losses.common import clip_ratios, config_blocks

__all__ = ["compute_policy_loss_espo", "MissingOldEntropyError", "resolve_vocab_size"]

MISSING_ENTROPY_HELP = missing_old_entropy_message("ESPO groups tokens by", "espo")


class MissingOldEntropyError(MissingLossInputError):
    """The loss was called without the old policy's per-token entropy."""


def resolve_vocab_size(config: ActorConfig, params: ESPOConfig) -> int:
    """``|V|`` of Eq. 8: ``espo.vocab_size`` if set, else the actor model's ``config.vocab_size``."""
    if params.vocab_size is not None:
        return params.vocab_size
    hf_config = getattr(config.get("model_config", None), "hf_config", None)
    vocab = getattr(hf_config, "vocab_size", None)
    if vocab is None:
        vocab = getattr(getattr(hf_config, "text_config", None), "vocab_size", None)
    if vocab is None:
        raise ValueError(
            f"{ESPO_KEY_PREFIX}.vocab_size is unset and the actor config carries no model config to read it from; "
            "set it to the model's logits size (e.g. 151936 for Qwen3)"
        )
    return int(vocab)


def tie_collapse_fraction(terms, rho: float) -> float:
    """Share of non-empty responses that should have two groups (``k < L``) but are one high group because every
    token tied with the k-th largest entropy (``espo.ties=join`` with bf16-rounded entropies)."""
    with torch.no_grad():
        n_valid = terms.group_sizes.sum(dim=0)
        k = high_entropy_count(rho, n_valid)
        collapsed = (n_valid > 0) & (k < n_valid) & (terms.group_sizes[0] == n_valid)
        return (torch.count_nonzero(collapsed) / torch.count_nonzero(n_valid).clamp(min=1)).item()


@register_policy_loss("espo")  # type: ignore[arg-type]
def compute_policy_loss_espo(
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
) -> tuple[torch.Tensor, dict[str, Any]]:
    """ESPO policy loss (Eqs. 5-10) with veRL's ``PolicyLossFn`` signature.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(B, T)`` padded tensors, as for veRL's losses.
        loss_agg_mode: the actor's ``loss_agg_mode``; used only with ``espo.aggregation=actor``.
        config: the actor config whose ``policy_loss`` is an
            :class:`~verl_espo.config.PluginPolicyLossConfig`; aggregation uses ``config.global_batch_info``.
        rollout_is_weights: optional ``(B, T)`` rollout-correction weights multiplying the token losses.
        old_entropy: ``(B, T)`` old-policy entropy. When omitted, taken from the plugin's actor loss
            (:func:`verl_espo.loss_inputs.loss_input`); an error if neither provides it.
        entropy_threshold: the step-level threshold for ``espo.grouping=batch`` (from the trainer when
            omitted); unused by the other groupings.

    Returns:
        ``(loss, metrics)``: the scalar loss and ``actor/espo/*`` (``high/*``, ``low/*`` for the two-group
        groupings, ``token/*`` for ``grouping=token``; see :func:`~verl_espo.core.espo.espo_metrics`),
        ``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/pg_clipfrac_lower`` (always 0: ESPO has no dual clip).
    """
    (params,) = config_blocks(config, ESPO_SPEC)
    old_entropy = loss_input("old_entropy", old_entropy)
    if old_entropy is None:
        raise MissingOldEntropyError(MISSING_ENTROPY_HELP)
    if old_entropy.shape != log_prob.shape:
        raise ValueError(f"old_entropy has shape {tuple(old_entropy.shape)}, expected {tuple(log_prob.shape)}")

    metrics: dict[str, Any] = {}
    clip_ratio_low, clip_ratio_high = clip_ratios(config)
    options = dict(
        ratio=params.ratio,
        clip=params.clip,
        alpha=params.alpha,
        vocab_size=resolve_vocab_size(config, params) if params.clip == "adaptive" else None,
        eps_min=float(params.eps_min),
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        rollout_is_weights=rollout_is_weights,
    )
    if params.grouping == "token":  # every token its own group: needs neither rho nor a step threshold
        terms = espo_token_grouping_terms(log_prob, old_log_prob, advantages, response_mask, old_entropy, **options)
    else:
        if params.grouping == "sequence":
            high = sequence_high_entropy_mask(old_entropy, response_mask, params.high_entropy_ratio, ties=params.ties)
        else:
            entropy_threshold = loss_input("entropy_threshold", entropy_threshold)
            if entropy_threshold is None:
                raise MissingLossInputError(
                    f"{ESPO_KEY_PREFIX}.grouping=batch needs the step-level entropy threshold that the plugin's "
                    "trainer computes once per step (`trainer.v1.trainer_mode=plugin_sync`); none reached the loss. "
                    "When calling the loss directly, pass `entropy_threshold=`."
                )
            high = threshold_high_entropy_mask(old_entropy, response_mask, float(entropy_threshold))
            metrics["actor/espo/entropy_threshold"] = float(entropy_threshold)
        terms = espo_token_terms(log_prob, old_log_prob, advantages, response_mask, old_entropy, high, **options)

    mask = response_mask.bool()
    if params.aggregation == "paper":
        # Eq. 5: each response's value sum_g (1/K)(1/n_g) sum_t l_t, combined across responses exactly as
        # veRL's seq-mean-token-sum combines row sums (global batch size, dp size). grouping=token: (1/L) sum_t l_t,
        # i.e. veRL's seq-mean-token-mean of l_t.
        loss = agg_loss(
            loss_mat=terms.row_losses.unsqueeze(-1),
            loss_mask=terms.row_valid.unsqueeze(-1),
            loss_agg_mode="seq-mean-token-sum",
            **config.global_batch_info,
        )
    else:
        loss = agg_loss(
            loss_mat=terms.pg_losses, loss_mask=mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
        )

    metrics.update(espo_metrics(terms))
    metrics["actor/pg_clipfrac_lower"] = 0.0
    if params.grouping == "sequence":
        metrics["actor/espo/tie_collapse_frac"] = tie_collapse_fraction(terms, params.high_entropy_ratio)
    return loss, metrics
