"""What a resumed run needs beyond veRL's checkpoint: the metrics log of the steps before it.

veRL's checkpoint (``trainer.save_freq``, ``trainer.resume_mode=auto``) holds the step counter, the actor's
weights and optimizer state and the training dataloader's position. Everything the plugin's trainers add per
step is a function of that step counter and the step's batch: CHORD's ``mu`` (:func:`verl_espo.core.chord.mu_schedule`
of ``global_steps - 1``), the expert rows (:meth:`ExpertDemonstrations.indices_for_step`, a permutation seeded by
``data.expert.seed`` and the pass over the file), the step-level entropy threshold (from the step's own batch).
So nothing of the plugin's needs saving; ``tests/test_resume.py`` checks that a killed and resumed run continues
as the uninterrupted run does.

One thing does not survive: veRL's ``file`` logger opens its file with mode ``"wb"`` (``verl/utils/tracking.py``,
``FileLogger``), so a resumed run would erase the metrics of every step before its checkpoint. The trainer keeps
those records (:func:`kept_records`, read in ``on_init_end``, after veRL loaded the checkpoint) and writes them back
into the new file (:func:`restore_records`, in ``on_train_begin``, before the first resumed step). Records of
steps after the checkpoint (logged by the killed run before it stopped) are dropped: they are trained again, so
each step is in the log exactly once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

__all__ = ["file_logger_path", "kept_records", "restore_records"]

logger = logging.getLogger(__name__)


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
