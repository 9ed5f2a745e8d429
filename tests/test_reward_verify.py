"""Answer equivalence with math-verify (``verl_espo.rewards.verify``) and boxed extraction (``rewards.boxed``).

The expected values are the mathematical truth of each pair, not math-verify's output: a case that math-verify got
wrong would fail here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from verl_espo.rewards import verify
from verl_espo.rewards.boxed import boxed_answers, last_boxed
from verl_espo.rewards.math import boxed_match, compute_score
from verl_espo.rewards.verify import clean_answer, equivalent


@pytest.mark.parametrize(
    ("pred", "truth", "same"),
    [
        # numbers
        ("07", "7", True),
        ("12.0", "12", True),
        ("-2", "2", False),
        ("12", "1", False),
        ("1,000", "1000", True),
        ("1{,}000", "1000", True),
        ("1000000", "1,000,000", True),
        # fractions and decimals
        (r"\dfrac12", "0.5", True),
        (r"\tfrac34", "0.75", True),
        ("1/2", r"\frac{1}{2}", True),
        (r"\frac{-1}{2}", r"-\frac{1}{2}", True),
        (r"3\frac{1}{2}", r"\frac{7}{2}", True),
        ("0.33", r"\frac{1}{3}", False),
        (r"\frac{1}{2}", r"\frac{1}{3}", False),
        # other LaTeX forms
        (r"\sqrt{18}", r"3\sqrt{2}", True),
        (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("1+x", "x+1", True),
        ("1024", "2^{10}", True),
        (r"\infty", r"\infty", True),
        ("x = 5", "5", True),
        ("5", "x=5", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)", True),
        ("[1, 2)", "[1,2)", True),
        ("[1, 2]", "[1,2)", False),
        ("3, 2", "2,3", True),
        (r"\text{(C)}", "C", True),
        ("(C)", "C", True),
        # units, currency, percent, degrees, delimiters
        (r"10\text{ cm}", "10", True),
        (r"10 \text{ cm}^2", "10", True),
        (r"10\mbox{ cm}", "10", True),
        (r"5\text{ dollars}", "5", True),
        (r"\$10", "10", True),
        ("5", r"\$5", True),
        (r"50\%", "50", True),
        ("50%", "50", True),
        (r"50\%", r"50\%", True),
        (r"90^\circ", "90", True),
        ("$3.0$", "3", True),
        ("5.", "5", True),
        (r"\text{5}", "5", True),
        # nothing to compare
        ("", "5", False),
        ("   ", "5", False),
        ("5", "", False),
    ],
)
def test_single_answers(pred, truth, same):
    assert equivalent(truth, [pred]) is same


def test_several_boxes_read_as_a_set():
    assert equivalent("2, 3", ["3"], ["2", "3"])
    assert not equivalent("3", ["4"], ["3", "4"])  # a single-valued truth needs every box equal to it
    assert not equivalent("2, 3", ["3"])


@pytest.mark.parametrize(
    ("response", "truth", "pred", "acc"),
    [
        (r"first \boxed{3} then \boxed{4}", "4", "4", True),
        (r"first \boxed{3} then \boxed{4}", "3", "4", False),  # the last box is the answer
        (r"$x = \boxed{2}$ or $x = \boxed{3}$", "2,3", "3", True),  # ... or all boxes as one set
        (r"\boxed{1} \boxed{2} \boxed{3}", "2", "3", False),  # hedging earns nothing
        (r"so \boxed{\frac{1}{2}}.", "0.5", r"\frac{1}{2}", True),
        (r"\boxed{\boxed{5}}", "5", "5", True),
        (r"\boxed{5", "5", None, False),  # unclosed
        ("the answer is 5", "5", None, False),  # no box
    ],
)
def test_boxed_match(response, truth, pred, acc):
    assert boxed_match(response, truth) == (pred, acc)


def test_boxed_answers():
    assert boxed_answers(r"a \boxed{1} b \boxed{\frac{2}{3}} c \boxed{4") == ["1", r"\frac{2}{3}"]
    assert boxed_answers(r"\boxed{\boxed{5}}") == [r"\boxed{5}"]
    assert boxed_answers("none") == [] and last_boxed(r"\boxed{\boxed{5}}") == "5"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("$3.0$", "3.0"),
        (r"50\%", "50"),
        ("50%", "50"),
        (r"\$10", "10"),
        ("5. ", "5"),
        (r"1\!000", "1000"),
        (" 7 ", "7"),
    ],
)
def test_clean_answer(raw, clean):
    assert clean_answer(raw) == clean


def _in_thread(fn):
    """``fn()`` run in another thread, as veRL's reward workers call the reward (its exception re-raised here)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def test_reward_threads_get_math_verify_answers():
    """veRL calls reward functions from executor threads, where math-verify's SIGALRM timeouts cannot run.

    The check then goes to a spawn process pool; the answers must be the same as on the main thread.
    """
    from math_verify import parse

    with pytest.raises(ValueError, match="threaded"):  # the failure this module works around
        _in_thread(lambda: parse(r"\boxed{1/2}"))
    assert _in_thread(lambda: equivalent("0.5", [r"\dfrac12"]))
    assert not _in_thread(lambda: equivalent("0.5", ["0.25"]))
    assert _in_thread(lambda: compute_score("math500", r"\boxed{3\sqrt{2}}", r"\sqrt{18}"))["acc"]
    assert verify._pool is not None  # the pool served them


def test_thread_without_a_pool_still_answers(monkeypatch):
    """Where no process can be started, the check runs in the thread without timeouts, not silently as 0."""
    monkeypatch.setattr(verify, "_get_pool", lambda: None)
    assert _in_thread(lambda: equivalent("0.5", [r"\frac{1}{2}"]))
