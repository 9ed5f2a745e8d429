"""Per-step checks of what the reward and the advantage estimator wrote, before the actor update reads it.

Run by the plugin's trainers after veRL's advantage pass (``_compute_advantage``):

* ``reward/verify_timeouts``: rollout rows whose reward check hit math-verify's time limit (the math rewards'
  ``verify_timeout``, :mod:`verl_espo.rewards.verify`), so a run shows when its verifier struggles;
* ``reward/nonfinite_rows``: rollout rows with a NaN or infinite reward (``espo_verified`` uses NaN on purpose
  for a failed verification, and gives those rows zero advantage);
* a NaN or infinite advantage on a rollout or expert row is refused (:class:`NonFiniteAdvantageError`, naming
  the step, the rows, their keys and rewards): it would make the loss and every gradient of the step NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["NonFiniteAdvantageError", "nonfinite_rows", "verify_timeouts", "check_advantages"]

#: Rows named in a message (the count of all offending rows is given as well).
SHOWN_ROWS = 8


class NonFiniteAdvantageError(FloatingPointError):
    """A step whose advantages hold NaN or inf; the message names the step, the rows and the fix."""


def nonfinite_rows(values: torch.Tensor) -> list[int]:
    """Rows of a per-token field (nested jagged or padded ``(B, T)``) that hold a NaN or an infinity."""
    if values.is_nested:
        bad = ~torch.isfinite(values.values())
        row_of_token = torch.repeat_interleave(torch.arange(values.offsets().numel() - 1), values.offsets().diff())
        return sorted(set(row_of_token[bad].tolist()))
    return (~torch.isfinite(values.reshape(values.shape[0], -1))).any(dim=1).nonzero().reshape(-1).tolist()


def verify_timeouts(extra_fields: Sequence[Any], rows: Sequence[int]) -> int | None:
    """Sum of ``verify_timeout`` in the ``reward_extra_info`` of ``rows`` (None when no row reports it)."""
    total, seen = 0, False
    for i in rows:
        fields = getattr(extra_fields[i], "data", extra_fields[i])
        info = fields.get("reward_extra_info", {}) if isinstance(fields, Mapping) else {}
        if isinstance(info, Mapping) and info.get("verify_timeout") is not None:
            seen = True
            total += int(float(info["verify_timeout"]) > 0)
    return total if seen else None


def check_advantages(advantages: torch.Tensor, scores: torch.Tensor, keys: Sequence[str], step: int) -> None:
    """Raise :class:`NonFiniteAdvantageError` if some row of ``advantages`` is not finite."""
    bad = nonfinite_rows(advantages)
    if not bad:
        return
    sums = [float(s.sum()) for s in (scores.unbind() if scores.is_nested else scores)]
    shown = ", ".join(f"{i} (key {keys[i]}, reward {sums[i]:g})" for i in bad[:SHOWN_ROWS])
    more = f" and {len(bad) - SHOWN_ROWS} more" if len(bad) > SHOWN_ROWS else ""
    raise NonFiniteAdvantageError(
        f"step {step}: the advantages of {len(bad)} of {len(keys)} rows are NaN or infinite, which would make the "
        f"loss and every gradient of the step NaN; rows {shown}{more}. A NaN or infinite reward is the usual cause: "
        "fix the reward function (it must return a finite score), or, to give responses whose verification failed "
        "zero advantage (ESPO Eq. 11), return NaN from it and set algorithm.adv_estimator=espo_verified"
    )


def check_step(batch: Any, metrics: dict, step: int) -> None:
    """Read the step's rewards, advantages and reward extra info from TransferQueue; add metrics; refuse NaN."""
    import transfer_queue as tq

    fields = ["advantages", "rm_scores", "extra_fields"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    rollout_rows = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
    timeouts = verify_timeouts(list(data["extra_fields"]), rollout_rows) if "extra_fields" in data.keys() else None
    if timeouts is not None:
        metrics["reward/verify_timeouts"] = timeouts
    rollout = set(rollout_rows)
    metrics["reward/nonfinite_rows"] = sum(1 for i in nonfinite_rows(data["rm_scores"]) if i in rollout)
    check_advantages(data["advantages"], data["rm_scores"], list(batch.keys), step)
