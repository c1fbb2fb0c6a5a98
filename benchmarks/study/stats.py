"""Paired statistics of a study's per-seed results: a paired bootstrap interval and an exact sign test."""

from __future__ import annotations

from math import comb

import numpy as np


def paired_bootstrap(a, b, *, level: float = 0.95, n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean difference, low, high)``: the mean of ``a[i] - b[i]`` over pairs (seeds) and its percentile bootstrap
    interval at ``level``, resampling pairs with replacement.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, or no pair.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.shape(a) != np.shape(b) or d.ndim != 1 or d.size == 0:
        raise ValueError(f"need two equally long lists of paired values, got {np.shape(a)} and {np.shape(b)}")
    means = d[np.random.default_rng(seed).integers(d.size, size=(n, d.size))].mean(1)
    tail = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def sign_test(a, b) -> tuple[int, int, float]:
    """``(pairs with a > b, pairs with a < b, two-sided exact p)``: the binomial sign test of the paired
    differences, ties dropped; p = min(1, 2 · P(X <= min(k, n - k))) for X ~ Binomial(n, 1/2); 1 with no untied pair.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    plus, minus = int((d > 0).sum()), int((d < 0).sum())
    n, k = plus + minus, min(plus, minus)
    if n == 0:
        return plus, minus, 1.0
    return plus, minus, min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
