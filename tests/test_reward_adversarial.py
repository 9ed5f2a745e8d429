"""The math reward on adversarial model outputs: each scores 0 within a time bound, from a reward thread as veRL
calls it, and a check that hits math-verify's time limit is reported (``verify_timeout``), not hidden."""

from __future__ import annotations

import random
import string
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from verl_espo.rewards import verify
from verl_espo.rewards.math import compute_score

#: Bound on one scoring call from a reward thread: math-verify's own limits (5 s a parse or comparison) plus a
#: loaded 2-core machine; the pool's hard limit (``POOL_TIMEOUT_S``, 60 s) is what a run can never exceed.
BOUND_S = 30.0


def _junk(n: int) -> str:
    rng = random.Random(0)
    return "".join(rng.choice(string.printable + "\\{}^_") for _ in range(n))


ADVERSARIAL = {
    "power tower, 60 levels": "\\boxed{" + "2^{" * 60 + "2" + "}" * 60 + "}",
    "fraction, 400 deep": "\\boxed{" + "\\frac{1}{" * 400 + "2" + "}" * 400 + "}",
    "(10^{10^{10}})!": "\\boxed{(10^{10^{10}})!}",
    "unbalanced braces": "\\boxed{" + "{" * 500 + "1" + "}" * 20,
    "100k characters of junk": "\\boxed{" + _junk(100_000) + "}",
    "3,000 boxes": "\\boxed{1} or " * 3000,
    "stray bytes": "\\boxed{" + bytes(range(256)).decode("latin-1") + "\ufffd}",
    "20,000-digit integer": "\\boxed{" + "9" * 20_000 + "}",
}

#: Expressions whose evaluation never finishes: their checks always hit the time limit.
NEVER_IN_TIME = ("power tower, 60 levels", "(10^{10^{10}})!")


def _in_thread(fn):
    """``fn()`` run in another thread, as veRL's reward workers call the reward (its exception re-raised here)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_output_scores_zero_within_the_bound(name):
    start = time.perf_counter()
    result = _in_thread(lambda: compute_score("math500", ADVERSARIAL[name], "7"))
    elapsed = time.perf_counter() - start
    assert result["score"] == 0.0 and result["acc"] is False
    # what no machine evaluates within the limit is flagged; the others may be refused by the parser first
    assert result["verify_timeout"] == 1.0 if name in NEVER_IN_TIME else result["verify_timeout"] in (0.0, 1.0)
    assert elapsed < BOUND_S, f"{name}: {elapsed:.1f} s"


def test_a_check_that_hits_the_time_limit_is_reported(monkeypatch):
    """With a 1 s limit on the main thread (the alarm path), a slow comparison is scored 0 and flagged."""
    monkeypatch.setattr(verify, "TIMEOUT_S", 1)
    slow = "\\boxed{" + "2^{" * 60 + "2" + "}" * 60 + "}"
    results = [compute_score("math500", slow, "7"), compute_score("math500", "\\boxed{(10^{10^{10}})!}", "7")]
    assert all(r["score"] == 0.0 for r in results)
    assert any(r["verify_timeout"] == 1.0 for r in results), results
    assert compute_score("math500", "\\boxed{7}", "7")["verify_timeout"] == 0.0


def test_pool_time_limit_is_reported(monkeypatch):
    """A check the pool does not finish within ``POOL_TIMEOUT_S`` scores 0, with ``verify_timeout`` 1 (here a pool
    whose check never finishes, so the limit is hit whatever the machine's speed)."""

    class NeverDone:
        def submit(self, *args, **kwargs) -> Future:
            return Future()

    monkeypatch.setattr(verify, "POOL_TIMEOUT_S", 0.1)
    monkeypatch.setattr(verify, "_get_pool", lambda: NeverDone())
    result = _in_thread(lambda: compute_score("math500", "\\boxed{\\frac{1}{2}}", "0.5"))
    assert result == {"score": 0.0, "acc": False, "pred": "\\frac{1}{2}", "verify_timeout": 1.0}
