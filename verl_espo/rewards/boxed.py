"""Answer extraction: the contents of ``\\boxed{...}`` in a model response.

Every prompt of the project asks for the final answer in ``\\boxed{}`` (see :mod:`verl_espo.data.common`), so the
answer of a response is its **last** boxed expression, as in veRL's ``math_reward``, DAPO and SimpleRL-Zoo. Whether
two answers are equal is decided by math-verify (:mod:`verl_espo.rewards.verify`), not here.

Absolute imports only: the reward modules are also loaded from their file paths by veRL.
"""

from __future__ import annotations

__all__ = ["BOXED", "last_boxed", "boxed_answers"]

BOXED = "\\boxed{"


def _closing_brace(text: str, open_at: int) -> int:
    """Index of the ``}`` matching the ``{`` at ``open_at`` (nested braces counted), or -1 if unclosed."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed); None if absent or unclosed.

    The last occurrence wins even when it sits inside another box: ``\\boxed{\\boxed{5}}`` gives ``5``.
    """
    start = text.rfind(BOXED)
    if start < 0:
        return None
    end = _closing_brace(text, start + len(BOXED) - 1)
    return None if end < 0 else text[start + len(BOXED) : end]


def boxed_answers(text: str) -> list[str]:
    """Contents of every closed top-level ``\\boxed{...}`` of ``text``, in order (unclosed ones are skipped)."""
    answers: list[str] = []
    pos = 0
    while (start := text.find(BOXED, pos)) >= 0:
        end = _closing_brace(text, start + len(BOXED) - 1)
        if end < 0:
            pos = start + len(BOXED)
            continue
        answers.append(text[start + len(BOXED) : end])
        pos = end + 1
    return answers
