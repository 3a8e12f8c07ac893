import numpy as np
import pytest

from histolib.ops import blobs as B


def _rot(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _ellipse(a=6.0, b=10.0, size=31):
    yy, xx = np.mgrid[:size, :size] - size // 2
    return (yy / a) ** 2 + (xx / b) ** 2 <= 1


def _odd_blob():
    m = _ellipse(9, 15, 41)
    m[8:13, 20:32] = True  # an asymmetric bump: no rotational symmetry
    return B._crop(m)


def test_contour_is_ordered_oriented_and_fills_back_to_the_mask():
    m = _odd_blob()
    c = B.ordered_contour(m)
    assert B.signed_area(c) > 0
    steps = np.linalg.norm(np.diff(np.vstack([c, c[:1]]), axis=0), axis=1)
    assert steps.max() <= 1.0 + 1e-9  # marching squares: consecutive pixel-edge midpoints
    filled = B.fill_contours(c[None], smooth=False)[0]
    np.testing.assert_array_equal(filled, m)


def test_resample_square_gives_equal_arc_spacing():
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    r = B.resample_contour(square, 40)
    steps = np.linalg.norm(np.diff(np.vstack([r, r[:1]]), axis=0), axis=1)
    np.testing.assert_allclose(steps, 1.0)
    np.testing.assert_allclose(r[0], [0, 0])


def test_kabsch_is_exact_on_paired_points():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(1, 12, 2))
    q = p @ _rot(73).T + np.array([2.0, -5.0])
    rot, t = B.kabsch_2d(p, q)
    np.testing.assert_allclose(rot[0], _rot(73), atol=1e-12)
    np.testing.assert_allclose(t[0], [2.0, -5.0], atol=1e-12)


@pytest.mark.parametrize("deg", [10.0, 35.0, 160.0])
def test_icp_recovers_known_rotation_and_translation_of_a_contour(deg):
    p = B.resample_contour(B.ordered_contour(_odd_blob()), 64)
    shift = np.array([3.5, -2.0])
    q = np.roll(p @ _rot(deg).T + shift, 17, axis=0)  # reordered: ICP must find the pairing itself
    res = B.icp(p, q)
    np.testing.assert_allclose(res.rotation[0], _rot(deg), atol=1e-9)
    np.testing.assert_allclose(res.translation[0], shift, atol=1e-9)
    assert res.rmse[0] < 1e-6


def test_plain_icp_from_centroids_converges_for_a_small_rotation():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    p = np.stack([6 * np.sin(t) + 0.8 * np.sin(3 * t), 11 * np.cos(t)], 1)
    q = p @ _rot(20).T + np.array([1.0, 4.0])
    res = B.icp(p, q, init="centroid", iterations=100)
    np.testing.assert_allclose(res.rotation[0], _rot(20), atol=1e-9)
    np.testing.assert_allclose(res.aligned[0], q, atol=1e-9)


def test_icp_is_batched_and_checks_shapes():
    p = B.resample_contour(B.ordered_contour(_odd_blob()), 32)
    q = np.stack([p @ _rot(d).T for d in (0, 90, 200)])
    res = B.icp(np.stack([p] * 3), q)
    assert res.rotation.shape == (3, 2, 2) and res.aligned.shape == (3, 32, 2)
    np.testing.assert_allclose(res.aligned, q, atol=1e-9)
    with pytest.raises(ValueError, match="source and target"):
        B.icp(np.zeros((2, 5, 2)), np.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="init"):
        B.icp(p, p, init="nope")


def test_pair_cyclic_undoes_a_shift():
    p = B.resample_contour(B.ordered_contour(_odd_blob()), 50)
    rolled = np.roll(p, 13, axis=0)
    np.testing.assert_allclose(B.pair_cyclic(rolled[None], p[None])[0], p)


def test_interpolation_at_alpha_0_and_1_returns_the_two_inputs():
    rng = np.random.default_rng(1)
    p1, p2 = rng.normal(size=(2, 3, 20, 2))
    np.testing.assert_array_equal(B.interpolate_contours(p1, p2, 1.0), p1)
    np.testing.assert_array_equal(B.interpolate_contours(p1, p2, 0.0), p2)
    mixed = B.interpolate_contours(p1, p2, np.array([1.0, 0.0, 0.5]))
    np.testing.assert_array_equal(mixed[0], p1[0])
    np.testing.assert_array_equal(mixed[1], p2[1])
    np.testing.assert_allclose(mixed[2], (p1[2] + p2[2]) / 2)
    with pytest.raises(ValueError, match="alpha"):
        B.interpolate_contours(p1, p2, 1.5)


