import numpy as np
import pytest

from histolib.ops.stain import (
    HE_MATRIX,
    PAS_MATRIX,
    jitter_stain_matrix,
    od_to_concentrations,
    od_to_rgb,
    rgb_to_concentrations,
    rgb_to_od,
    stain_matrix,
)


@pytest.mark.parametrize("m", [HE_MATRIX, PAS_MATRIX])
def test_matrices_have_unit_rows_and_are_invertible(m):
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-12)
    assert abs(np.linalg.det(m)) > 0.1
    assert (m[:2] >= 0).all()  # real stains absorb, never emit


def test_zero_concentration_is_i0_white():
    c = np.zeros((3, 4, 2))
    np.testing.assert_array_equal(od_to_rgb(c, PAS_MATRIX[:2]), 255)
    np.testing.assert_array_equal(od_to_rgb(c, PAS_MATRIX[:2], i0=240), 240)


def test_od_to_rgb_hand_computed():
    # one unit of a pure-red-absorbing stain: I_R = 255 e^-1 = 93.8 -> 94, G and B untouched
    m = np.array([[1.0, 0.0, 0.0]])
    out = od_to_rgb(np.ones((1, 1, 1)), m)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 3)
    np.testing.assert_array_equal(out[0, 0], [94, 255, 255])
    # negative concentrations are clipped to zero
    np.testing.assert_array_equal(od_to_rgb(-np.ones((1, 1, 1)), m)[0, 0], [255, 255, 255])


def test_rgb_to_od_hand_computed_and_clipped():
    od = rgb_to_od(np.array([[[255, 94, 0]]], np.uint8))
    np.testing.assert_allclose(od[0, 0], [0.0, np.log(255 / 94), np.log(255.0)], rtol=1e-5)
    assert od.dtype == np.float32 and np.isfinite(od).all()


@pytest.mark.parametrize("m", [HE_MATRIX, PAS_MATRIX])
def test_round_trip_concentrations(m):
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 1.5, (8, 8, 3)).astype(np.float32)
    c[..., 2] = 0.0
    back = rgb_to_concentrations(od_to_rgb(c, m), m)
    # quantisation to 8 bits: a 1/255 relative intensity step is ~0.004-0.05 OD at these densities
    np.testing.assert_allclose(back, c, atol=0.06)
    od = c @ m
    np.testing.assert_allclose(od_to_concentrations(od, m), c, atol=1e-4)


def test_rgb_round_trip_is_exact_to_one_level():
    rng = np.random.default_rng(1)
    rgb = rng.integers(1, 256, (16, 16, 3)).astype(np.uint8)
    od = rgb_to_od(rgb)
    back = od_to_rgb(od, np.eye(3))
    assert np.abs(back.astype(int) - rgb).max() <= 1


def test_jitter_keeps_unit_rows_is_deterministic_and_varies():
    a = jitter_stain_matrix(PAS_MATRIX, np.random.default_rng(3), sigma=0.05)
    b = jitter_stain_matrix(PAS_MATRIX, np.random.default_rng(3), sigma=0.05)
    c = jitter_stain_matrix(PAS_MATRIX, np.random.default_rng(4), sigma=0.05)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-12)
    assert (a[:2] >= 0).all()
    np.testing.assert_allclose(a[2] @ a[0], 0, atol=1e-12)  # residual recomputed
    angle = np.arccos(np.clip(a[:2] * PAS_MATRIX[:2], -1, 1).sum(1))
    assert (angle < 0.3).all()
    np.testing.assert_allclose(jitter_stain_matrix(PAS_MATRIX, np.random.default_rng(0), sigma=0), PAS_MATRIX,
                               atol=1e-12)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="stain"):
        stain_matrix("giemsa")
    with pytest.raises(ValueError, match="sigma"):
        jitter_stain_matrix(PAS_MATRIX, np.random.default_rng(0), sigma=-1)
    with pytest.raises(ValueError, match="rng"):
        jitter_stain_matrix(PAS_MATRIX, 0)
    with pytest.raises(ValueError, match="concentrations"):
        od_to_rgb(np.zeros((2, 2, 3)), PAS_MATRIX[:2])
    with pytest.raises(ValueError, match="i0"):
        rgb_to_od(np.zeros((2, 2, 3), np.uint8), i0=0)
    with pytest.raises(ValueError, match="rgb"):
        rgb_to_od(np.zeros((2, 2), np.uint8))


def test_empty_input_gives_empty_output():
    assert od_to_rgb(np.zeros((0, 5, 2)), HE_MATRIX[:2]).shape == (0, 5, 3)
    assert rgb_to_od(np.zeros((0, 3), np.uint8)).shape == (0, 3)
