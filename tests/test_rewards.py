"""The project's math reward (``verl_espo.rewards.math``): extraction, normalisation, scoring, loading.

The math-verify equivalence cases (fractions, LaTeX forms, units, multiple boxes, threads) are in
``tests/test_reward_verify.py``.
"""

from __future__ import annotations

import builtins

import pytest

from verl_espo.rewards import math as reward
from verl_espo.rewards.math import compute_score, is_equiv, last_boxed, normalize_answer, score_boxed


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
    assert right == {"score": 1.0, "acc": True, "pred": "7", "verify_timeout": 0.0}
    assert isinstance(right["score"], float) and isinstance(right["acc"], bool)
    assert compute_score("toy_arithmetic", r"\boxed{8}", "7")["pred"] == "8"
    assert compute_score("toy_arithmetic", "7", "7") == {"score": 0.0, "acc": False, "pred": "", "verify_timeout": 0.0}


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


def test_math_verify_equivalence():
    assert is_equiv(r"\dfrac12", "0.5")
    assert is_equiv("1/2", "0.5")
    assert not is_equiv("3", "4")


def test_every_non_toy_source_is_scored_on_the_boxed_answer_with_math_verify():
    """No dispatch to veRL's per-source scorers: GSM8K's '####' and DAPO's 'Answer:' are not answers here."""
    for source in ("openai/gsm8k", "math_dapo", "aime2024", "HuggingFaceH4/MATH-500", "simplerl_zoo"):
        assert compute_score(source, r"so \boxed{\frac{1}{2}}", "0.5") == {
            "score": 1.0,
            "acc": True,
            "pred": r"\frac{1}{2}",
            "verify_timeout": 0.0,
        }
        wrong = {"score": 0.0, "acc": False, "pred": "6", "verify_timeout": 0.0}
        assert compute_score(source, r"\boxed{6}", "7") == wrong
        assert compute_score(source, "Answer: 7", "7")["score"] == 0.0
        assert compute_score(source, "so #### 72", "72")["score"] == 0.0


def test_toy_task_does_not_need_math_verify(monkeypatch):
    """The CPU smoke runs score the toy task without math-verify; other sources say how to install it."""
    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name == "math_verify" or name.startswith("math_verify."):
            raise ImportError("No module named 'math_verify'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    assert compute_score("toy_arithmetic", r"\boxed{7}", "7")["acc"]
    with pytest.raises(ImportError, match=r"math-verify\[antlr4_9_3\]"):
        compute_score("math500", r"\boxed{7}", "7")


@pytest.mark.parametrize("how", ["pkg", "file"])
def test_loadable_as_verl_custom_reward_function(how):
    from verl.utils.import_utils import load_extern_object

    path = "pkg://verl_espo.rewards.math" if how == "pkg" else reward.__file__
    fn = load_extern_object(module_path=path, object_name="compute_score")
    assert fn("toy_arithmetic", r"\boxed{7}", "7", extra_info={"index": 0})["score"] == 1.0
