"""Two-level intervals over generator replicates and seeds, on cases worked out by hand."""

import math

import pytest
from scipy import stats

from histolib.errors import ParamError
from histolib.report.stats import minimum_detectable_effect, single_level, two_level_difference, two_level_summary


def test_two_level_summary_by_hand():
    # generator means 0.6 and 0.8 -> mean 0.7; s^2 of the means = 0.02; SE = sqrt(0.02 / 2) = 0.1; df 1
    s = two_level_summary([[0.5, 0.7], [0.8, 0.8]], bounds=None)
    assert s["mean"] == pytest.approx(0.7)
    assert s["se"] == pytest.approx(0.1)
    assert s["df"] == 1
    half = stats.t.ppf(0.975, 1) * 0.1  # 12.706 * 0.1
    assert s["ci_low"] == pytest.approx(0.7 - half)
    assert s["ci_high"] == pytest.approx(0.7 + half)
    # pooled within variance: ((0.1^2 + 0.1^2) + 0) / 2 = 0.01 -> sd_within 0.1
    assert s["sd_within"] == pytest.approx(0.1)
    # sigma_a^2 = 0.02 - 0.01 / 2 = 0.015
    assert s["sd_between"] == pytest.approx(math.sqrt(0.015))
    assert s["n_generators"] == 2 and s["n_seeds"] == 2


def test_interval_clipped_to_the_metric_range():
    s = two_level_summary([[0.5, 0.7], [0.8, 0.8]])  # bounds (0, 1): 0.7 +- 1.27 is cut
    assert s["ci_low"] == 0.0 and s["ci_high"] == 1.0 and s["clipped"]


def test_seeds_are_not_counted_as_independent_units():
    # many seeds per generator cannot shrink the SE below the spread of the generator means
    many = two_level_summary([[0.6] * 50, [0.8] * 50], bounds=None)
    assert many["se"] == pytest.approx(0.1)


def test_single_level_reduces_to_the_usual_interval():
    v = [0.90, 0.92, 0.97]
    s = two_level_summary(single_level(v), bounds=None)
    mean = sum(v) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / 2)
    assert s["se"] == pytest.approx(sd / math.sqrt(3))
    assert s["df"] == 2


def test_one_generator_has_no_interval():
    s = two_level_summary([[0.5, 0.6, 0.7]])
    assert math.isnan(s["se"]) and math.isnan(s["ci_low"])


def test_difference_welch_by_hand():
    a = [[0.5, 0.7], [0.8, 0.8]]            # mean 0.7, SE^2 = 0.01, df 1
    b = single_level([0.9, 0.9, 0.96])      # mean 0.92, SE^2 = var/3 = 0.0012/3 = 0.0004, df 2
    d = two_level_difference(a, b, bounds=None)
    assert d["estimate"] == pytest.approx(-0.22)
    se = math.sqrt(0.01 + 0.0004)
    assert d["se"] == pytest.approx(se)
    df = (0.0104 ** 2) / (0.01 ** 2 / 1 + 0.0004 ** 2 / 2)
    assert d["df"] == pytest.approx(df)
    assert d["p"] == pytest.approx(2 * stats.t.sf(0.22 / se, df))
    assert d["mde"] == pytest.approx((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se)


def test_difference_undefined_with_one_generator():
    d = two_level_difference([[0.5, 0.6]], single_level([0.9, 0.8]))
    assert math.isnan(d["p"]) and d["estimate"] == pytest.approx(0.55 - 0.85)


def test_minimum_detectable_effect():
    assert minimum_detectable_effect(1.0, 10) == pytest.approx(stats.t.ppf(0.975, 10) + stats.t.ppf(0.8, 10))
    assert math.isnan(minimum_detectable_effect(math.nan, 3))


def test_bad_input_named():
    with pytest.raises(ParamError, match="at least one"):
        two_level_summary([])
    with pytest.raises(ParamError, match="NaN"):
        two_level_summary([[0.1, float("nan")]])


def test_dict_input_in_key_order():
    s = two_level_summary({1: {0: 0.8, 1: 0.8}, 0: {0: 0.5, 1: 0.7}}, bounds=None)
    assert s["mean"] == pytest.approx(0.7) and s["se"] == pytest.approx(0.1)


def test_contrast_of_four_by_hand():
    from histolib.report.stats import two_level_contrast

    a = [[0.5, 0.7], [0.8, 0.8]]          # mean 0.7, SE^2 0.01, df 1
    b = single_level([0.9, 0.9, 0.96])    # mean 0.92, SE^2 0.0004, df 2
    c = two_level_contrast([a, b, b, a], [1, -1, -1, 1])
    assert c["estimate"] == pytest.approx(0.7 - 0.92 - 0.92 + 0.7)
    assert c["se"] == pytest.approx(math.sqrt(2 * 0.01 + 2 * 0.0004))
    df = (2 * 0.01 + 2 * 0.0004) ** 2 / (2 * 0.01 ** 2 / 1 + 2 * 0.0004 ** 2 / 2)
    assert c["df"] == pytest.approx(df)
    with pytest.raises(ParamError):
        two_level_contrast([a], [1, -1])
