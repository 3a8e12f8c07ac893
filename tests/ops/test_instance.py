import numpy as np
import pytest

from histolib.ops import instance as I


def _disc(inst, cy, cx, r, k):
    yy, xx = np.mgrid[:inst.shape[0], :inst.shape[1]]
    inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k


def test_hv_maps_of_a_bar_by_hand():
    inst = np.zeros((3, 7), np.int32)
    inst[1, 1:6] = 4  # x = 1..5, centroid x = 3
    inst[0, 0] = 9  # a single pixel: all zeros
    hv = I.hv_maps(inst)
    assert hv.shape == (2, 3, 7) and hv.dtype == np.float32
    np.testing.assert_allclose(hv[0, 1, 1:6], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(hv[1], 0)  # one row: no vertical extent
    np.testing.assert_allclose(hv[:, 0, 0], 0)
    np.testing.assert_allclose(hv[:, 2], 0)  # background


def test_hv_maps_asymmetric_sides_are_normalised_separately():
    inst = np.zeros((5, 1), np.int32)
    inst[0:4, 0] = 1  # y = 0..3, centroid 1.5: offsets -1.5, -0.5, 0.5, 1.5
    inst[4, 0] = 0
    inst2 = np.zeros((4, 1), np.int32)
    inst2[[0, 1, 3], 0] = 2  # y = 0, 1, 3: centroid 4/3; offsets -4/3, -1/3, 5/3
    np.testing.assert_allclose(I.hv_maps(inst)[1, :4, 0], [-1, -1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(I.hv_maps(inst2)[1, [0, 1, 3], 0], [-1, -0.25, 1])
    assert I.hv_maps(np.zeros((4, 4), np.int32)).sum() == 0
    with pytest.raises(ValueError, match="instances"):
        I.hv_maps(np.zeros((4, 4), np.float32))


def test_sobel_kernels_match_opencv():
    smooth3, deriv3 = I._sobel_kernels(3)
    np.testing.assert_array_equal(smooth3, [1, 2, 1])
    np.testing.assert_array_equal(deriv3, [-1, 0, 1])
    smooth5, deriv5 = I._sobel_kernels(5)
    np.testing.assert_array_equal(smooth5, [1, 4, 6, 4, 1])
    np.testing.assert_array_equal(deriv5, [-1, -2, 0, 2, 1])
    ramp = np.tile(np.arange(9, dtype=float), (9, 1))
    # interior of d/dx of a unit ramp with ksize 3: 2 (deriv) * 4 (smoothing sum)
    np.testing.assert_allclose(I.sobel(ramp, axis=1, ksize=3)[2:-2, 2:-2], 8.0)
    np.testing.assert_allclose(I.sobel(ramp, axis=0, ksize=3), 0.0)


def test_postprocess_separates_touching_nuclei_from_perfect_outputs():
    inst = np.zeros((64, 64), np.int32)
    _disc(inst, 20, 20, 8, 1)
    _disc(inst, 20, 34, 8, 2)  # overlaps the first: they touch along a chord
    _disc(inst, 46, 40, 6, 3)
    inst[60:62, 2:4] = 4  # 4 px: below min_size, dropped
    out = I.hovernet_postprocess((inst > 0).astype(float), I.hv_maps(inst))
    assert out.max() == 3
    for k in (1, 2, 3):
        ids, counts = np.unique(out[inst == k], return_counts=True)
        assert counts.max() / counts.sum() > 0.95  # each nucleus is (almost) one predicted id


def test_postprocess_empty_and_bad_input():
    assert not I.hovernet_postprocess(np.zeros((16, 16)), np.zeros((2, 16, 16))).any()
    with pytest.raises(ValueError, match="hv"):
        I.hovernet_postprocess(np.zeros((16, 16)), np.zeros((16, 16)))


def test_remove_small_objects_and_relabel():
    lab = np.array([[1, 1, 0, 2], [1, 0, 0, 0], [5, 5, 5, 0]])
    np.testing.assert_array_equal(I.remove_small_objects(lab, 3), [[1, 1, 0, 0], [1, 0, 0, 0], [5, 5, 5, 0]])
    np.testing.assert_array_equal(I.relabel_sequential(lab), [[1, 1, 0, 2], [1, 0, 0, 0], [3, 3, 3, 0]])
    assert I.relabel_sequential(np.zeros((2, 2), np.int64)).dtype == np.int32


def test_postprocess_sizes_scale_hovernets_defaults():
    assert I.postprocess_sizes(27.0) == {"ksize": 21, "marker_open": 5, "min_size": 10}
    assert I.postprocess_sizes(9.0) == {"ksize": 7, "marker_open": 1, "min_size": 3}
    assert I.postprocess_sizes(float("nan")) == {"ksize": 21, "marker_open": 5, "min_size": 10}
    inst = np.zeros((20, 20), np.int32)
    inst[0:2, 0:2] = 1  # area 4
    inst[5:9, 5:9] = 2  # area 16
    inst[12:15, 12:15] = 3  # area 9
    assert I.median_nucleus_diameter([inst]) == pytest.approx(2 * np.sqrt(9 / np.pi))
    assert np.isnan(I.median_nucleus_diameter([np.zeros((3, 3), np.int32)]))


def test_scaled_postprocess_recovers_small_touching_nuclei():
    inst = np.zeros((48, 48), np.int32)
    k = 1
    for cy in range(6, 44, 8):  # a packed grid of 7 px discs, neighbours touching
        for cx in range(6, 44, 8):
            _disc(inst, cy, cx, 4, k)
            k += 1
    hv = I.hv_maps(inst)
    default = I.hovernet_postprocess((inst > 0).astype(float), hv)
    scaled = I.hovernet_postprocess((inst > 0).astype(float), hv, **I.postprocess_sizes(8.0))
    n_true = inst.max()
    assert scaled.max() >= n_true - 1 > default.max()
