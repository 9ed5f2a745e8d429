"""``plugin_sync``: veRL's V1 synchronous trainer plus what the plugin's losses need.

Selected with ``trainer.v1.trainer_mode=plugin_sync`` (the default of the plugin's ``*_trainer`` configs). It
behaves exactly like veRL's ``sync`` trainer, plus, for the losses whose :class:`~verl_espo.loss_inputs.LossSpec`
asks for them:

1. at start-up it refuses settings it cannot honour (:func:`~verl_espo.trainer.checks.check_trainer_config`);
2. after the workers are built it installs the plugin's actor loss through veRL's public
   ``ActorRolloutRefWorker.set_loss_fn``;
3. with ``data.expert.files`` it mixes ``data.expert.batch_size`` expert demonstrations into every step's batch
   before the old-log-prob pass (CHORD's sample-level mixing): flagged ``is_expert``, no reward call, their own
   GRPO-free advantage (zero), excluded from veRL's reward/length metrics (tagged like veRL's padding rows);
4. once per step, before the actor update, it computes the step-level statistics the loss needs: the entropy
   threshold over the step's rollout tokens (the spec's ``step_threshold``, when its key is on), the spec's
   ``step_statistics`` that are switched on (:func:`step_statistics`), CHORD's ``mu`` and the per-type token and
   row counts, and hands them to every micro-batch and rank; before that it logs the step's verifier time-outs and
   NaN rewards and refuses NaN advantages (:mod:`verl_espo.trainer.step_checks`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Optional, Union

import torch
import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.padding_utils import construct_minimal_padding_template
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug.metrics import calculate_debug_metrics
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.config import PolicyLossConfig

from verl_espo.advantages import EXPERT_UID_PREFIX
from verl_espo.core.chord import hybrid_counts, mu_schedule
from verl_espo.core.entropy import batch_entropy_threshold
from verl_espo.loss_inputs import StepStatistic, loss_spec, step_statistics, step_threshold_ratio
from verl_espo.trainer.checks import check_trainer_config, expert_data_config
from verl_espo.trainer.expert_data import ExpertDemonstrations, expert_row
from verl_espo.trainer.resume import RestoreStepsOnDispatch, inflight_prompt_steps, kept_records, restore_records
from verl_espo.trainer.step_checks import check_step
from verl_espo.workers.actor_loss import (
    ENTROPY_THRESHOLD_KEY,
    EXPERT_KEY,
    HYBRID_COUNTS_KEY,
    MU_KEY,
    OLD_ENTROPY_KEY,
    make_actor_loss_fn,
    row_flags,
)

__all__ = [
    "PluginTrainerMixin",
    "PluginTrainerSync",
    "PluginTrainerColocateAsync",
    "PluginTrainerSeparateAsync",
    "step_threshold_ratio",
    "hybrid_counts",
    "compute_step_statistics",
]

logger = logging.getLogger(__name__)


def _flat_tokens(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-row field as flat token values and each token's row index (nested jagged or padded ``(B, T)``)."""
    if values.is_nested:
        lengths = values.offsets().diff()
        flat = values.values()
    else:
        lengths = torch.full((values.shape[0],), values.shape[1], dtype=torch.int64)
        flat = values.reshape(-1)
    return flat, torch.repeat_interleave(torch.arange(lengths.numel()), lengths)


