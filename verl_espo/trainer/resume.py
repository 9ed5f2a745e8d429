"""What a resumed run needs beyond veRL's checkpoint: the metrics log of the steps before it, and, in the async
modes, the submission step of the prompts the checkpoint held in flight.

veRL's checkpoint (``trainer.save_freq``, ``trainer.resume_mode=auto``) holds the step counter, the actor's
weights and optimizer state, the training dataloader's position and, in the async modes, the TransferQueue (the
prompts already taken from the dataloader but not yet trained: the rollout runs ahead of training). Everything
the plugin's trainers add per step is a function of that step counter and the step's batch: CHORD's ``mu``
(:func:`verl_espo.core.chord.mu_schedule` of ``global_steps - 1``), the expert rows
(:meth:`ExpertDemonstrations.indices_for_step`, a permutation seeded by ``data.expert.seed`` and the pass over the
file), the step-level entropy threshold (from the step's own batch). So nothing of the plugin's needs saving;
``tests/test_resume.py`` and ``tests/test_e2e_separate_async.py`` check that a killed and resumed run continues as
the uninterrupted run does.

Two things do not survive on their own:

* veRL's ``file`` logger opens its file with mode ``"wb"`` (``verl/utils/tracking.py``, ``FileLogger``), so a
  resumed run would erase the metrics of every step before its checkpoint. The trainer keeps those records
  (:func:`kept_records`, read in ``on_init_end``, after veRL loaded the checkpoint) and writes them back into the
  new file (:func:`restore_records`, in ``on_train_begin``, before the first resumed step). Records of steps after
  the checkpoint (logged by the killed run before it stopped) are dropped: they are trained again, so each step is
  in the log exactly once.
* veRL re-issues the prompt groups the checkpoint held in flight (pending or running) tagged with the resumed
  step (``PPOTrainer._reissue_inflight_prompts``), the tag its replay buffer orders by (oldest first, ties in no
  particular order). They then tie with the batch the resumed step submits, so part of them would be trained a
  step later than in the uninterrupted run and part of that batch a step earlier. The trainer reads their tags
  before (:func:`inflight_prompt_steps`) and puts back the step each was submitted in (:func:`restore_prompt_steps`)
  between veRL's tagging and their dispatch to the agent loop (:class:`RestoreStepsOnDispatch`): TransferQueue
  merges tags by read-modify-write, so a put racing the agent loop's status updates could be lost.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import transfer_queue as tq

__all__ = [
    "RestoreStepsOnDispatch",
    "file_logger_path",
    "inflight_prompt_steps",
    "kept_records",
    "restore_prompt_steps",
    "restore_records",
]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))  # veRL's convention: shown in the trainer log


def file_logger_path(project_name: str, experiment_name: str) -> str:
    """Where veRL's ``FileLogger`` writes: ``VERL_FILE_LOGGER_PATH``, else ``VERL_FILE_LOGGER_ROOT/<project>/
    <experiment>.jsonl``."""
    path = os.getenv("VERL_FILE_LOGGER_PATH", None)
    if path is None:
        root = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
        path = os.path.join(root, project_name, f"{experiment_name}.jsonl")
    return path


def kept_records(config: Any, resumed_step: int) -> list[bytes]:
    """The ``file`` logger's lines of steps ``<= resumed_step`` (empty when not resuming or not logging to a file)."""
    backends = config.trainer.get("logger", None) or []
    backends = [backends] if isinstance(backends, str) else list(backends)
    if resumed_step <= 0 or "file" not in backends:
        return []
    path = file_logger_path(config.trainer.project_name, config.trainer.experiment_name)
    if not os.path.exists(path):
        return []
    kept = []
    with open(path, "rb") as f:
        for line in f:
            try:
                step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by the kill
            if step <= resumed_step:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
    logger.info("verl_espo: resuming at step %d, keeping %d metric records of %s", resumed_step, len(kept), path)
    return kept


def restore_records(tracking: Any, records: list[bytes]) -> None:
    """Write ``records`` into the ``file`` backend of veRL's ``Tracking`` object (``trainer.logger``)."""
    backend = getattr(tracking, "logger", {}).get("file") if records else None
    if backend is not None:
        for line in records:
            backend.fp.write(line)


def inflight_prompt_steps(partition_id: str = "train") -> dict[str, int]:
    """The submission step (``global_steps`` tag) of each pending or running prompt group in TransferQueue."""
    tags = (tq.kv_list(partition_id) or {}).get(partition_id, {})
    return {
        key: int(tag["global_steps"])
        for key, tag in tags.items()
        if tag.get("is_prompt", False) and tag.get("status") in ("pending", "running") and "global_steps" in tag
    }


def restore_prompt_steps(steps: dict[str, int], partition_id: str = "train") -> None:
    """Tag the prompt groups of ``steps`` with their step again (TransferQueue merges a tag into the key's tags)."""
    if steps:
        keys = list(steps)
        tq.kv_batch_put(keys=keys, partition_id=partition_id, tags=[{"global_steps": steps[k]} for k in keys])
        logger.info("verl_espo: %d re-issued prompt groups keep the step they were submitted in", len(keys))


class RestoreStepsOnDispatch:
    """Stands in for the agent loop manager while veRL re-issues prompt groups (``_reissue_inflight_prompts`` tags
    them, then calls ``agent_loop_manager.generate_sequences``): restores their submission ``steps`` first, before
    any rollout of theirs can update their tags, then dispatches through ``manager``."""

    def __init__(self, manager: Any, steps: dict[str, int], partition_id: str = "train"):
        self.manager, self.steps, self.partition_id = manager, steps, partition_id

    def generate_sequences(self, batch: Any) -> Any:
        restore_prompt_steps(self.steps, self.partition_id)
        return self.manager.generate_sequences(batch)
