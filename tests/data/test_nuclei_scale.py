import numpy as np
import pytest

from histolib.data.nuclei_scale import (background_level, equivalent_diameters, nucleus_scale, rescale_pair,
                                        scaled_tiles, tile_pair)
from histolib.errors import DataError


def _discs(shape, centres, radius, start=1):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres):
        m[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = start + k
    return m


def test_equivalent_diameters_and_scale_by_hand():
    m = np.zeros((10, 10), np.int32)
    m[:2, :2] = 3          # area 4
    m[5:9, 5:9] = 700      # area 16 (a 16-bit id)
    d = equivalent_diameters([m, np.zeros((4, 7), np.int32)])
    np.testing.assert_allclose(sorted(d), [2 * np.sqrt(4 / np.pi), 2 * np.sqrt(16 / np.pi)])
    s = nucleus_scale([m, m, _discs((9, 9), [(4, 4)], 1)], target=9.0, measured_on="training")
    assert s.median_diameter == pytest.approx(2 * np.sqrt(5 / np.pi))  # areas 4, 16, 4, 16 and 5 (the disc)
    assert s.factor == pytest.approx(9.0 / s.median_diameter) and s.n_nuclei == 5 and s.n_images == 3
    assert "training" in s.text()
    with pytest.raises(DataError, match="no nucleus"):
        nucleus_scale([np.zeros((4, 4), np.int32)], 9.0)


def test_rescale_pair_halves_sides_and_keeps_instances():
    mask = _discs((40, 60), [(10, 10), (25, 40)], 6, start=300)
    img = np.zeros((40, 60, 3), np.uint8)
    img[mask > 0] = 200
    i2, m2 = rescale_pair(img, mask, 0.5)
    assert i2.shape == (20, 30, 3) and m2.shape == (20, 30) and m2.dtype == np.int32
    assert sorted(np.unique(m2).tolist()) == [0, 1, 2]  # ids renumbered 1..n
    assert np.median(equivalent_diameters([m2])) == pytest.approx(np.median(equivalent_diameters([mask])) / 2, rel=0.15)
    assert i2[m2 > 0].mean() > 150 and i2[m2 == 0].mean() < 50
    with pytest.raises(DataError, match="positive"):
        rescale_pair(img, mask, 0.0)


def test_tiles_of_non_square_and_small_images():
    mask = _discs((20, 50), [(5, 5), (10, 30)], 3)
    img = np.full((20, 50, 3), 10, np.uint8)
    img[mask > 0] = 250
    np.testing.assert_array_equal(background_level(img, mask), [10, 10, 10])
    t = tile_pair(img, mask, 24)  # height 20 < 24: padded to 24; width 50: two tiles, 2 px dropped
    assert [(y, x) for y, x, _, _ in t] == [(0, 0), (0, 24)]
    _, _, ti, tm = t[0]
    assert ti.shape == (24, 24, 3) and (ti[20:] == 10).all() and (tm[20:] == 0).all()
    assert tm.max() == 1 and t[1][3].max() == 1
    out = scaled_tiles([img, img[:10]], [mask, mask[:10]], ["a.png", "b.png"], 1.0, 24)
    assert out["padded"] == ["a.png", "b.png"] and out["source_image"] == ["a.png"] * 2 + ["b.png"] * 2
    assert out["names"][1] == "a_y0000_x0024.png"
