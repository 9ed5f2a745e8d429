"""The project's math reward (``verl_espo.rewards.math``): extraction, normalisation, dispatch, loading."""

from __future__ import annotations

import importlib.util

import pytest

from verl_espo.rewards import math as reward
from verl_espo.rewards.math import compute_score, is_equiv, last_boxed, normalize_answer, score_boxed

HAS_MATH_VERIFY = importlib.util.find_spec("math_verify") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{7}", "7"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b^{2}}}} done", r"\sqrt{\frac{a}{b^{2}}}"),
        (r"first \boxed{3} then \boxed{4}", "4"),
        (r"\boxed{ 7 }", " 7 "),
        (r"\boxed{}", ""),
        ("no box at all", None),
        ("", None),
        (r"\boxed{3} and an unclosed \boxed{4", None),
        (r"\boxed{\boxed{5}}", "5"),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("7", "7"),
        (" 7 ", "7"),
        ("07", "7"),
        ("3.0", "3"),
        ("3.", "3"),
        ("$7$", "7"),
        ("7.", "7"),
        ("+3", "3"),
        ("-0", "0"),
        ("-2", "-2"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("12345678901234567890", "12345678901234567890"),
        (r"\frac{1}{2}", r"\frac{1}{2}"),
        ("x + 1", "x+1"),
    ],
)
def test_normalize_answer(answer, expected):
    assert normalize_answer(answer) == expected


def test_score_dict_shape_and_values():
    right = compute_score("toy_arithmetic", r"\boxed{7}", "7")
    assert right == {"score": 1.0, "acc": True, "pred": "7"}
    assert isinstance(right["score"], float) and isinstance(right["acc"], bool)
    assert compute_score("toy_arithmetic", r"\boxed{8}", "7") == {"score": 0.0, "acc": False, "pred": "8"}
    assert compute_score("toy_arithmetic", "7", "7") == {"score": 0.0, "acc": False, "pred": ""}


@pytest.mark.parametrize(
    ("response", "truth", "acc"),
    [
        (r"The answer is \boxed{ 07 }.", "7", True),
        (r"\boxed{$3.0$}", "3", True),
        (r"\boxed{1} no wait \boxed{2}", "2", True),
        (r"\boxed{2} no wait \boxed{1}", "2", False),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", True),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{3}", False),
        (r"\boxed{12}", "1", False),
        ("the answer is 7", "7", False),
        (r"\boxed{7", "7", False),
    ],
)
def test_generic_sources(response, truth, acc):
    assert compute_score("my_dataset", response, truth)["acc"] is acc


def test_toy_task_is_scored_strictly():
    """The bundled task wants the boxed answer alone; other sources accept text around it."""
    assert compute_score("toy_arithmetic", " \\boxed{7}\n", "7")["acc"]
    for junk in (r"\boxed{7}xed{3}", r"so \boxed{7}", r"\boxed{7}."):
        assert not compute_score("toy_arithmetic", junk, "7")["acc"]
        assert compute_score("elsewhere", junk, "7")["acc"]
    assert score_boxed(r"\boxed{7}x", "7", strict=True)["pred"] == "7"


@pytest.mark.skipif(HAS_MATH_VERIFY, reason="checks the behaviour without the optional math_verify")
def test_without_math_verify_only_string_equivalence():
    assert not is_equiv("1/2", "0.5")
    assert is_equiv("0.50", ".5")


@pytest.mark.skipif(not HAS_MATH_VERIFY, reason="math_verify is optional")
def test_math_verify_equivalence():
    assert is_equiv(r"\dfrac12", "0.5")
    assert not is_equiv("3", "4")


def test_verl_sources_are_dispatched_to_default_compute_score():
    assert reward._is_verl_source("math_dapo") and reward._is_verl_source("aime2025")
    assert reward._is_verl_source("openai/gsm8k") and not reward._is_verl_source("toy_arithmetic")
    # math_dapo scores +-1 and reads "Answer: ..." (veRL's own scorer, unchanged).
    dapo = compute_score("aime2024", "Answer: 7", "7")
    assert dapo["score"] == 1.0 and dapo["acc"] is True
    assert compute_score("math_dapo", "Answer: 6", "7")["score"] == -1.0
    assert compute_score("openai/gsm8k", "so #### 72", "72") == 1.0


@pytest.mark.parametrize("how", ["pkg", "file"])
def test_loadable_as_verl_custom_reward_function(how):
    from verl.utils.import_utils import load_extern_object

    path = "pkg://verl_espo.rewards.math" if how == "pkg" else reward.__file__
    fn = load_extern_object(module_path=path, object_name="compute_score")
    assert fn("toy_arithmetic", r"\boxed{7}", "7", extra_info={"index": 0})["score"] == 1.0
