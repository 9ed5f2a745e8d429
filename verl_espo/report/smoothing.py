"""Curve smoothing for the report's figures: TensorBoard's debiased EMA, a trailing moving average, or none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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


def smooth(values: pd.Series, config: SmoothingConfig) -> pd.Series:
    """The smoothed curve, same index as ``values``; non-finite points pass through and are not accumulated.

    ``ema`` is TensorBoard's scalar smoothing, ``last = w * last + (1 - w) * v`` reported as
    ``last / (1 - w**i)`` after ``i`` finite points: pandas' ``ewm(alpha=1 - w, adjust=True)``. ``rolling`` is
    the mean of the finite values among the last ``window`` points.
    """
    values = pd.Series(values, dtype="float64")
    finite = values.where(np.isfinite(values))
    if config.method == "ema" and config.weight > 0:
        smoothed = finite.ewm(alpha=1.0 - config.weight, adjust=True, ignore_na=True).mean()
    elif config.method == "rolling":
        smoothed = finite.rolling(config.window, min_periods=1).mean()
    else:
        return values.copy()
    return smoothed.where(finite.notna(), values)
