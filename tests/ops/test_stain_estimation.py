import numpy as np
import pytest

from histolib.ops.stain import jitter_stain_matrix, od_to_concentrations, od_to_rgb, rgb_to_od, stain_matrix
from histolib.ops.stain_estimation import (
    macenko_stain_matrix,
    macenko_stain_vectors,
    stain_vector_angle,
    tissue_od,
)


def _render(matrix, seed=0, size=96):
    """Independent exponential concentrations: many near-pure pixels of each stain, rounded to uint8."""
    c = np.random.default_rng(seed).exponential(0.5, (size, size, 2))
    return od_to_rgb(c, matrix[:2])


@pytest.mark.parametrize("stain", ["he", "pas", "he_ruifrok"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macenko_recovers_known_stain_vectors_within_a_few_degrees(stain, seed):
    m = jitter_stain_matrix(stain_matrix(stain), np.random.default_rng(seed), sigma=0.1)
    v = macenko_stain_vectors(_render(m, seed))
    assert v.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-9)
    for k in range(2):  # hematoxylin first, by the larger red component
        assert stain_vector_angle(v[k], m[k]) < 3.0


def test_concentrations_from_the_estimated_matrix_match_the_rendered_ones():
    m = stain_matrix("pas")
    c = np.random.default_rng(3).exponential(0.5, (64, 64, 2))
    est = macenko_stain_matrix(od_to_rgb(c, m[:2]))
    got = od_to_concentrations(rgb_to_od(od_to_rgb(c, m[:2])), est)
    tissue = (c.sum(-1) > 0.5) & (c.max(-1) < 3)
    assert np.median(np.abs(got[..., :2][tissue] - c[tissue])) < 0.05


def test_order_rule_is_hematoxylin_first_whatever_the_pixel_order():
    m = stain_matrix("he")
    img = _render(m)
    v1 = macenko_stain_vectors(img)
    v2 = macenko_stain_vectors(img[::-1, ::-1].copy())
    np.testing.assert_allclose(v1, v2, atol=1e-6)
    assert v1[0, 0] > v1[1, 0]


def test_blank_image_raises_naming_rgb():
    with pytest.raises(ValueError, match="rgb has 0 tissue pixels"):
        macenko_stain_vectors(np.full((32, 32, 3), 250, np.uint8))


def test_single_stain_image_raises():
    m = stain_matrix("he")
    c = np.zeros((48, 48, 2))
    c[..., 0] = np.random.default_rng(0).uniform(0.3, 1.5, (48, 48))
    with pytest.raises(ValueError, match="single colour direction"):
        macenko_stain_vectors(od_to_rgb(c, m[:2]), min_angle_deg=5.0)


def test_arguments_are_validated_by_name():
    img = _render(stain_matrix("he"))
    with pytest.raises(ValueError, match="rgb must have shape"):
        macenko_stain_vectors(img[..., :2])
    with pytest.raises(ValueError, match="alpha"):
        macenko_stain_vectors(img, alpha=60)
    with pytest.raises(ValueError, match="beta"):
        macenko_stain_vectors(img, beta=-1)
    with pytest.raises(ValueError, match="mask must have shape"):
        tissue_od(img, mask=np.ones((3, 3), bool))


def test_mask_restricts_the_pixels():
    img = np.full((20, 20, 3), 255, np.uint8)
    img[:10] = 100
    assert len(tissue_od(img)) == 200
    mask = np.zeros((20, 20), bool)
    mask[:5] = True
    assert len(tissue_od(img, mask=mask)) == 100


def test_stain_vector_angle_by_hand():
    assert stain_vector_angle([1, 0, 0], [0, 1, 0]) == pytest.approx(90.0)
    assert stain_vector_angle([1, 1, 0], [2, 2, 0]) == pytest.approx(0.0, abs=1e-3)
