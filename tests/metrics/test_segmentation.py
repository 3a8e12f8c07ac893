"""Pooled Dice / precision / recall and the statistics over seeds, on cases worked out by hand."""

import math

import numpy as np
import pytest

from histolib.metrics.segmentation import (
    confusion,
    dice_precision_recall,
    paired_test,
    segmentation_scores,
    summarize,
)


def test_hand_computed_4x4():
    target = np.array([[1, 1, 0, 0],
                       [1, 1, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 0],
                     [0, 1, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 1]])
    # tp = 3 (three of the four target pixels), fp = 2 (0,2) and (3,3), fn = 1 (1,0)
    assert confusion(pred, target) == (3, 2, 1)
    s = segmentation_scores(pred, target)
    assert s["dice"] == pytest.approx(6 / 9)
    assert s["precision"] == pytest.approx(3 / 5)
    assert s["recall"] == pytest.approx(3 / 4)


def test_pooling_is_not_a_mean_of_images():
    target = np.zeros((2, 2, 2), int)
    target[0] = 1                      # image 0: 4 positive pixels; image 1: none
    pred = np.zeros_like(target)
    pred[0, 0, 0] = 1                  # 1 tp, 3 fn
    pred[1, 0, 0] = 1                  # 1 fp
    assert dice_precision_recall(*confusion(pred, target))["dice"] == pytest.approx(2 / (2 + 1 + 3))


def test_empty_conventions():
    assert dice_precision_recall(0, 0, 0) == {"dice": 1.0, "precision": 1.0, "recall": 1.0}
    assert dice_precision_recall(0, 0, 5) == {"dice": 0.0, "precision": 0.0, "recall": 0.0}


def test_summarize_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0
    # t_{0.975, 2} = 4.302652...
    assert s["ci_high"] - 2.0 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert math.isnan(summarize([0.5])["std"])


def test_paired_test():
    r = paired_test([0.9, 0.8, 0.85], [0.8, 0.75, 0.7])
    assert r["mean_diff"] == pytest.approx(0.1) and r["n"] == 3
    assert 0 < r["p"] < 1
    assert math.isnan(paired_test([1.0, 2.0], [0.0, 1.0])["p"])  # constant difference: no variance
