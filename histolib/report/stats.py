"""Uncertainty over two levels: generator replicates, then segmentation seeds within each.

A synthetic-data result ``y_gs`` (generator replicate ``g`` of ``G``, U-Net seed ``s`` of ``S``) varies
with the generator that drew the data *and* with the segmentation seed. One generator and several
U-Net seeds measure only the second level; its intervals are too narrow (a notebook-01 run showed one
tiny numerical change moving synthetic-only rows by ~8 Dice points). The model here is the balanced
nested random-effects model::

    y_gs = mu + a_g + e_gs,    a_g ~ N(0, sigma_a^2),    e_gs ~ N(0, sigma_e^2)

whose grand mean ``ybar = (1/G) sum_g ybar_g`` (the mean of the generator means) has

    Var(ybar) = sigma_a^2 / G + sigma_e^2 / (G S),

estimated without bias by ``s_gbar^2 / G`` (``s_gbar^2``: the sample variance of the generator
means ``ybar_g``), with ``G - 1`` degrees of freedom. The generator means are the independent units;
an interval or test that treats the ``G S`` values as independent would be too narrow.

A set with no generator (``Real``) is the same model with one value per group: pass each seed as its
own group (:func:`single_level`), and the formulas reduce to the usual ``s / sqrt(n)``, ``n - 1`` df.

Two sets are compared with Welch's t on these standard errors (Welch-Satterthwaite degrees of
freedom); sets are not paired by U-Net seed (the seed's effect is not shared across training sets
in any modelled way), which is the conservative choice. Intervals are t-intervals clipped to the
metric's range (``bounds``); a clipped bound is reported as such (``clipped``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from histolib.errors import ParamError

__all__ = ["single_level", "two_level_summary", "two_level_difference", "two_level_contrast",
           "minimum_detectable_effect"]


def single_level(values: Sequence[float]) -> list[list[float]]:
    """``[v1, v2, ...]`` -> ``[[v1], [v2], ...]``: a one-level sample (seeds only) as groups of one."""
    return [[float(v)] for v in values]


def _groups(groups) -> list[np.ndarray]:
    if isinstance(groups, dict):
        groups = [groups[k] for k in sorted(groups)]
    out = [np.asarray(list(g.values()) if isinstance(g, dict) else list(g), dtype=float) for g in groups]
    out = [g for g in out if g.size]
    if not out:
        raise ParamError("two_level_summary needs at least one value")
    if any(not np.all(np.isfinite(g)) for g in out):
        raise ParamError("two_level_summary got a NaN or infinite value")
    return out


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float, bool]:
    if bounds is None or not (math.isfinite(low) and math.isfinite(high)):
        return low, high, False
    lo, hi = max(low, bounds[0]), min(high, bounds[1])
    return lo, hi, (lo != low or hi != high)


def minimum_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true effect a two-sided t-test at ``alpha`` detects with probability ``power``.

    ``MDE = (t_{1 - alpha/2, df} + t_{power, df}) * SE`` (normal-theory approximation with the t
    quantiles of the test's degrees of freedom). NaN when the standard error or df is undefined.
    """
    if not (math.isfinite(se) and math.isfinite(df)) or df <= 0:
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def two_level_summary(groups, bounds: tuple[float, float] | None = (0.0, 1.0),
                      confidence: float = 0.95) -> dict:
    """Mean of a two-level sample and its interval (module docstring for the model).

    Args:
        groups: one sequence of values per generator replicate (the U-Net seeds' scores), as a list
            of lists or a dict ``{replicate: [values]}`` / ``{replicate: {seed: value}}``. Unequal
            group sizes are allowed (each generator mean then weighs the same).
        bounds: the metric's range; the interval is clipped to it (``None``: no clipping).
        confidence: interval level.

    Returns:
        ``mean``, ``se``, ``df``, ``ci_low``, ``ci_high``, ``clipped`` (whether a bound was cut at the
        range), ``n_generators`` (G), ``n_seeds`` (values per group, or a list when unequal),
        ``sd_between`` (estimated sigma_a, 0 when the groups vary less than their seeds predict),
        ``sd_within`` (pooled sigma_e, NaN with one value per group). With a single group the
        between-generator variance cannot be estimated: ``se``, the interval and ``df`` are NaN.

    Raises:
        ParamError: no value at all, or a NaN/inf value.
    """
    gs = _groups(groups)
    means = np.array([g.mean() for g in gs])
    G = len(gs)
    sizes = [int(g.size) for g in gs]
    mean = float(means.mean())
    within = [((g - g.mean()) ** 2).sum() for g in gs if g.size > 1]
    dof_within = sum(g.size - 1 for g in gs)
    ms_within = float(sum(within) / dof_within) if dof_within else math.nan
    out = {"mean": mean, "n_generators": G, "n_seeds": sizes[0] if len(set(sizes)) == 1 else sizes,
           "sd_within": math.sqrt(ms_within) if math.isfinite(ms_within) else math.nan}
    if G < 2:
        return {**out, "se": math.nan, "df": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "clipped": False, "sd_between": math.nan}
    var_means = float(means.var(ddof=1))
    se = math.sqrt(var_means / G)
    df = G - 1
    half = float(stats.t.ppf((1 + confidence) / 2, df) * se)
    lo, hi, clipped = _clip(mean - half, mean + half, bounds)
    s_bar = float(np.mean(sizes))
    between = var_means - (ms_within / s_bar if math.isfinite(ms_within) else 0.0)
    return {**out, "se": se, "df": float(df), "ci_low": lo, "ci_high": hi, "clipped": clipped,
            "sd_between": math.sqrt(max(0.0, between)) if max(sizes) > 1 else math.sqrt(var_means)}


