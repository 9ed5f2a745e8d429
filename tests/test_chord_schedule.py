"""CHORD's mu schedule (arXiv 2508.11408; Trinity-RFT ``mix_chord``): linear warm-up to ``mu_peak``, cosine decay
to ``mu_valley`` over ``mu_decay_steps``, then constant. Expected values are written out by hand."""

from __future__ import annotations

import math

import pytest

from verl_espo.config import HybridConfig
from verl_espo.core.chord import mu_schedule


def test_chord_phi_is_a_constant_from_step_zero():
    """CHORD-phi: warm-up 0, decay 0, peak = valley = 0.1 (HybridConfig's defaults)."""
    h = HybridConfig()
    args = (h.mu_warmup_steps, h.mu_decay_steps, h.mu_peak, h.mu_valley)
    assert args == (0, 0, 0.1, 0.1)
    for step in (0, 1, 2, 57, 10_000):
        assert mu_schedule(step, *args) == 0.1


@pytest.mark.parametrize(
    "step,expected",
    [
        (0, 0.9),
        # 0.05 + 0.85 * (1 + cos(pi / 4)) / 2 = 0.05 + 0.425 * (1 + sqrt(2) / 2)
        (50, 0.7755203820042827),
        (100, 0.475),  # half-way: the mean of peak and valley
        # 0.05 + 0.425 * (1 - sqrt(2) / 2)
        (150, 0.17447961799571727),
        (199, 0.05 + 0.425 * (1 + math.cos(math.pi * 199 / 200))),
        (200, 0.05),
        (500, 0.05),
    ],
)
def test_chord_mu_cosine_decay(step, expected):
    """CHORD-mu: 0.9 -> 0.05 over 200 steps, no warm-up."""
    assert mu_schedule(step, 0, 200, 0.9, 0.05) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_decay_is_monotone_and_bounded():
    values = [mu_schedule(s, 0, 200, 0.9, 0.05) for s in range(0, 260)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert max(values) == 0.9 and min(values) == pytest.approx(0.05, abs=1e-15)


@pytest.mark.parametrize(
    "step,expected",
    [
        (0, 0.0),
        (1, 0.05),
        (5, 0.25),
        (9, 0.45),
        (10, 0.5),  # end of the warm-up: the peak, start of the decay
        (20, 0.3),  # half-way through the decay: (0.5 + 0.1) / 2
        (30, 0.1),
        (31, 0.1),
    ],
)
def test_linear_warm_up_then_decay(step, expected):
    """Warm-up 10 steps to 0.5, then cosine to 0.1 over 20 steps."""
    assert mu_schedule(step, 10, 20, 0.5, 0.1) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warm_up_without_decay_ends_at_the_valley():
    """Trinity-RFT's rule: from ``warmup + decay`` on, ``valley`` (no decay: right after the warm-up)."""
    assert [mu_schedule(s, 4, 0, 0.4, 0.1) for s in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.1, 0.1])


def test_sft_then_rl_is_a_step_from_one_to_zero():
    """SFT-then-RL as a special case (CHORD Sec. 3): peak 1 for ``n`` steps, then valley 0."""
    assert [mu_schedule(s, 0, 0, 1.0, 0.0) for s in range(3)] == [0.0, 0.0, 0.0]
    assert [mu_schedule(s, 0, 1, 1.0, 0.0) for s in range(3)] == [1.0, 0.0, 0.0]


def test_negative_step_is_an_error():
    with pytest.raises(ValueError, match="step must be >= 0"):
        mu_schedule(-1, 0, 200, 0.9, 0.05)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mu_peak": 1.5}, "hybrid.mu_peak must be in [0, 1]"),
        ({"mu_valley": -0.01}, "hybrid.mu_valley must be in [0, 1]"),
        ({"mu_peak": "0.5"}, "hybrid.mu_peak must be in [0, 1]"),
        ({"mu_warmup_steps": -1}, "hybrid.mu_warmup_steps must be an integer >= 0"),
        ({"mu_decay_steps": 2.5}, "hybrid.mu_decay_steps must be an integer >= 0"),
        ({"mu_decay_steps": True}, "hybrid.mu_decay_steps must be an integer >= 0"),
        ({"sft_phi": "yes"}, "hybrid.sft_phi must be true or false"),
    ],
)
def test_schedule_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError) as info:
        HybridConfig(**kwargs)
    assert f"actor_rollout_ref.actor.policy_loss.{message}" in str(info.value)
