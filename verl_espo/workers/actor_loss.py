"""The plugin's actor loss: veRL's ``ppo_loss`` plus the old policy's entropy for entropy-aware losses.

Installed in the actor workers by the ``espo_sync`` trainer through veRL's public
``ActorRolloutRefWorker.set_loss_fn``. For ``loss_mode`` values outside
:data:`~verl_espo.losses.ENTROPY_AWARE_LOSS_MODES` it *is* veRL's ``ppo_loss`` (same call, same result).
For ESPO it calls the same ``ppo_loss`` (so the KL loss, entropy bonus and metric aggregation are veRL's)
inside :func:`~verl_espo.losses.extras.policy_loss_extras`, which hands the policy loss:

* ``old_entropy``: the old policy's per-token entropy, padded like ``old_log_probs``. veRL's V1 trainer
  computes it in the old-log-prob pass (rollout temperature) and keeps it in the batch under ``entropy``;
  the current policy's entropy is ``model_output["entropy"]`` and is not used here.
* ``entropy_threshold``: the step-level threshold of ``espo.grouping=batch`` (non-tensor batch data
  ``espo_entropy_threshold``, set by the trainer).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import ActorConfig
from verl.workers.utils import losses as verl_losses

from verl_espo.losses import ENTROPY_AWARE_LOSS_MODES
from verl_espo.losses.extras import policy_loss_extras

__all__ = [
    "entropy_aware_ppo_loss",
    "make_actor_loss_fn",
    "OLD_ENTROPY_KEY",
    "ENTROPY_THRESHOLD_KEY",
    "padded_old_entropy",
]

#: Batch key of the old policy's entropy in veRL's V1 trainer (response-only, nested).
OLD_ENTROPY_KEY = "entropy"
#: Non-tensor batch key of the step-level entropy threshold (``espo.grouping=batch``).
ENTROPY_THRESHOLD_KEY = "espo_entropy_threshold"


def padded_old_entropy(data: TensorDict) -> torch.Tensor | None:
    """The old entropy of a micro-batch as a ``(B, T)`` tensor aligned with ``old_log_probs``, or None."""
    if OLD_ENTROPY_KEY not in data.keys():
        return None
    padded = data.select(OLD_ENTROPY_KEY, "old_log_probs").to_padded_tensor()
    entropy = padded[OLD_ENTROPY_KEY]
    if entropy.shape != padded["old_log_probs"].shape:
        raise ValueError(
            f"old entropy {tuple(entropy.shape)} and old_log_probs {tuple(padded['old_log_probs'].shape)} differ"
        )
    return entropy


def entropy_aware_ppo_loss(
    config: ActorConfig, model_output: dict[str, Any], data: TensorDict, dp_group=None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Drop-in replacement for ``verl.workers.utils.losses.ppo_loss`` (same signature and return value)."""
    loss_mode = config.policy_loss.get("loss_mode", "vanilla")
    if loss_mode not in ENTROPY_AWARE_LOSS_MODES:
        return verl_losses.ppo_loss(config, model_output, data, dp_group)

    old_entropy = padded_old_entropy(data)
    threshold = tu.get_non_tensor_data(data, ENTROPY_THRESHOLD_KEY, None)
    with policy_loss_extras(old_entropy=old_entropy, entropy_threshold=threshold):
        loss, metrics = verl_losses.ppo_loss(config, model_output, data, dp_group)

    # Maxima over micro-batches and ranks, not means (ppo_loss wraps every policy-loss metric as MEAN).
    for key, metric in list(metrics.items()):
        if key.endswith("_max") and isinstance(metric, Metric) and metric.aggregation == AggregationType.MEAN:
            maximum = Metric(AggregationType.MAX)
            maximum.extend(metric.values)
            metrics[key] = maximum

    # The loss-side view of the old entropy, aggregated exactly like the trainer's `actor/entropy`.
    with torch.no_grad():
        response_mask = data.select("response_mask").to_padded_tensor()["response_mask"].bool()
        old_entropy_agg = agg_loss(
            loss_mat=old_entropy.float(),
            loss_mask=response_mask,
            loss_agg_mode=config.loss_agg_mode,
            **config.global_batch_info,
        )
    sum_aggregation = (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    )  # the rule ppo_loss uses for its own loss metrics
    metrics["actor/espo/old_entropy"] = Metric(
        AggregationType.SUM if sum_aggregation else AggregationType.MEAN, old_entropy_agg
    )
    return loss, metrics


def make_actor_loss_fn(actor: DictConfig, model: DictConfig) -> Callable[..., tuple[torch.Tensor, dict[str, Any]]]:
    """The loss function to hand to ``ActorRolloutRefWorker.set_loss_fn``.

    ``actor`` and ``model`` are ``actor_rollout_ref.actor`` / ``.model`` of the trainer config. The actor
    config dataclass gets the model config attached exactly as veRL's worker does in ``init_model``, so
    the loss can read ``|V|`` from it.
    """
    config = omega_conf_to_dataclass(actor)
    config.model_config = omega_conf_to_dataclass(model)
    return partial(entropy_aware_ppo_loss, config=config)
