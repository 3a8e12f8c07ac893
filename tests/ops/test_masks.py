import numpy as np
import pytest

from histolib.ops import masks as MK
from histolib.ops.crops import mask_circle


def _disc(n, cy, cx, r):
    yy, xx = np.mgrid[:n, :n]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def test_clean_mask_removes_regions_below_the_threshold_and_fills_holes():
    img = np.zeros((12, 12))
    img[1:5, 1:5] = 0.9      # 16 px region, with a hole
    img[2, 2] = 0.1
    img[9, 9] = 0.8          # 1 px speck
    img[8:10, 1:3] = 0.7     # 4 px region
    out = MK.clean_mask(img, threshold=0.5, min_area=5)
    expected = np.zeros((12, 12), np.uint8)
    expected[1:5, 1:5] = 1
    np.testing.assert_array_equal(out, expected)
    kept = MK.clean_mask(img, threshold=0.5, min_area=4, fill_holes=False)
    assert kept[2, 2] == 0 and kept[8, 1] == 1 and kept[9, 9] == 0
    assert MK.clean_mask(img, threshold=0.95).sum() == 0


def test_to_grey_uses_luma_weights():
    rgb = np.zeros((2, 2, 3))
    rgb[..., 0] = 1.0
    np.testing.assert_allclose(MK.to_grey(rgb), 0.299)
    np.testing.assert_allclose(MK.to_grey(np.ones((1, 3, 3))), 1.0)
    with pytest.raises(ValueError):
        MK.to_grey(np.zeros((2, 2, 2, 2)))


def test_even_size_targets_fill_every_bin_equally():
    rng = np.random.default_rng(1)
    t = MK.even_size_targets(23, 10.0, 20.0, 5, rng)
    counts = np.histogram(t, bins=np.linspace(10, 20, 6))[0]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 23
    assert t.min() >= 10 and t.max() <= 20
    with pytest.raises(ValueError):
        MK.even_size_targets(3, 0.0, 1.0, 2, rng)


def test_scale_mask_about_its_circle_and_recentre():
    m = _disc(32, 10, 12, 4)
    s = MK.scale_mask(m, 2.0)
    assert MK.equivalent_diameter(s) == pytest.approx(2 * MK.equivalent_diameter(m), rel=0.08)
    c = mask_circle(s)
    assert (c.cy, c.cx) == pytest.approx((16, 16), abs=0.6)
    assert MK.scale_mask(np.zeros((4, 4)), 2.0).sum() == 0


def test_scale_to_even_sizes_spreads_sizes_over_the_bins():
    rng = np.random.default_rng(0)
    masks = np.stack([_disc(48, 24, 24, r) for r in rng.uniform(5, 7, 20)])
    out, sizes = MK.scale_to_even_sizes(masks, 8.0, 24.0, 4, rng)
    counts = np.histogram(sizes, bins=np.linspace(8, 24, 5))[0]
    assert counts.min() >= 3  # uniform over the bins up to rasterisation (5 per bin when exact)
    assert out.shape == masks.shape and set(np.unique(out)) <= {0, 1}
