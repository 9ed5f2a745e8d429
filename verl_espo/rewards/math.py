"""The project's math reward: the last ``\\boxed{...}`` answer, compared with the ground truth.

:func:`compute_score` has the signature of veRL's ``default_compute_score``. Point veRL at it with::

    reward.custom_reward_function.path=pkg://verl_espo.rewards.math \\
    reward.custom_reward_function.name=compute_score

(``verl.utils.import_utils.load_module`` accepts ``pkg://`` module paths as well as file paths, and this
file is a plain file inside the installed package, so its path works too.) It dispatches the public data
sources that veRL already scores (GSM8K, MATH, DAPO/AIME, ...) to ``default_compute_score`` unchanged, so
recipes can share one entry point; every other ``data_source`` is scored here by :func:`score_boxed`,
which returns ``{"score": 1.0 or 0.0, "acc": bool, "pred": str}``. The bundled ``toy_arithmetic`` task is
scored strictly: its response must be the boxed answer alone, so a policy that stops emitting its end of
turn after the box earns nothing (the tiny toy model otherwise drifts into trailing junk).

If the optional ``math_verify`` package is importable, it decides equivalence when the normalised strings
differ (``pip install "math-verify[antlr4_9_3]"``: the ANTLR runtime must stay at Hydra's 4.9.3).

The module uses absolute imports only, so it also works when loaded from its file path.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from typing import Any

__all__ = [
    "VERL_DATA_SOURCES",
    "STRICT_DATA_SOURCES",
    "compute_score",
    "score_boxed",
    "last_boxed",
    "normalize_answer",
    "is_equiv",
]

#: ``data_source`` values (exact, or prefixes ending in ``*``) handed to veRL's ``default_compute_score``.
VERL_DATA_SOURCES = (
    "openai/gsm8k",
    "lighteval/MATH",
    "DigitalLearningGmbH/MATH-lighteval",
    "HuggingFaceH4/MATH-500",
    "math_dapo",
    "math",
    "math_dapo_reasoning",
    "aime*",
    "numina_*",
)

#: ``data_source`` values whose responses must be exactly ``\\boxed{answer}`` (the bundled toy task).
STRICT_DATA_SOURCES = ("toy_arithmetic",)

_BOXED = "\\boxed{"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed); None if absent or unclosed."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    for i in range(start + len(_BOXED) - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len(_BOXED) : i]
    return None


def normalize_answer(answer: str) -> str:
    """Canonical form of a simple answer: no spaces or ``$``, no trailing ``.``, numbers as ``7``/``-2``/``0.5``."""
    s = re.sub(r"\s+", "", answer).replace("$", "").rstrip(".")
    if _NUMBER.fullmatch(s):
        value = Decimal(s)
        return str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    return s


def is_equiv(pred: str, ground_truth: str) -> bool:
    """Equal after :func:`normalize_answer`, or (if installed) equivalent according to ``math_verify``."""
    a, b = normalize_answer(pred), normalize_answer(ground_truth)
    if a == b:
        return True
    if not a or not b:
        return False
    return _math_verify_equiv(a, b)


def _math_verify_equiv(pred: str, ground_truth: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    # math_verify's timeouts use SIGALRM, which works only on the main thread (veRL scores in a thread pool).
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(f"\\boxed{{{ground_truth}}}", parsing_timeout=timeout)
        target = parse(f"\\boxed{{{pred}}}", parsing_timeout=timeout)
        return bool(gold and target and verify(gold, target, timeout_seconds=timeout))
    except Exception:
        return False


def score_boxed(solution_str: str, ground_truth: str, strict: bool = False) -> dict[str, Any]:
    """``{"score": 1.0 or 0.0, "acc": bool, "pred": str}`` for the last boxed answer of ``solution_str``.

    With ``strict``, the response must be the boxed answer and nothing else (surrounding whitespace allowed).
    """
    boxed = last_boxed(solution_str)
    pred = "" if boxed is None else normalize_answer(boxed)
    acc = boxed is not None and is_equiv(boxed, str(ground_truth))
    if strict and solution_str.strip() != f"\\boxed{{{boxed}}}":
        acc = False
    return {"score": float(acc), "acc": acc, "pred": pred}


def _is_verl_source(data_source: str) -> bool:
    """Whether ``data_source`` matches :data:`VERL_DATA_SOURCES`."""
    return any(data_source.startswith(s[:-1]) if s.endswith("*") else data_source == s for s in VERL_DATA_SOURCES)


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, Any] | float:
    """veRL reward entry point: veRL's own scorer for its public data sources, :func:`score_boxed` otherwise."""
    if _is_verl_source(data_source):
        from verl.utils.reward_score import default_compute_score

        return default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    return score_boxed(solution_str, ground_truth, strict=data_source in STRICT_DATA_SOURCES)
