"""Faithfulness on hand-made generators: a perfect one scores the real score, a constant one the baseline."""

import numpy as np
import pytest

from histolib.errors import ParamError
from histolib.metrics.faithfulness import faithfulness, per_image_mean, pooled_dice


def _data(n=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.integers(1, size - 4, 2)
        masks[i, r:r + 3, c:c + 3] = 1
    images = np.where(masks[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=-1)
    return images, masks


def segment(images):  # a "segmenter trained on real data": bright pixels are glomerulus
    return (images[..., 0] > 120).astype(np.uint8)


def test_perfect_generator_scores_the_real_score():
    real_images, real_masks = _data(seed=1)
    gen_masks = _data(seed=2)[1]
    real_image_of = lambda m: np.where(m[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=-1)  # noqa: E731
    f = faithfulness(segment, real_image_of(gen_masks), gen_masks, real_images, real_masks)
    assert f["synthetic"] == pytest.approx(f["real"]) and f["ratio"] == pytest.approx(1.0)


def test_constant_generator_scores_the_baseline():
    real_images, real_masks = _data(seed=1)
    gen_masks = _data(seed=2)[1]
    constant = np.full((len(gen_masks), 8, 8, 3), 200, np.uint8)  # the same bright patch for every mask
    f = faithfulness(segment, constant, gen_masks, real_images, real_masks)
    baseline = pooled_dice(np.ones_like(gen_masks), gen_masks)  # "everything glomerulus"
    assert f["synthetic"] == pytest.approx(baseline)
    assert f["trivial"] == pytest.approx(pooled_dice(np.ones_like(real_masks), real_masks))
    assert f["ratio"] < 0.5


def test_pooled_dice_by_hand():
    pred = np.array([[[1, 1, 0, 0]]])
    target = np.array([[[1, 0, 0, 0]]])
    assert pooled_dice(pred, target) == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))


def test_per_image_mean_argument_order():
    seen = []

    def metric(true, pred):
        seen.append((true.sum(), pred.sum()))
        return 1.0

    score = per_image_mean(metric)
    assert score([np.ones((2, 2))], [np.zeros((2, 2))]) == 1.0
    assert seen == [(0, 4)]  # (true, pred) as hover_net's functions take them


def test_empty_input_named():
    images, masks = _data()
    with pytest.raises(ParamError, match="no generated"):
        faithfulness(segment, images[:0], masks[:0], images, masks)
    with pytest.raises(ParamError, match="labels"):
        faithfulness(segment, images, masks[:2], images, masks)
