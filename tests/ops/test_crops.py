import math

import numpy as np
import pytest
import torch

from histolib.ops import crops as CR


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_minimum_enclosing_circle_hand_cases():
    c = CR.minimum_enclosing_circle([[0, 0], [0, 4], [3, 0]])  # right triangle: the hypotenuse is a diameter
    assert (c.cy, c.cx, c.radius) == pytest.approx((1.5, 2.0, 2.5))
    c = CR.minimum_enclosing_circle([[0, 0], [0, 2], [2, 0], [2, 2], [1, 1]])
    assert (c.cy, c.cx, c.radius) == pytest.approx((1, 1, math.sqrt(2)))
    c = CR.minimum_enclosing_circle([[0, 0], [0, 10], [1, 5]])  # obtuse: the two far points decide
    assert (c.cy, c.cx, c.radius) == pytest.approx((0, 5, 5))
    assert CR.minimum_enclosing_circle([[3, 4]]) == CR.Circle(3.0, 4.0, 0.0)
    c = CR.minimum_enclosing_circle([[0, 0], [1, 1], [2, 2], [3, 3]])  # collinear
    assert (c.cy, c.cx, c.radius) == pytest.approx((1.5, 1.5, math.sqrt(2) * 1.5))
    with pytest.raises(ValueError):
        CR.minimum_enclosing_circle(np.zeros((0, 2)))


def test_minimum_enclosing_circle_contains_all_and_is_minimal():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 2)) * [3, 7]
    c = CR.minimum_enclosing_circle(pts)
    d = np.hypot(pts[:, 0] - c.cy, pts[:, 1] - c.cx)
    assert d.max() <= c.radius + 1e-9
    assert np.sum(np.isclose(d, c.radius, atol=1e-9)) >= 2  # it touches at least two points


def test_mask_circle_of_a_known_disc():
    c = CR.mask_circle(_disc((64, 64), 20, 30, 5))
    assert (c.cy, c.cx, c.radius) == pytest.approx((20, 30, 5))
    with pytest.raises(ValueError, match="empty"):
        CR.mask_circle(np.zeros((4, 4), bool))


def test_object_crops_centre_a_known_disc_also_at_the_border():
    labels = np.zeros((64, 64), np.uint8)
    labels[_disc(labels.shape, 20, 30, 5)] = 2
    labels[_disc(labels.shape, 60, 3, 3)] = 2     # cut by the border
    labels[_disc(labels.shape, 45, 45, 4)] = 1    # another class: ignored
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = CR.object_crops(image, labels, cls=2, size=16)
    assert len(out) == 2
    first = out[0]
    assert first.image.shape == (16, 16, 3) and first.mask.shape == (16, 16)
    ys, xs = np.nonzero(first.mask)
    assert (ys.mean(), xs.mean()) == pytest.approx((8, 8))  # the disc's centre lands on index size // 2
    assert first.origin == (12, 22)
    np.testing.assert_array_equal(first.image, image[12:28, 22:38])
    assert set(np.unique(first.labels)) <= {0, 2}
    border = out[1]
    assert border.mask[8, 8] == 1 and border.image.shape == (16, 16, 3)  # reflect-padded, still centred


def test_crop_origin_and_centred_crop():
    assert CR.crop_origin(10, 10, 8) == (6, 6)
    assert CR.crop_origin(9.5, 10.49, 8) == (6, 6)
    a = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(CR.centred_crop(a, 5, 5, 4, "constant"), a[3:7, 3:7])
    edge = CR.centred_crop(a, 0, 0, 4, "constant")
    assert edge[0, 0] == 0 and edge[2, 2] == a[0, 0] and edge[:2].sum() == 0


def test_gap_input_is_eq_1_and_2():
    x = torch.tensor([[[[0.5, -1.0], [0.25, 1.0]]]]).repeat(1, 3, 1, 1)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    inp = CR.gap_input(x, m)
    assert inp.shape == (1, 4, 2, 2)
    np.testing.assert_allclose(inp[0, 0].numpy(), [[0.0, -1.0], [0.25, 0.0]])
    np.testing.assert_array_equal(inp[0, 3].numpy(), m[0, 0].numpy())
    with pytest.raises(ValueError):
        CR.gap_input(x, m[:, :, :1])


def test_local_region_is_eq_6_on_a_hand_made_case():
    x = torch.tensor([[[[0.2, -0.4], [0.6, -1.0]]]])
    m = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    np.testing.assert_allclose(CR.local_region(x, m)[0, 0].numpy(), [[0.2, 1.0], [0.6, 1.0]])


def test_paste_inside_mask_with_partial_overlap():
    target = np.zeros((4, 4), np.uint8)
    patch = np.full((3, 3), 7, np.uint8)
    mask = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    out = CR.paste(target, patch, mask, (-1, 2))  # rows -1..1, cols 2..4: top-left cut off
    expected = np.zeros((4, 4), np.uint8)
    expected[0, 2:4] = 7
    np.testing.assert_array_equal(out, expected)
    assert target.sum() == 0  # a copy


def test_free_and_sampled_centres_keep_the_disc_inside():
    allowed = np.zeros((20, 20), bool)
    allowed[5:15, 5:15] = True
    free = CR.free_centres(allowed, 2.0)
    ys, xs = np.nonzero(free)
    assert ys.min() >= 7 and ys.max() <= 12 and xs.min() >= 7 and xs.max() <= 12
    rng = np.random.default_rng(0)
    for _ in range(20):
        cy, cx = CR.sample_centre(allowed, 2.0, rng)
        assert allowed[_disc(allowed.shape, cy, cx, 2.0)].all()
    assert CR.sample_centre(allowed, 6.0, rng) is None


def test_object_crops_complete_skips_objects_cut_by_the_border():
    labels = np.zeros((32, 32), np.uint8)
    labels[_disc(labels.shape, 16, 16, 4)] = 2
    labels[_disc(labels.shape, 0, 10, 3)] = 2
    image = np.zeros((32, 32, 3), np.uint8)
    assert len(CR.object_crops(image, labels, 2, 16)) == 2
    only = CR.object_crops(image, labels, 2, 16, complete=True)
    assert len(only) == 1 and only[0].circle.cy == pytest.approx(16)
