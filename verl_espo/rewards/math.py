"""The project's math reward: the boxed answer of a response, checked against the ground truth with math-verify.

:func:`compute_score` has the signature of veRL's ``default_compute_score``. Point veRL at it with::

    reward.custom_reward_function.path=pkg://verl_espo.rewards.math \\
    reward.custom_reward_function.name=compute_score

(``verl.utils.import_utils.load_module`` accepts ``pkg://`` module paths as well as file paths, and this file is a
plain file inside the installed package, so its path works too.) It returns ``{"score": 1.0 or 0.0, "acc": bool,
"pred": str, "verify_timeout": 0.0 or 1.0}`` for every ``data_source``:

* every data set of :mod:`verl_espo.data` (and any other source): the answer is the last ``\\boxed{...}`` of the
  response, and math-verify decides whether it equals the ground truth (:mod:`verl_espo.rewards.verify`). If the
  response has several boxes and the last one does not match, the boxes are read together as a set, so
  ``x = \\boxed{2}`` or ``x = \\boxed{3}`` answers ``2, 3``; a single-valued ground truth still needs every box equal
  to it, so hedging between boxes earns nothing. Unlike veRL's dispatcher, GSM8K's ``####`` or DAPO's ``Answer:``
  formats are not read (every prompt of the project asks for ``\\boxed{}``), and scores are 1/0 everywhere.
* the bundled ``toy_arithmetic`` task: strict, without math-verify. The response must be the boxed answer alone
  (surrounding whitespace allowed) and its number must equal the ground truth, so a policy that stops emitting its
  end of turn after the box earns nothing (the tiny toy model otherwise drifts into trailing junk).

The module uses absolute imports only, so it also works when loaded from its file path.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from verl_espo.rewards.boxed import boxed_answers, last_boxed
from verl_espo.rewards.verify import Verdict, check, equivalent

__all__ = [
    "STRICT_DATA_SOURCES",
    "compute_score",
    "score_boxed",
    "boxed_match",
    "boxed_verdict",
    "last_boxed",
    "normalize_answer",
    "is_equiv",
]

#: ``data_source`` values whose responses must be exactly ``\\boxed{answer}`` (the bundled toy task).
STRICT_DATA_SOURCES = ("toy_arithmetic",)

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def normalize_answer(answer: str) -> str:
    """Canonical form of a plain answer: no spaces or ``$``, no trailing ``.``, numbers as ``7``/``-2``/``0.5``.

    Used by the strict toy task and to report ``pred``; equivalence of math answers is math-verify's job.
    """
    s = re.sub(r"\s+", "", answer).replace("$", "").rstrip(".")
    if _NUMBER.fullmatch(s):
        value = Decimal(s)
        return str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    return s


def is_equiv(pred: str, ground_truth: str) -> bool:
    """Whether the answer ``pred`` equals ``ground_truth`` according to math-verify."""
    return equivalent(str(ground_truth), [pred])


def boxed_verdict(solution_str: str, ground_truth: str) -> tuple[str | None, Verdict]:
    """``(last boxed answer or None, the math-verify verdict on the response's boxed answer)``.

    The last box is the answer; if it does not match and the response has several boxes, they are checked together
    as one set-valued answer.
    """
    boxed = last_boxed(solution_str)
    if boxed is None:
        return None, Verdict(False)
    candidates = [[boxed]]
    boxes = boxed_answers(solution_str)
    if len(boxes) > 1:
        candidates.append(boxes)
    return boxed, check(str(ground_truth), *candidates)


def boxed_match(solution_str: str, ground_truth: str) -> tuple[str | None, bool]:
    """``(last boxed answer or None, whether the response's boxed answer equals the ground truth)``."""
    boxed, verdict = boxed_verdict(solution_str, ground_truth)
    return boxed, verdict.match


def score_boxed(solution_str: str, ground_truth: str, strict: bool = False) -> dict[str, Any]:
    """``{"score": 1.0 or 0.0, "acc": bool, "pred": str, "verify_timeout": 0.0 or 1.0}`` for the boxed answer.

    With ``strict`` (the toy task), the response must be the boxed answer and nothing else (surrounding whitespace
    allowed) and the answer is compared as a plain number, without math-verify. ``verify_timeout`` is 1.0 when a
    math-verify parse or comparison hit its time limit (the response then scores 0).
    """
    if strict:
        boxed = last_boxed(solution_str)
        pred = "" if boxed is None else normalize_answer(boxed)
        acc = (
            boxed is not None
            and solution_str.strip() == f"\\boxed{{{boxed}}}"
            and pred == normalize_answer(str(ground_truth))
        )
        return {"score": float(acc), "acc": acc, "pred": pred, "verify_timeout": 0.0}
    boxed, verdict = boxed_verdict(solution_str, ground_truth)
    return {"score": float(verdict.match), "acc": verdict.match, "pred": "" if boxed is None else boxed.strip(),
            "verify_timeout": float(verdict.timed_out)}  # fmt: skip


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any]:
    """veRL reward entry point: strict for the toy task, math-verify on the boxed answer for every other source."""
    return score_boxed(solution_str, ground_truth, strict=data_source in STRICT_DATA_SOURCES)
