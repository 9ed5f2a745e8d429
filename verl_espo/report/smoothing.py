"""Curve smoothing for the report's figures: TensorBoard's debiased EMA, a trailing moving average, or none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SmoothingConfig", "smooth"]

METHODS = ("ema", "rolling", "none")


@dataclass(frozen=True)
class SmoothingConfig:
    """How training curves are smoothed (validation points are never smoothed).

    Args:
        method: ``ema`` (TensorBoard's scalar smoothing: an exponential moving average with its start-up bias
            removed), ``rolling`` (mean of the last ``window`` points), or ``none``.
        weight: EMA weight in [0, 1): the share of the previous smoothed value; TensorBoard's slider, default 0.6.
        window: points in the rolling mean (>= 1).
    """

    method: str = "ema"
    weight: float = 0.6
    window: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"smoothing method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"smoothing weight (--smoothing) must be in [0, 1), got {self.weight}")
        if self.window < 1:
            raise ValueError(f"smoothing window (--smoothing-window) must be >= 1, got {self.window}")

    @property
    def active(self) -> bool:
        """Whether :func:`smooth` changes anything."""
        return (self.method == "ema" and self.weight > 0) or (self.method == "rolling" and self.window > 1)

    def describe(self) -> str:
        if self.method == "ema" and self.weight > 0:
            return f"EMA, weight {self.weight:g} (TensorBoard's debiased smoothing)"
        if self.method == "rolling" and self.window > 1:
            return f"trailing mean over {self.window} points"
        return "none"


def smooth(values: np.ndarray, config: SmoothingConfig) -> np.ndarray:
    """The smoothed curve, same length as ``values``; non-finite points pass through and are not accumulated.

    EMA as in TensorBoard's scalar dashboard: ``last = w * last + (1 - w) * v``,
    reported as ``last / (1 - w**i)`` after ``i`` finite points, so the curve starts at the first value instead of
    at 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if config.method == "none" or values.size == 0:
        return values.copy()
    finite = np.isfinite(values)
    out = values.copy()
    if config.method == "ema":
        w, last, count = config.weight, 0.0, 0
        for i, v in enumerate(values):
            if finite[i]:
                last = w * last + (1.0 - w) * v
                count += 1
                out[i] = last / (1.0 - w**count) if w > 0 else last
        return out
    for i in range(values.size):  # rolling: mean of the finite values among the last `window` points
        chunk = values[max(0, i - config.window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if finite[i] and chunk.size:
            out[i] = chunk.mean()
    return out
