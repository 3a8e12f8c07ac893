import math

import numpy as np
import pytest

from histolib.metrics.image import (
    diversity,
    image_similarity,
    kid,
    mae,
    mean_pairwise_distance,
    mmd2_unbiased,
    psnr,
    ssim,
)


def test_mmd2_hand_case():
    # d = 1, k(a, b) = (a b + 1)^3: kxx off-diagonal = k(0, 1) = 1, kyy = k(0, 2) = 1,
    # kxy = {1, 1, 1, 27} -> mean 7.5; MMD^2_u = 1 + 1 - 2 * 7.5 = -13
    assert mmd2_unbiased([[0.0], [1.0]], [[0.0], [2.0]]) == pytest.approx(-13.0)


def test_kid_of_identical_sets_is_about_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 16))
    same = kid(real, real, n_subsets=20, subset_size=100, rng=1)
    other = kid(real, rng.normal(size=(200, 16)), n_subsets=20, subset_size=100, rng=1)
    shifted = kid(real, real + 0.5, n_subsets=20, subset_size=100, rng=1)
    # the same set: subsets share samples, which biases the estimate slightly below 0
    assert abs(same["kid"]) < 0.1 * shifted["kid"] and abs(other["kid"]) < 0.05 * shifted["kid"]
    assert shifted["kid"] > 0.5
    assert shifted["subset_size"] == 100 and shifted["kid_std"] >= 0


def test_kid_validates_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="feature sizes"):
        mmd2_unbiased(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        kid(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_mean_pairwise_distance_hand_case():
    pts = [[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]]  # distances 5, 3, 4
    assert mean_pairwise_distance(pts) == pytest.approx(4.0)
    assert mean_pairwise_distance([[1.0, 0.0], [0.0, 1.0]], "cosine") == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_distance([[1.0, 2.0]]))


def test_diversity_is_zero_within_a_condition_when_noise_is_ignored():
    feats = np.repeat(np.array([[0.0, 0.0], [3.0, 4.0]])[:, None], 3, axis=1)  # (C=2, K=3, D=2)
    d = diversity(feats)
    assert d["within_condition"] == 0.0 and d["across_conditions"] == pytest.approx(5.0)


def test_ssim_psnr_mae_hand_cases():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert math.isinf(psnr(a, a)) and mae(a, a) == 0.0
    assert mae(a, np.full_like(a, 255)) == 1.0
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))  # MSE 1
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, a.shape, dtype=np.uint8)
    scores = image_similarity(a + 128, noisy)
    assert scores["ssim"] < 0.5 and 0 < scores["mae"] < 1


def test_image_metrics_validate_inputs():
    with pytest.raises(ValueError, match="uint8"):
        ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="shape"):
        mae(np.zeros((16, 16, 3), np.uint8), np.zeros((15, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_high_frequency_energy_of_hand_made_patterns():
    from histolib.metrics.image import high_frequency_energy

    yy, xx = np.mgrid[:16, :16]
    slow = np.cos(2 * np.pi * xx / 16)      # 1/16 cycles per pixel: all power below the cutoff
    fast = np.cos(np.pi * xx)               # 0.5 cycles per pixel (alternating columns): all above
    assert high_frequency_energy(slow[None]) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_energy(fast[None]) == pytest.approx(1.0)      # mean square of +-1
    assert high_frequency_energy((slow + fast)[None]) == pytest.approx(1.0)  # the slow part filtered out
    assert high_frequency_energy(0.5 * fast[None]) == pytest.approx(0.25)  # power: amplitude squared
    # channels and images averaged; constant images count 0
    both = np.stack([np.stack([slow, fast], -1), np.zeros((16, 16, 2))])
    assert high_frequency_energy(both) == pytest.approx(0.25)
    # uint8 is read in [0, 1]: the +-1 columns as 0 / 255 have amplitude 1/2
    assert high_frequency_energy(((fast[None] + 1) * 127.5).astype(np.uint8)) == pytest.approx(0.25, rel=1e-3)
    # white noise of variance 1: the area share of |f| > 0.25 (1 - pi/16 ~ 0.80)
    noise = np.random.default_rng(0).normal(size=(8, 64, 64))
    assert high_frequency_energy(noise) == pytest.approx(1 - np.pi * 0.25 ** 2, abs=0.03)


@pytest.mark.parametrize("bad, match", [(np.zeros((0, 8, 8)), "non-empty"), (np.zeros((8, 8)), "non-empty")])
def test_high_frequency_energy_rejects_bad_input(bad, match):
    from histolib.metrics.image import high_frequency_energy

    with pytest.raises(ValueError, match=match):
        high_frequency_energy(bad)
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_energy(np.zeros((1, 8, 8)), cutoff=0.5)