def two_level_contrast(samples, weights, bounds: tuple[float, float] | None = None, alpha: float = 0.05,
                       power: float = 0.8, label: str = "") -> dict:
    """A linear contrast ``c = sum_k w_k ybar_k`` of independent two-level samples, its Welch t-test
    and interval.

    ``SE^2 = sum_k w_k^2 SE_k^2``, ``df = SE^4 / sum_k (w_k^2 SE_k^2)^2 / df_k`` (Welch-Satterthwaite),
    ``t = c / SE``, ``p = 2 P(T_df > |t|)``, interval ``c +- t_{1 - alpha/2, df} SE`` clipped to
    ``bounds``, minimum detectable effect as in :func:`minimum_detectable_effect`. The difference of
    two samples is the contrast ``(+1, -1)``; "the gain at J=2 minus the gain at J=10" is
    ``(+1, -1, -1, +1)`` over (generated J=2, real J=2, generated J=10, real J=10).

    Args:
        samples: groups as for :func:`two_level_summary`, one per term.
        weights: one weight per sample.
        label: names the units in the ``test`` description.

    Returns:
        ``estimate``, ``se``, ``df``, ``t``, ``p``, ``ci_low``, ``ci_high``, ``clipped``, ``mde``,
        ``parts`` (each sample's summary) and ``test``. The test fields are NaN when a sample has a
        single group (no between-generator variance) or every standard error is zero.
    """
    if len(samples) != len(weights) or not samples:
        raise ParamError(f"two_level_contrast needs one weight per sample, got {len(samples)} and {len(weights)}")
    parts = [two_level_summary(x, bounds=None) for x in samples]
    c = float(sum(w * p["mean"] for w, p in zip(weights, parts, strict=True)))
    units = " vs ".join(str(p["n_generators"]) for p in parts)
    test = (f"Welch t on generator-level means ({label + ': ' if label else ''}{units} units; "
            "two-level SE, Welch-Satterthwaite df)")
    out = {"estimate": c, "parts": parts, "test": test, "se": math.nan, "df": math.nan, "t": math.nan,
           "p": math.nan, "ci_low": math.nan, "ci_high": math.nan, "clipped": False, "mde": math.nan}
    if not all(math.isfinite(p["se"]) for p in parts):
        return out
    v = [w * w * p["se"] ** 2 for w, p in zip(weights, parts, strict=True)]
    se = math.sqrt(sum(v))
    if se == 0:
        return out
    df = sum(v) ** 2 / sum(x * x / p["df"] for x, p in zip(v, parts, strict=True) if x)
    t = c / se
    half = float(stats.t.ppf(1 - alpha / 2, df) * se)
    lo, hi, clipped = _clip(c - half, c + half, bounds)
    return {**out, "se": se, "df": float(df), "t": float(t), "p": float(2 * stats.t.sf(abs(t), df)),
            "ci_low": lo, "ci_high": hi, "clipped": clipped, "mde": minimum_detectable_effect(se, df, alpha, power)}


def two_level_difference(a, b, bounds: tuple[float, float] | None = (-1.0, 1.0), alpha: float = 0.05,
                         power: float = 0.8) -> dict:
    """Difference ``mean(a) - mean(b)`` of two two-level samples: :func:`two_level_contrast` with
    weights ``(+1, -1)``.

    ``d = ybar_a - ybar_b``, ``SE = sqrt(SE_a^2 + SE_b^2)``,
    ``df = SE^4 / (SE_a^4 / df_a + SE_b^4 / df_b)`` (Welch-Satterthwaite), ``t = d / SE``,
    ``p = 2 P(T_df > |t|)``, interval ``d +- t_{1 - alpha/2, df} SE`` clipped to ``bounds``.

    Args:
        a, b: groups as for :func:`two_level_summary` (``single_level(values)`` for a set without
            generators).
        bounds: range of the difference (``(-1, 1)`` for a score in [0, 1]).

    Returns:
        The contrast's fields, plus ``a`` and ``b`` (their summaries).
    """
    out = two_level_contrast([a, b], [1, -1], bounds, alpha, power)
    return {**out, "a": out["parts"][0], "b": out["parts"][1]}
