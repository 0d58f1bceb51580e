"""Confidence intervals for the tables: Student-t intervals of means and of paired differences.

    mean, low, high = mean_ci([0.8, 0.9, 0.85])         # 95% Student-t interval of the mean
    mean, half = t_interval(values)                      # the same as mean +- half
    diff, low, high = paired_difference_ci(coupled, independent)   # per seed, then the interval

Paired data (the same seeds for both arms) give much tighter intervals than two separate means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

CONFIDENCE = 0.95


def _as_floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.detach().double().flatten()]
    return [float(v) for v in values]


def t_interval(
    values: Sequence[float] | torch.Tensor, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """(mean, half-width of the two-sided Student-t interval); half is nan below 2 values."""
    from scipy import stats

    data = _as_floats(values)
    n = len(data)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(data) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in data) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci(
    values: Sequence[float] | torch.Tensor, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval; (mean, nan, nan) for fewer than 2 values."""
    mean, half = t_interval(values, confidence)
    return mean, mean - half, mean + half


def paired_difference_ci(
    a: Sequence[float] | torch.Tensor,
    b: Sequence[float] | torch.Tensor,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(mean, low, high) of a_i - b_i over pairs i (the same seed in both arms)."""
    left, right = _as_floats(a), _as_floats(b)
    if len(left) != len(right):
        raise ValueError(f"paired samples differ in length: {len(left)} vs {len(right)}")
    return mean_ci([x - y for x, y in zip(left, right)], confidence)
