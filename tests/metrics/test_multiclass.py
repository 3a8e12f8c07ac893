import math

import numpy as np
import pytest

from histolib.metrics.multiclass import imagewise_f1, per_class_scores
from histolib.metrics.region import mean_region_scores, region_scores


def test_per_class_scores_on_a_hand_made_3_class_map():
    target = np.array([[[0, 1, 1, 0],
                        [0, 1, 2, 2],
                        [0, 0, 2, 2]]])
    pred = np.array([[[0, 1, 0, 0],
                      [1, 1, 2, 1],
                      [0, 0, 2, 2]]])
    s = per_class_scores(pred, target)
    # NG: tp 2 (0,1),(1,1); fp 2 (1,0),(1,3); fn 1 (0,2)
    assert (s["NG"]["tp"], s["NG"]["fp"], s["NG"]["fn"]) == (2, 2, 1)
    assert s["NG"]["precision"] == pytest.approx(0.5) and s["NG"]["recall"] == pytest.approx(2 / 3)
    assert s["NG"]["dice"] == pytest.approx(4 / 7)
    # SG: tp 3, fp 0, fn 1
    assert (s["SG"]["precision"], s["SG"]["recall"], s["SG"]["dice"]) == pytest.approx((1.0, 0.75, 6 / 7))
    assert s["mean"]["dice"] == pytest.approx((4 / 7 + 6 / 7) / 2)
    assert s["SG"]["f1"] == pytest.approx(6 / 7)  # one image: imagewise F1 = its Dice


def test_imagewise_f1_averages_images_with_the_class():
    target = np.array([[[2, 2]], [[0, 0]], [[2, 0]]])
    pred = np.array([[[2, 0]], [[0, 0]], [[2, 0]]])
    assert imagewise_f1(pred, target, 2) == pytest.approx((2 / 3 + 1.0) / 2)  # the empty image is skipped
    assert math.isnan(imagewise_f1(pred, target, 1))
    pooled = per_class_scores(pred, target)["SG"]["dice"]
    assert pooled == pytest.approx(4 / 5)  # pooled differs from imagewise


def test_per_class_scores_accepts_lists_of_sizes():
    s = per_class_scores([np.array([[1, 2]]), np.array([[2]])], [np.array([[1, 2]]), np.array([[1]])])
    assert s["NG"]["recall"] == pytest.approx(0.5) and s["SG"]["precision"] == pytest.approx(0.5)


def test_region_scores_by_hand():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    m = np.zeros((16, 16), bool)
    m[4:8, 4:8] = True
    b[m] = 151  # |diff| = 51 / 255 = 0.2 inside, nothing outside
    b[0, 0] = 0  # outside the region: ignored by MAE / PSNR
    s = region_scores(a, b, m)
    assert s["mae"] == pytest.approx(0.2)
    assert s["mae_aot"] == pytest.approx(51 / 251)
    assert s["psnr"] == pytest.approx(10 * math.log10(1 / 0.04))
    same = region_scores(a, a, m)
    assert same["mae"] == 0 and same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        region_scores(a, b, np.zeros((16, 16)))
    mean = mean_region_scores([a, a], [b, a], [m, m])
    assert mean["n"] == 2 and mean["mae"] == pytest.approx(0.1)
    assert mean_region_scores([], [], [])["n"] == 0
