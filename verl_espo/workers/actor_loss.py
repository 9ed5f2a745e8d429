"""The plugin's actor loss: veRL's ``ppo_loss`` plus the inputs the plugin's losses need.

Installed in the actor workers by the plugin's trainer (``plugin_sync``) through veRL's public
``ActorRolloutRefWorker.set_loss_fn``. For a ``loss_mode`` without a :class:`~verl_espo.loss_inputs.LossSpec`
it *is* veRL's ``ppo_loss`` (same call, same result). For a declared loss it calls the same ``ppo_loss`` (so the
KL loss, entropy bonus and metric aggregation are veRL's) inside :func:`~verl_espo.loss_inputs.policy_loss_extras`,
which hands the policy loss:

* ``old_entropy``: the old policy's per-token entropy, padded like ``old_log_probs``. veRL's V1 trainer
  computes it in the old-log-prob pass (rollout temperature) and keeps it in the batch under ``entropy``;
  the current policy's entropy is ``model_output["entropy"]`` and is not used here.
* ``entropy_threshold``: the step-level threshold (non-tensor batch data ``entropy_threshold``, set by the
  trainer when the loss's spec asks for one, e.g. ESPO's ``grouping=batch`` and EGSPO's ``gate=batch``).
* ``expert_mask``, ``mu``, ``hybrid_counts``: the expert rows of hybrid training (tensor field ``is_expert``),
  the step's SFT weight and the step's per-type counts (non-tensor data, set by the trainer).
* each of the spec's ``step_statistics`` under its ``name`` (non-tensor data under the spec's
  ``statistic_key``, set by the trainer when its key is on; e.g. EGSPO's ``gate_weight_mean``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import ActorConfig
from verl.workers.utils import losses as verl_losses

from verl_espo.loss_inputs import loss_spec, policy_loss_extras

__all__ = [
    "entropy_aware_ppo_loss",
    "make_actor_loss_fn",
    "ActorLossFn",
    "OLD_ENTROPY_KEY",
    "ENTROPY_THRESHOLD_KEY",
    "EXPERT_KEY",
    "MU_KEY",
    "HYBRID_COUNTS_KEY",
    "padded_old_entropy",
    "row_flags",
]

#: Batch key of the old policy's entropy in veRL's V1 trainer (response-only, nested).
OLD_ENTROPY_KEY = "entropy"
#: Non-tensor batch key of the step-level entropy threshold (ESPO ``grouping=batch``, EGSPO ``gate=batch``).
ENTROPY_THRESHOLD_KEY = "entropy_threshold"
#: Per-row tensor field flagging expert-demonstration rows (1) among rollout rows (0).
EXPERT_KEY = "is_expert"
#: Non-tensor batch key of the step's SFT weight ``mu``.
MU_KEY = "hybrid_mu"
#: Non-tensor batch key of the step's per-type token and row counts.
HYBRID_COUNTS_KEY = "hybrid_counts"


def row_flags(field: torch.Tensor) -> torch.Tensor:
    """A one-value-per-row field (``is_expert``) as a ``(B,)`` bool tensor, nested (TransferQueue) or not."""
    values = field.values() if field.is_nested else field
    flags = values.reshape(-1).bool()
    if flags.numel() != field.shape[0]:
        raise ValueError(f"expected one value per row, got {flags.numel()} values for {field.shape[0]} rows")
    return flags


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
    spec = loss_spec(config.policy_loss.get("loss_mode", "vanilla"))
    if spec is None:
        return verl_losses.ppo_loss(config, model_output, data, dp_group)

    old_entropy = padded_old_entropy(data)
    extras = {
        "old_entropy": old_entropy,
        "entropy_threshold": tu.get_non_tensor_data(data, ENTROPY_THRESHOLD_KEY, None),
        "expert_mask": row_flags(data[EXPERT_KEY]) if EXPERT_KEY in data.keys() else None,
        "mu": tu.get_non_tensor_data(data, MU_KEY, None),
        "hybrid_counts": tu.get_non_tensor_data(data, HYBRID_COUNTS_KEY, None),
        **{s.name: tu.get_non_tensor_data(data, spec.statistic_key(s), None) for s in spec.step_statistics},
    }
    with policy_loss_extras(**extras):
        loss, metrics = verl_losses.ppo_loss(config, model_output, data, dp_group)
    sum_aggregation = (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    )  # the rule ppo_loss uses for its own loss metrics

    # Maxima over micro-batches and ranks, not means (ppo_loss wraps every policy-loss metric as MEAN); the spec's
    # sum metrics are normalised like the loss itself, so summed as veRL sums `actor/pg_loss`.
    for key, metric in list(metrics.items()):
        if key.endswith("_max") and isinstance(metric, Metric) and metric.aggregation == AggregationType.MEAN:
            maximum = Metric(AggregationType.MAX)
            maximum.extend(metric.values)
            metrics[key] = maximum
        elif key in spec.sum_metrics and isinstance(metric, Metric) and sum_aggregation:
            total = Metric(AggregationType.SUM)
            total.extend(metric.values)
            metrics[key] = total
    if old_entropy is None:
        return loss, metrics

    # The loss-side view of the old entropy, aggregated exactly like the trainer's `actor/entropy`.
    with torch.no_grad():
        response_mask = data.select("response_mask").to_padded_tensor()["response_mask"].bool()
        old_entropy_agg = agg_loss(
            loss_mat=old_entropy.float(),
            loss_mask=response_mask,
            loss_agg_mode=config.loss_agg_mode,
            **config.global_batch_info,
        )
    metrics[f"{spec.metric_prefix}old_entropy"] = Metric(
        AggregationType.SUM if sum_aggregation else AggregationType.MEAN, old_entropy_agg
    )
    return loss, metrics


class ActorLossFn:
    """The plugin's actor loss as shipped to the workers: plain containers, built into dataclasses in the worker.

    The trainer hands only the resolved ``actor_rollout_ref.actor`` block (a dict) and the model path; each worker
    builds its own ``ActorConfig`` on the first call (``ppo_loss`` writes per-micro-batch ``global_batch_info``
    into it) and, when a loss needs ``|V|`` from the model (ESPO's adaptive clip with ``espo.vocab_size=null``),
    reads the Hugging Face *config* only, not the tokenizer or weights veRL's ``HFModelConfig`` loads.
    """

    def __init__(self, actor: dict[str, Any], model_path: Optional[str], trust_remote_code: bool = False) -> None:
        self.actor = actor
        self.model_path = model_path
        self.trust_remote_code = trust_remote_code
        self._config: Optional[ActorConfig] = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_config": None}  # rebuilt in the receiving process

    @property
    def config(self) -> ActorConfig:
        if self._config is None:
            config = omega_conf_to_dataclass(OmegaConf.create(self.actor))
            config.model_config = _LightModelConfig(self.model_path, self.trust_remote_code)
            self._config = config
        return self._config

    def __call__(self, model_output: dict[str, Any], data: TensorDict, dp_group=None):
        return entropy_aware_ppo_loss(self.config, model_output, data, dp_group)


class _LightModelConfig:
    """What the plugin's losses read of the model config: ``hf_config`` (for ``vocab_size``), loaded on first use."""

    def __init__(self, path: Optional[str], trust_remote_code: bool) -> None:
        self.path, self.trust_remote_code = path, trust_remote_code
        self._hf_config = None

    @property
    def hf_config(self):
        if self._hf_config is None and self.path is not None:
            from transformers import AutoConfig

            self._hf_config = AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
        return self._hf_config

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def make_actor_loss_fn(actor: DictConfig, model: DictConfig) -> ActorLossFn:
    """The loss function to hand to ``ActorRolloutRefWorker.set_loss_fn``.

    ``actor`` and ``model`` are ``actor_rollout_ref.actor`` / ``.model`` of the trainer config. The actor block is
    validated here (it builds the dataclasses once) and shipped as a resolved dict with the model path.
    """
    omega_conf_to_dataclass(actor)  # fail here, in the trainer, on a bad config
    return ActorLossFn(
        OmegaConf.to_container(actor, resolve=True),
        model.get("path", None),
        bool(model.get("trust_remote_code", False)),
    )
