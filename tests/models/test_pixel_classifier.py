"""DatasetGAN's pixel classifier: shapes, ensemble vote and uncertainty on hand-made cases."""

import math

import numpy as np
import pytest
import torch

from histolib.errors import ParamError
from histolib.models.pixel_classifier import PixelClassifier, image_uncertainty, js_divergence, keep_certain, \
    majority_vote


def test_shapes_and_layers():
    m = PixelClassifier(10, 5, (128, 32), dropout=0.2)
    assert m(torch.randn(8, 10)).shape == (8, 5)
    kinds = [type(x).__name__ for x in m.layers]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert [x.out_features for x in m.layers if isinstance(x, torch.nn.Linear)] == [128, 32, 5]
    with pytest.raises(ParamError, match="expects"):
        m(torch.randn(8, 11))
    with pytest.raises(ParamError):
        PixelClassifier(10, 1)


def test_js_divergence_hand_made():
    big = 50.0
    # two members agreeing (both sure of class 0) -> 0; sure of different classes -> log 2
    agree = torch.tensor([[[big, 0.0]], [[big, 0.0]]])
    disagree = torch.tensor([[[big, 0.0]], [[0.0, big]]])
    assert js_divergence(agree).item() == pytest.approx(0.0, abs=1e-6)
    assert js_divergence(disagree).item() == pytest.approx(math.log(2), abs=1e-5)
    # both uniform: entropy high but no disagreement -> 0
    assert js_divergence(torch.zeros(3, 1, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_image_uncertainty_is_mean_of_top_share():
    js = torch.tensor([0.0] * 18 + [1.0, 3.0])
    assert image_uncertainty(js, 0.1) == pytest.approx(2.0)  # top 2 of 20
    assert image_uncertainty(js, 1.0) == pytest.approx(0.2)
    assert image_uncertainty(np.array([0.5]), 0.1) == pytest.approx(0.5)  # at least one pixel


def test_keep_certain_drops_the_most_uncertain_share():
    scores = [0.1, 0.9, 0.2, 0.8, 0.3, 0.0, 0.5, 0.4, 0.6, 0.7]
    assert keep_certain(scores, 0.1).tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 9]  # 0.9 goes
    assert keep_certain(scores, 0.2).tolist() == [0, 2, 4, 5, 6, 7, 8, 9]    # 0.9 and 0.8 go
    assert keep_certain(scores, 0.0).tolist() == list(range(10))
    assert keep_certain([1.0, 1.0, 0.0], 0.34).tolist() == [0, 2]  # a tie: the later one goes


def test_majority_vote_and_ties():
    # 3 members, 2 pixels, 3 classes: pixel 0 votes 1,1,2 -> 1; pixel 1 votes 0,2,... tie broken by mean prob
    logits = torch.tensor([
        [[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]],
        [[0.0, 5.0, 0.0], [0.0, 0.0, 9.0]],
        [[0.0, 0.0, 5.0], [0.0, 0.0, 0.0]],
    ])
    # pixel 1: member 3 is uniform -> argmax 0; votes 0: 2, 2: 1 -> 0
    assert majority_vote(logits).tolist() == [1, 0]
    tie = torch.tensor([[[5.0, 0.0]], [[0.0, 9.0]]])  # one vote each; class 1 has the higher mean prob
    assert majority_vote(tie).tolist() == [1]
