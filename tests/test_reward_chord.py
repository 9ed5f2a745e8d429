"""CHORD's hierarchical math reward (``verl_espo.rewards.chord``): +1 / 0 / -0.1 / -1, and how truncation is read."""

from __future__ import annotations

import pytest

from verl_espo.rewards import chord
from verl_espo.rewards.chord import compute_score, hierarchical_score, is_truncated

TRUNC = {"response_length": 20, "max_response_length": 20}
OPEN = {"response_length": 12, "max_response_length": 20}


@pytest.mark.parametrize(
    ("response", "extra_info", "score", "acc", "formatted"),
    [
        (r"... so the answer is \boxed{\frac{1}{2}}", OPEN, 1.0, True, True),
        (r"... so the answer is \boxed{0.5}", TRUNC, 1.0, True, True),  # cut off after answering: scored on it
        (r"... so the answer is \boxed{3}", OPEN, 0.0, False, True),
        (r"\boxed{3} no wait, \boxed{0.5}", OPEN, 1.0, True, True),  # the last box counts
        ("... so the answer is 1/2", OPEN, -0.1, False, False),
        ("... so the answer is 1/2", TRUNC, -1.0, False, False),
        (r"... \boxed{}", OPEN, -0.1, False, False),  # an empty box is no answer
        (r"... \boxed{1/2", TRUNC, -1.0, False, False),  # unclosed box, cut off
        ("", TRUNC, -1.0, False, False),
    ],
)
def test_hierarchy(response, extra_info, score, acc, formatted):
    result = compute_score("openr1_math", response, "0.5", extra_info)
    assert result["score"] == score and result["acc"] is acc and result["formatted"] is formatted
    assert result["truncated"] is (extra_info is TRUNC)
    # the same keys for every response
    assert set(result) == {"score", "acc", "pred", "formatted", "truncated", "verify_timeout"}


def test_reward_values_are_the_papers():
    assert (chord.CORRECT, chord.WRONG, chord.UNFORMATTED, chord.TRUNCATED) == (1.0, 0.0, -0.1, -1.0)


@pytest.mark.parametrize(
    ("extra_info", "truncated"),
    [
        ({"truncated": True}, True),
        ({"truncated": False, "response_length": 20, "max_response_length": 20}, False),  # the flag wins
        ({"response_length": 19, "max_response_length": 20}, False),
        ({"response_length": 20, "max_response_length": 20}, True),
        ({"response_length": 20}, False),  # no limit known
        ({"index": 3, "num_turns": 2}, False),  # what the naive manager passes: unknown -> not truncated
        ({}, False),
        (None, False),
    ],
)
def test_is_truncated(extra_info, truncated):
    assert is_truncated(extra_info) is truncated


def test_without_length_information_a_cut_response_scores_unformatted():
    """Documented limitation: with veRL's naive manager a truncated response without an answer gets -0.1."""
    assert compute_score("openr1_math", "and so on and so", "7", {"index": 0})["score"] == -0.1
    assert hierarchical_score("and so on and so", "7", truncated=True)["score"] == -1.0


@pytest.mark.parametrize("how", ["pkg", "file"])
def test_loadable_as_verl_custom_reward_function(how):
    from verl.utils.import_utils import load_extern_object

    path = "pkg://verl_espo.rewards.chord" if how == "pkg" else chord.__file__
    fn = load_extern_object(module_path=path, object_name="compute_score")
    assert fn("openr1_math", r"\boxed{7}", "7", extra_info=OPEN)["score"] == 1.0
    assert fn("openr1_math", "no answer", "7", extra_info=TRUNC)["score"] == -1.0
