"""Pooled segmentation metrics and the statistics over seeds shared by every notebook (DESIGN.md s.6)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from histolib.errors import ParamError


def confusion(pred: np.ndarray, target: np.ndarray, cls: int = 1) -> tuple[int, int, int]:
    """Pooled true positives, false positives and false negatives of class ``cls``.

    Args:
        pred: predicted labels, any shape, e.g. ``(N, H, W)`` over a whole test split.
        target: ground-truth labels, same shape.
        cls: the positive class.

    Returns:
        ``(tp, fp, fn)`` summed over every pixel (pooling over images, not a per-image mean).

    Raises:
        ParamError: shapes differ.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ParamError(f"pred {pred.shape} and target {target.shape} must have the same shape")
    p, t = pred == cls, target == cls
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p & ~t)), int(np.count_nonzero(~p & t))


def dice_precision_recall(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, precision and recall from pooled counts.

    ``dice = 2 tp / (2 tp + fp + fn)``, ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``.
    A ratio whose denominator is 0 is 1.0 when there was nothing to find and nothing was found
    (``tp = fp = fn = 0``), else 0.0.
    """
    empty = 1.0 if tp == fp == fn == 0 else 0.0
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else empty,
        "precision": tp / (tp + fp) if (tp + fp) else empty,
        "recall": tp / (tp + fn) if (tp + fn) else empty,
    }


def segmentation_scores(pred: np.ndarray, target: np.ndarray, cls: int = 1) -> dict[str, float]:
    """:func:`confusion` then :func:`dice_precision_recall`, with the counts kept."""
    tp, fp, fn = confusion(pred, target, cls)
    return {**dice_precision_recall(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}


def summarize(values, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and a Student-t confidence interval of the mean.

    ``ci = mean +- t_{(1+c)/2, n-1} * std / sqrt(n)``. With one value, std and the interval are NaN.
    """
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ParamError("summarize() needs at least one value")
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, v.size - 1) * std / math.sqrt(v.size))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": int(v.size)}


def paired_test(a, b) -> dict[str, float]:
    """Paired two-sided t-test of ``a`` against ``b`` (same seeds, in the same order).

    Returns:
        ``mean_diff`` (a - b), ``t``, ``p`` and ``n``. With fewer than 2 pairs, or identical
        pairs, ``t`` and ``p`` are NaN. With the few seeds of a CPU run the test has little power:
        read ``p`` together with the interval of the difference.
    """
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    if a.shape != b.shape:
        raise ParamError(f"paired_test needs equally many values, got {a.size} and {b.size}")
    d = a - b
    out = {"mean_diff": float(d.mean()) if d.size else math.nan, "n": int(d.size), "test": "paired t-test"}
    if d.size < 2 or np.allclose(d, d[0]):
        return {**out, "t": math.nan, "p": math.nan}
    res = stats.ttest_rel(a, b)
    return {**out, "t": float(res.statistic), "p": float(res.pvalue)}