def compute_step_statistics(
    policy_loss: Union[DictConfig, PolicyLossConfig],
    data: TensorDict,
    expert: torch.Tensor,
    entropy_threshold: Optional[float],
) -> dict[StepStatistic, float]:
    """The values of the step statistics the configured loss needs (:func:`~verl_espo.loss_inputs.step_statistics`).

    ``policy_loss`` is the actor's policy-loss config, as the trainer holds it or as its dataclass; ``data`` holds
    the step's rows with ``response_mask`` and each statistic's ``fields`` (nested or padded), padded here once;
    ``expert`` flags the expert rows, left out of the rollout tokens; ``entropy_threshold`` is the step's.
    """
    statistics = step_statistics(policy_loss)
    if not statistics:
        return {}
    fields = list(dict.fromkeys(field for statistic in statistics for field in statistic.fields))
    padded = data.select("response_mask", *fields).to_padded_tensor()
    rollout_mask = padded["response_mask"].bool() & ~expert.unsqueeze(-1)
    typed = omega_conf_to_dataclass(policy_loss)  # the loss's typed, validated blocks
    return {
        s: float(s.compute(typed, {f: padded[f] for f in s.fields}, rollout_mask, entropy_threshold))
        for s in statistics
    }


class PluginTrainerMixin:
    """What the plugin adds to a veRL V1 trainer (module docstring); combined with veRL's trainer classes below.

    ``base_trainer_mode`` is the veRL mode the class behaves as: veRL's base trainer switches on
    ``self.trainer_mode`` (``== "sync"`` for the replay buffer, dataloader and checkpoints, and
    ``config.trainer.v1[<mode>]`` for the mode's settings), whatever name selected the plugin's class.
    """

    base_trainer_mode = "sync"

    def __init__(self, config: DictConfig):
        check_trainer_config(config)
        self.expert_config = expert_data_config(config)
        self.expert_data: Optional[ExpertDemonstrations] = None
        super().__init__(config)

    @property
    def trainer_mode(self) -> str:
        return self.base_trainer_mode

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.selected_trainer_mode = value

    @property
    def hybrid(self) -> bool:
        return self.expert_config.enabled

    def on_init_end(self) -> None:
        # After veRL loaded a checkpoint: the metrics veRL's file logger will erase when it opens its file.
        self._kept_metric_records = kept_records(self.config, self.global_steps)
        loss_fn = make_actor_loss_fn(self.config.actor_rollout_ref.actor, self.config.actor_rollout_ref.model)
        self.actor_rollout_wg.set_loss_fn(loss_fn)
        logger.info("verl_espo: installed the plugin's actor loss in the actor workers")
        if self.hybrid:
            data = self.config.data
            self.expert_data = ExpertDemonstrations(
                self.expert_config,
                self.tokenizer,
                max_prompt_length=data.max_prompt_length,
                max_response_length=data.max_response_length,
                prompt_key=data.get("prompt_key", "prompt"),
                chat_template_kwargs=data.get("apply_chat_template_kwargs", None),
            )
            logger.info(
                "verl_espo: %d expert demonstrations, %d per step", len(self.expert_data), self.expert_config.batch_size
            )
        super().on_init_end()

    def on_train_begin(self) -> None:
        restore_records(self.logger, getattr(self, "_kept_metric_records", []))  # a resumed run's earlier steps
        super().on_train_begin()

    def _reissue_inflight_prompts(self, partition_id: str = "train") -> int:
        # Async modes, resuming: veRL re-issues the checkpoint's in-flight prompt groups tagged with the resumed step;
        # tagged back with the step they were submitted in (before their dispatch), they are trained in the step the
        # uninterrupted run would (verl_espo/trainer/resume.py).
        if self.trainer_mode == "sync":
            return super()._reissue_inflight_prompts(partition_id)
        manager = self.agent_loop_manager
        self.agent_loop_manager = RestoreStepsOnDispatch(manager, inflight_prompt_steps(partition_id), partition_id)
        try:
            return super()._reissue_inflight_prompts(partition_id)
        finally:
            self.agent_loop_manager = manager

    # ------------------------------------------------------------------ expert rows (hybrid training)
    def _balance_batch(self, batch: KVBatchMeta, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.hybrid and batch.partition_id == "train":
            batch = self._add_expert_rows(batch, metrics)
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        if not self.hybrid:
            return super()._get_required_batch_multiple(dp_size)
        # One mini-batch per step (checked at start-up): the step's rows split over the data-parallel ranks,
        # and a whole number of rollout groups for the mini-batch size veRL derives from rollout.n.
        return math.lcm(dp_size, int(self.config.actor_rollout_ref.rollout.n))

    def _expert_batch_index(self) -> int:
        """1-based index of this update's expert batch: veRL runs ``parameter_sync_step`` updates per global step
        (``separate_async``), each of which gets its own demonstrations and keys."""
        per_step = int(getattr(self, "parameter_sync_step", 1) or 1)
        return (self.global_steps - 1) * per_step + int(getattr(self, "local_trigger_step", 0) or 0) + 1

    def _add_expert_rows(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        index = self._expert_batch_index()
        samples = self.expert_data.samples_for_step(index)
        # Rollout rows are flagged 0; veRL's padding rows copy the first rollout row, flag included.
        flagged = tq.kv_batch_put(
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({EXPERT_KEY: torch.zeros(len(batch), 1, dtype=torch.int64)}, batch_size=len(batch)),
        )
        source = tq.kv_batch_get(keys=[batch.keys[0]], partition_id=batch.partition_id)[0]
        template, template_tag = construct_minimal_padding_template(source, batch.tags[0], self.tokenizer.eos_token_id)
        keys, rows, tags = [], [], []
        for j, sample in enumerate(samples):
            uid = f"{EXPERT_UID_PREFIX}{index}-{j}"
            keys.append(f"{uid}_0_0")  # veRL's {uid}_{session}_{index} key format
            rows.append(expert_row(template, sample, uid))
            tag = dict(template_tag)
            prompt_len, response_len = len(sample.prompt_ids), len(sample.response_ids)
            # is_padding keeps expert rows out of veRL's reward, advantage and length metrics.
            tag.update(is_padding=True, is_expert=True, prompt_len=prompt_len, response_len=response_len,
                       seq_len=prompt_len + response_len, global_steps=self.global_steps,
                       min_global_steps=self.global_steps, max_global_steps=self.global_steps)  # fmt: skip
            tags.append(tag)
        metrics["actor/hybrid/expert_rows_in_step"] = len(keys)
        if not keys:
            return batch
        tq.kv_batch_put(keys=keys, partition_id=batch.partition_id, fields=list_of_dict_to_tensordict(rows), tags=tags)
        lengths = torch.tensor([len(s.response_ids) for s in samples], dtype=torch.float32)
        metrics["actor/hybrid/expert_response_length_mean"] = float(lengths.mean())
        metrics["actor/hybrid/expert_truncated_total"] = self.expert_data.truncated
        fields = list(dict.fromkeys([*(flagged.fields or batch.fields or []), EXPERT_KEY]))
        return KVBatchMeta(
            keys=batch.keys + keys,
            tags=batch.tags + tags,
            partition_id=batch.partition_id,
            fields=fields,
            extra_info=batch.extra_info,
        )

    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_old_log_prob(batch, metrics)
        if not self.hybrid:
            return batch
        # veRL's entropy and rollout-vs-actor metrics cover every row; recompute them over the rollout rows.
        calculate_log_probs = self.config.actor_rollout_ref.rollout.calculate_log_probs
        fields = [OLD_ENTROPY_KEY, "old_log_probs", "response_mask", EXPERT_KEY]
        if calculate_log_probs:
            fields += ["responses", "rollout_log_probs"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        expert = row_flags(data[EXPERT_KEY])
        if calculate_log_probs and expert.any():
            # Expert rows were not sampled by the rollout: their "rollout" log-probs are the old ones (IS ratio 1).
            rows = expert.nonzero().reshape(-1).tolist()
            expert_old = tu.index_select_tensor_dict(data.select("old_log_probs"), rows)["old_log_probs"]
            tq.kv_batch_put(
                keys=[batch.keys[i] for i in rows],
                partition_id=batch.partition_id,
                fields=TensorDict({"rollout_log_probs": expert_old}, batch_size=len(rows)),
            )
        padded = data.to_padded_tensor()
        mask = padded["response_mask"].bool()
        actor = self.config.actor_rollout_ref.actor
        for name, rows in (("actor/entropy", ~expert), ("actor/hybrid/expert_entropy", expert)):
            if rows.any():
                metrics[name] = agg_loss(
                    loss_mat=padded[OLD_ENTROPY_KEY][rows].float(),
                    loss_mask=mask[rows],
                    loss_agg_mode=actor.loss_agg_mode,
                    loss_scale_factor=actor.loss_scale_factor,
                ).item()
        if calculate_log_probs and (~expert).any():
            rollout = DataProto(
                batch=TensorDict(
                    {
                        k: padded[k][~expert]
                        for k in ("old_log_probs", "rollout_log_probs", "response_mask", "responses")
                    },
                    batch_size=int((~expert).sum()),
                )
            )
            metrics.update(calculate_debug_metrics(rollout))
        return batch

    # ------------------------------------------------------------------ step-level statistics
    @contextlib.contextmanager
    def _one_mini_batch(self, batch: KVBatchMeta) -> Iterator[None]:
        """While veRL's ``_update_actor`` runs, make its mini-batch the whole step batch (hybrid training)."""
        actor = self.config.actor_rollout_ref.actor
        before = actor.ppo_mini_batch_size
        with open_dict(actor):
            actor.ppo_mini_batch_size = len(batch) // int(self.config.actor_rollout_ref.rollout.n)
        try:
            yield
        finally:
            with open_dict(actor):
                actor.ppo_mini_batch_size = before

    def _update_actor(self, batch: KVBatchMeta, metrics: dict):
        check_step(batch, metrics, self.global_steps)  # verifier time-outs, NaN rewards; NaN advantages refused
        policy_loss = self.config.actor_rollout_ref.actor.policy_loss
        rho = step_threshold_ratio(policy_loss)
        statistics = step_statistics(policy_loss)
        if rho is None and not self.hybrid and not statistics:
            return super()._update_actor(batch, metrics)

        fields = list(
            dict.fromkeys(
                ["response_mask"]
                + ([OLD_ENTROPY_KEY] if rho is not None else [])
                + [field for statistic in statistics for field in statistic.fields]
                + ([EXPERT_KEY] if self.hybrid else [])
            )
        )
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        expert = row_flags(data[EXPERT_KEY]) if self.hybrid else torch.zeros(len(batch), dtype=torch.bool)
        mask, row_of_token = _flat_tokens(data["response_mask"])
        mask = mask.bool()
        token_counts = torch.zeros(len(batch), dtype=torch.int64).index_add_(0, row_of_token, mask.to(torch.int64))
        if rho is not None:
            if OLD_ENTROPY_KEY not in data.keys():
                raise RuntimeError(
                    "the step-level entropy threshold needs the old-policy `entropy`, which the batch lacks"
                )
            entropy, _ = _flat_tokens(data[OLD_ENTROPY_KEY])
            valid = mask & ~expert[row_of_token] if self.hybrid else mask  # expert rows never enter the threshold
            threshold = batch_entropy_threshold(entropy, valid, rho)
            batch.extra_info[ENTROPY_THRESHOLD_KEY] = threshold
            metrics["actor/step_entropy_threshold"] = threshold
        if statistics:
            spec = loss_spec(policy_loss.loss_mode)
            threshold = batch.extra_info.get(ENTROPY_THRESHOLD_KEY)
            for statistic, value in compute_step_statistics(policy_loss, data, expert, threshold).items():
                batch.extra_info[spec.statistic_key(statistic)] = value
                metrics[spec.statistic_metric(statistic)] = value
        if not self.hybrid:
            return super()._update_actor(batch, metrics)

        hybrid = policy_loss.hybrid
        mu = mu_schedule(self.global_steps - 1, int(hybrid.mu_warmup_steps), int(hybrid.mu_decay_steps),
                         float(hybrid.mu_peak), float(hybrid.mu_valley))  # fmt: skip
        batch.extra_info[MU_KEY] = mu
        batch.extra_info[HYBRID_COUNTS_KEY] = hybrid_counts(token_counts, expert)
        metrics["actor/hybrid/mu"] = mu
        with self._one_mini_batch(batch):
            return super()._update_actor(batch, metrics)


@register_trainer("plugin_sync")
class PluginTrainerSync(PluginTrainerMixin, PPOTrainerSync):
    """veRL's synchronous V1 trainer (``sync``) with the plugin's additions."""

    base_trainer_mode = "sync"


@register_trainer("plugin_colocate_async")
class PluginTrainerColocateAsync(PluginTrainerMixin, PPOTrainerColocateAsync):
    """veRL's ``colocate_async`` trainer (colocated, partial rollouts) with the plugin's additions."""

    base_trainer_mode = "colocate_async"


#: One INFO line per actor update of the separate-async trainer (veRL's convention: level from VERL_LOGGING_LEVEL).
update_logger = logging.getLogger(__name__ + ".updates")
update_logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


@register_trainer("plugin_separate_async")
class PluginTrainerSeparateAsync(PluginTrainerMixin, PPOTrainerSeparateAsync):
    """veRL's ``separate_async`` trainer (rollout and training on separate resources) with the plugin's additions.

    A step here is ``trainer.v1.separate_async.parameter_sync_step`` actor updates, each on its own batch sampled
    from the replay buffer (``ppo_mini_batch_size`` prompts) and scored under ``pi_old``, the weights of the last
    sync; the weights go to the standalone rollout replicas once, at the end of the step. The step-level
    statistics (the entropy threshold, ...) are computed once per update, over that update's batch: the batch
    the update optimises, as in the sync trainer (later batches are not sampled yet). Each update logs one line
    ``verl_espo: step S update K/P: ...``. The actor workers keep a real copy of ``pi_old`` on CPU as well
    (:class:`~verl_espo.workers.snapshot_worker.SnapshotDetachActorWorker`). On CPU, weights travel through the
    plugin's ``gloo`` checkpoint engine (:mod:`verl_espo.checkpoint_engine`).
    """

    base_trainer_mode = "separate_async"

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        import ray
        from verl.trainer.ppo.utils import Role

        from verl_espo.workers.snapshot_worker import SnapshotDetachActorWorker

        # veRL swaps these roles to DetachActorWorker (trainer_separate_async.py:114-126); same roles, our subclass.
        for role in (Role.Actor, Role.RefPolicy, Role.ActorRolloutRef, Role.ActorRollout):
            if role in self.role_worker_mapping:
                self.role_worker_mapping[role] = ray.remote(SnapshotDetachActorWorker)

    def _setup(self):
        if self._enable_hybrid_replicas:
            return super()._setup()
        # veRL 0.9.1 logs `logger.info(..., flush=True)` when hybrid replicas are off (trainer_separate_async.py:181),
        # a TypeError in `logging`. Above INFO, `logger.info` returns before it reaches that keyword.
        verl_logger = logging.getLogger(PPOTrainerSeparateAsync.__module__)
        level = verl_logger.level
        verl_logger.setLevel(max(level, logging.WARNING))
        try:
            return super()._setup()
        finally:
            verl_logger.setLevel(level)

    def _update_actor(self, batch: KVBatchMeta, metrics: dict):
        result = super()._update_actor(batch, metrics)
        threshold = batch.extra_info.get(ENTROPY_THRESHOLD_KEY)
        update_logger.info(
            "verl_espo: step %d update %d/%d: %d rows, entropy threshold %s",
            self.global_steps, self.local_trigger_step + 1, self.parameter_sync_step, len(batch),
            "none" if threshold is None else f"{float(threshold):.6g}",
        )  # fmt: skip
        return result
