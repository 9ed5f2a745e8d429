"""Answer equivalence decided by math-verify (https://github.com/huggingface/Math-Verify), safe in reward threads.

:func:`equivalent` parses the ground truth and each candidate answer as ``\\boxed{...}`` LaTeX with math-verify and
compares them symbolically and numerically (fractions, ``\\dfrac12`` = ``0.5``, ``\\sqrt{18}`` = ``3\\sqrt{2}``,
units in ``\\text{}``, thousands separators, intervals, sets, equations ``x = 5``, ...). Before parsing,
:func:`clean_answer` removes what math-verify does not: ``$`` delimiters, a trailing full stop, ``\\%``/``%`` signs
and ``\\!`` spacing.

Timeouts. math-verify bounds each parse and comparison with ``signal.alarm``, which works only on a process's main
thread; elsewhere math-verify 0.9 raises ``ValueError`` (older versions logged and returned no match, so every answer
scored 0). veRL 0.9.1 calls reward functions from worker threads (``loop.run_in_executor(None, ...)`` in
``verl/experimental/reward_loop/reward_manager/naive.py``). So off the main thread the check runs in a small
``spawn`` process pool, on the worker's main thread where the alarms work, with a second time limit on the result
(the approach of veRL's own ``verl/utils/reward_score/math_verify.py``). On the main thread it runs in place.
A check that hits either limit scores as no match and reports it: :func:`check` returns a :class:`Verdict` whose
``timed_out`` says so (the math rewards return it as ``verify_timeout``, which the trainer sums into
``reward/verify_timeouts``; docs/data_and_rewards.md).

math-verify is a dependency of this package; install it with the ANTLR extra that matches Hydra's pin
(``pip install "math-verify[antlr4_9_3]"``: hydra-core needs ``antlr4-python3-runtime`` 4.9.x).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from itertools import product
from typing import NamedTuple

__all__ = [
    "MATH_VERIFY_INSTALL",
    "TIMEOUT_S",
    "POOL_TIMEOUT_S",
    "require_math_verify",
    "clean_answer",
    "to_boxed_latex",
    "Verdict",
    "check",
    "equivalent",
]

logger = logging.getLogger(__name__)

MATH_VERIFY_INSTALL = 'pip install "math-verify[antlr4_9_3]"'

#: Limit in seconds on each math-verify parse and comparison (math-verify's own default is 5).
TIMEOUT_S = 5
#: Limit in seconds on a whole check sent to the process pool (covers a cold worker importing sympy).
POOL_TIMEOUT_S = 60.0
#: Worker processes of the pool used off the main thread (``VERL_ESPO_MATH_VERIFY_WORKERS``, default 2).
POOL_WORKERS = int(os.environ.get("VERL_ESPO_MATH_VERIFY_WORKERS", "2"))

#: Pools that may break before checks run in the calling thread, without timeouts, for good.
MAX_BROKEN_POOLS = 3

_pool: ProcessPoolExecutor | None = None
_pool_failed = False
_broken_pools = 0
_pool_lock = threading.Lock()


def require_math_verify() -> None:
    """Raise an ``ImportError`` that says how to install math-verify if it is missing."""
    try:
        import math_verify  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "verl_espo's math rewards need math-verify to compare answers, and it is not installed. "
            f"Install it with: {MATH_VERIFY_INSTALL} (the extra keeps antlr4-python3-runtime at 4.9.3, "
            "the version hydra-core requires)."
        ) from e


def clean_answer(answer: str) -> str:
    """``answer`` without ``$``, ``\\%``/``%``, ``\\!`` and a trailing full stop, which math-verify does not drop."""
    s = answer
    for token in ("\\$", "$", "\\%", "%", "\\!"):
        s = s.replace(token, "")
    s = s.strip()
    while s.endswith("."):
        s = s[:-1].rstrip()
    return s


def to_boxed_latex(answers: Sequence[str]) -> str:
    """``answers`` as boxed LaTeX that math-verify reads as one answer (several boxes are read as a set)."""
    return " ".join(f"\\boxed{{{clean_answer(a)}}}" for a in answers)


class Verdict(NamedTuple):
    """Outcome of one answer check: ``match``, and whether some parse or comparison hit its time limit."""

    match: bool
    timed_out: bool = False


def _verify_here(gold_latex: str, candidates: tuple[str, ...], timeout_s: int | None) -> Verdict:
    """math-verify on this thread: does any candidate match the gold? (``timeout_s=None``: no alarm.)

    ``parse`` and ``verify`` run with ``raise_on_error=True`` so that a time-out can be told apart from a parse
    error (math-verify otherwise logs both and returns no match); each (gold, prediction) pair is compared on
    its own, as ``verify`` itself does, so the match is the same as with math-verify's defaults.
    """
    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    config = [LatexExtractionConfig()]
    timed_out = False

    def parsed(latex: str) -> list:
        nonlocal timed_out
        try:
            return parse(latex, extraction_config=config, parsing_timeout=timeout_s, raise_on_error=True)
        except TimeoutException:
            timed_out = True
        except Exception:  # not parseable: no answer
            pass
        return []

    def same(gold_item, pred_item) -> bool:
        nonlocal timed_out
        try:
            return verify(gold_item, pred_item, timeout_seconds=timeout_s, raise_on_error=True)
        except TimeoutException:
            timed_out = True
        except Exception:  # not comparable: no match
            pass
        return False

    gold = parsed(gold_latex)
    if not gold:
        return Verdict(False, timed_out)
    for latex in candidates:
        pred = parsed(latex)
        if pred and any(same(g, p) for g, p in product(gold, pred)):
            return Verdict(True, timed_out)
    return Verdict(False, timed_out)


def _get_pool() -> ProcessPoolExecutor | None:
    """The shared ``spawn`` pool (created on first use); None if this process cannot start one."""
    global _pool, _pool_failed
    with _pool_lock:
        if _pool is None and not _pool_failed:
            try:
                _pool = ProcessPoolExecutor(max_workers=POOL_WORKERS, mp_context=multiprocessing.get_context("spawn"))
            except Exception as e:  # e.g. a daemonic process may not have children
                _pool_failed = True
                logger.warning("math-verify runs without timeouts: no process pool in this process (%r)", e)
        return _pool


def _reset_pool(broken: bool = False) -> None:
    """Drop the pool; after :data:`MAX_BROKEN_POOLS` broken pools, stop using one in this process."""
    global _pool, _pool_failed, _broken_pools
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
        _broken_pools += int(broken)
        if _broken_pools >= MAX_BROKEN_POOLS:
            _pool_failed = True


def _verify(gold_latex: str, candidates: tuple[str, ...]) -> Verdict:
    if threading.current_thread() is threading.main_thread():
        return _verify_here(gold_latex, candidates, TIMEOUT_S)
    pool = _get_pool()
    if pool is None:
        return _verify_here(gold_latex, candidates, None)
    try:
        return Verdict(*pool.submit(_verify_here, gold_latex, candidates, TIMEOUT_S).result(timeout=POOL_TIMEOUT_S))
    except FuturesTimeoutError:
        logger.warning("math-verify took over %ss on %r; scored as no match", POOL_TIMEOUT_S, candidates)
        return Verdict(False, True)
    except BrokenProcessPool as e:
        # A worker that cannot start (e.g. a ``__main__`` that spawn cannot re-import) or that was killed.
        _reset_pool(broken=True)
        logger.warning("math-verify pool broke (%r); this check runs in the thread without timeouts", e)
        return _verify_here(gold_latex, candidates, None)


def check(ground_truth: str, *candidates: Sequence[str]) -> Verdict:
    """Whether some candidate equals ``ground_truth`` according to math-verify, and whether a check timed out.

    Each candidate is a list of answer strings read together (one answer, or several read as a set), e.g.
    ``check("2, 3", ["3"], ["2", "3"])``. Empty candidates never match.
    """
    require_math_verify()
    latex = tuple(to_boxed_latex(c) for c in candidates if any(clean_answer(a) for a in c))
    if not latex or not clean_answer(str(ground_truth)):
        return Verdict(False)
    return _verify(to_boxed_latex([str(ground_truth)]), latex)


def equivalent(ground_truth: str, *candidates: Sequence[str]) -> bool:
    """Whether some candidate equals ``ground_truth`` according to math-verify (:func:`check`'s ``match``)."""
    return check(ground_truth, *candidates).match