def test_interpolating_a_blob_with_a_rotated_copy_of_itself_gives_the_blob():
    p = B.resample_contour(B.ordered_contour(_odd_blob()), 64)
    q = p @ _rot(50).T + 7.0
    reg = B.icp(p, q)
    paired = B.pair_cyclic(reg.aligned, q[None])
    for alpha in (0.0, 0.3, 1.0):
        blob = B.fill_contours(B.interpolate_contours(paired, q[None], alpha))[0]
        ref = B.fill_contours(q[None])[0]
        assert abs(int(blob.sum()) - int(ref.sum())) <= 2


def test_fill_removes_spurs_and_keeps_largest_component():
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    spur = np.array([[0, 0], [0, 10], [4.6, 10], [4.9, 20], [5.1, 20], [5.4, 10], [10, 10], [10, 0]])
    clean, spiky = B.fill_contours(np.stack([square, square]), smooth=True)[0], \
        B.fill_contours(spur[None], smooth=True)[0]
    corners = np.ones((10, 10), bool)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = False  # an opening with a cross rounds corners
    np.testing.assert_array_equal(clean, corners)
    assert spiky.shape == (10, 11)  # the 10 px long, 1 px wide spur is opened down to its root
    rough = B.fill_contours(spur[None], smooth=False)[0]
    assert rough.shape[1] > 10


def test_plausible_filters_area_and_fill_ratio():
    full = np.ones((10, 10), bool)
    small = np.ones((5, 5), bool)
    diag = np.eye(12, dtype=bool)  # 12 px in a 144 px box
    diag[:, 0] = True
    keep = B.plausible([full, small, diag], min_area=30, min_fill=0.5)
    np.testing.assert_array_equal(keep, [True, False, False])
    assert B.plausible([], min_area=1).shape == (0,)


def test_interpolate_blobs_is_deterministic_and_filtered():
    real = [B._crop(_ellipse(a, b)) for a, b in [(5, 8), (6, 7), (4, 9), (7, 7)]]
    out1, alpha, pairs = B.interpolate_blobs(real, 40, np.random.default_rng(3), min_area=50,
                                             return_alphas=True)
    out2 = B.interpolate_blobs(real, 40, np.random.default_rng(3), min_area=50)
    assert len(out1) == 40 and len(alpha) == 40 and np.all(pairs[:, 0] != pairs[:, 1])
    assert all(np.array_equal(a, b) for a, b in zip(out1, out2, strict=True))
    assert B.plausible(out1, min_area=50, min_fill=0.5).all()
    areas = B.blob_shape_stats(out1)["area"]
    real_areas = B.blob_shape_stats(real)["area"]
    assert real_areas.min() - 5 <= areas.min() and areas.max() <= real_areas.max() + 5
    with pytest.raises(ValueError, match="at least 2"):
        B.interpolate_blobs(real[:1], 5, np.random.default_rng(0))


def test_extract_blobs_skips_border_and_small_nuclei():
    inst = np.zeros((20, 20), np.int32)
    inst[0:4, 5:9] = 1  # touches the border
    inst[8:12, 8:13] = 2
    inst[15:17, 2:4] = 3  # 4 px
    blobs = B.extract_blobs(inst, min_area=5)
    assert len(blobs) == 1 and blobs[0].shape == (4, 5)
    assert len(B.extract_blobs(inst, min_area=1, exclude_border=False)) == 3
    assert B.extract_blobs(np.zeros((5, 5), np.int32)) == []


def test_shape_stats_of_a_rectangle():
    stats = B.blob_shape_stats([np.ones((4, 8), bool)])
    assert stats["area"][0] == 32
    np.testing.assert_allclose(stats["aspect_ratio"][0], np.sqrt(63 / 15))
    s = B.summarise(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert s == {"median": 3.0, "iqr": 2.0, "n": 5}
