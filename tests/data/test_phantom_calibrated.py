"""The phantom's calibrated mode (``data.calibration``): default unchanged, per-slide sampling, exact labels.

Tiny seeded renders only. The calibration read is the committed ``calibration/glomeruli_crops.json`` (summary
numbers of a real set, no pixels) or a hand-made record; no test needs the real images.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from histolib.calibration import phantom_calibration
from histolib.config import load_params
from histolib.data import phantom
from histolib.data.builder import phantom_calibration_of
from histolib.data.phantom import PhantomCalibration, glomerulus_patch, render_tile, sample_quantiles
from histolib.errors import DataError, ParamError
from histolib.ops.stain import PAS_MATRIX, rgb_to_od
from histolib.ops.structure import texture_mask

ROOT = Path(__file__).resolve().parents[2]
PAS_JSON = ROOT / "calibration" / "glomeruli_crops.json"


def _record(kind="pas", **over):
    q = {"hematoxylin_angle_deg": (0.4, 2.0, 7.0), "second_angle_deg": (0.4, 2.5, 8.7),
         "hematoxylin_conc_p50": (0.13, 0.23, 0.45), "second_conc_p50": (0.29, 0.48, 1.3),
         "sharpness": (0.044, 0.41, 0.97)}
    rec = {"kind": kind, "source": "hand-made",
           "features": {k: {"p5": a, "median": m, "p95": b, "n": 10} for k, (a, m, b) in q.items()},
           "derived": {"stain_vectors": [list(PAS_MATRIX[0]), list(PAS_MATRIX[1])]}}
    rec.update(over)
    return rec


@pytest.fixture(scope="module")
def cal():
    return phantom_calibration(_record())


def _digest(t) -> str:
    h = hashlib.sha256()
    for a in (t.image, t.compartments, t.glomeruli, t.nuclei):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(sorted(t.glomerulus_class.items())).encode())
    return h.hexdigest()[:16]


# Computed on main at ae7e626 (before the calibrated mode existed), numpy 2.4.
@pytest.mark.parametrize("make,digest", [
    (lambda: glomerulus_patch(7, size=64), "20c7b9215d009528"),
    (lambda: glomerulus_patch(3, size=32, sclerosed=True), "6a04f7988e92ad88"),
    (lambda: render_tile(5, size=(96, 96), glomerulus_diameter=36, sclerosed_fraction=0.5), "120a12915606db83"),
    (lambda: glomerulus_patch(11, size=64, stain="he"), "e21c60537a6e6c59"),
])
def test_default_phantom_is_unchanged_bit_for_bit(make, digest):
    t = make()
    assert _digest(t) == digest
    assert t.slide == {}


def test_sample_quantiles_reproduces_the_three_percentiles():
    rng = np.random.default_rng(0)
    q = (1.0, 2.0, 6.0)
    x = np.array([sample_quantiles(rng, q, 1.0) for _ in range(20000)])
    np.testing.assert_allclose(np.percentile(x, [5, 50, 95]), q, atol=0.1)
    wide = np.array([sample_quantiles(rng, q, 1.25) for _ in range(10000)])
    assert np.percentile(wide, 95) > 6.3 and np.percentile(wide, 5) < 0.85  # randomised beyond the real range
    assert wide.max() <= 2.0 + 3 / 1.645 * 4.0 + 1e-9  # z clipped at 3


def test_reader_takes_quantiles_and_vectors_from_the_committed_calibration():
    c = phantom_calibration(PAS_JSON)
    assert c.stain == "pas" and c.structure and c.spread == 1.25
    assert set(c.quantiles) == {"hematoxylin_angle_deg", "second_angle_deg", "hematoxylin_conc_p50",
                                "second_conc_p50", "sharpness"}
    for p5, m, p95 in c.quantiles.values():
        assert p5 <= m <= p95
    assert np.asarray(c.stain_vectors).shape == (2, 3)


def test_reader_rejects_fluorescence_and_missing_vectors(tmp_path):
    with pytest.raises(DataError, match="bright-field"):
        phantom_calibration(_record(kind="fluorescence"))
    with pytest.raises(DataError, match="stain_vectors"):
        phantom_calibration(_record(derived={}))
    with pytest.raises(DataError, match="unreadable"):
        phantom_calibration(tmp_path / "absent.json")


def test_stain_mismatch_and_wrong_type_raise(cal):
    with pytest.raises(ParamError, match="stain"):
        glomerulus_patch(0, size=32, stain="he", calibration=cal)
    with pytest.raises(ParamError, match="calibration"):
        render_tile(0, size=32, calibration={"kind": "pas"})


def test_params_knob_and_builder_reader(tmp_path):
    P = load_params("smoke")
    assert P.data.calibration == "none" and phantom_calibration_of(P) is None
    P = load_params("smoke", {"data.calibration": "calibration/glomeruli_crops.json"})
    assert isinstance(phantom_calibration_of(P, ROOT), PhantomCalibration)
    with pytest.raises(DataError, match="not found"):
        phantom_calibration_of(load_params("smoke", {"data.calibration": "calibration/nope.json"}), ROOT)
    with pytest.raises(DataError, match="data.stain"):
        phantom_calibration_of(load_params("smoke", {"data.calibration": "calibration/monuseg.json"}), ROOT)


@pytest.mark.parametrize("make", [
    lambda c: glomerulus_patch(2, size=64, calibration=c),
    lambda c: glomerulus_patch(4, size=32, sclerosed=True, calibration=c),
    lambda c: render_tile(1, size=(96, 112), glomerulus_diameter=40, nucleus_diameter=3, n_glomeruli=2,
                          sclerosed_fraction=0.5, calibration=c),
])
def test_calibrated_tiles_have_consistent_ground_truth_and_are_seeded(cal, make):
    from tests.data.test_phantom import _check_tile

    a, b = make(cal), make(cal)
    _check_tile(a, a.compartments.shape)
    assert _digest(a) == _digest(b)
    assert a.slide["gains"][0] > 0 and a.slide["gains"][1] > 0 and a.slide["blur_px"] > 0
    m = np.asarray(a.slide["stain_matrix"])
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-9)
    assert (m >= 0).all()


def test_slide_parameters_follow_the_real_spread(cal):
    rng = np.random.default_rng(1)
    draws = [phantom._slide_parameters(rng, cal, "pas") for _ in range(400)]
    g = np.array([d["gains"] for d in draws]) / np.array(phantom._CAL_BASE_GAIN["pas"])
    # gain = draw / real median: median ~1, 95th percentile ~p95 / median widened by the domain randomisation
    np.testing.assert_allclose(np.median(g, 0), 1.0, atol=0.08)
    assert np.percentile(g[:, 1], 95) > 1.3 / 0.48
    assert np.corrcoef(np.log(g.T))[0, 1] > 0.2  # section thickness scales both stains
    ang = [np.degrees(np.arccos(np.clip(d["stain_matrix"][1] @ PAS_MATRIX[1], -1, 1))) for d in draws]
    assert 1.0 < np.median(ang) < 8.0 and max(ang) < 30.0


def _scene(cal, shape=(64, 64), D=60.0, nd=4.0, seed=0):
    return phantom._Scene(np.random.default_rng(seed), shape, "pas", D, nd, 1, cal)


def test_capillaries_stay_in_the_interstitium_and_label_nothing(cal):
    sc = _scene(cal)
    t = np.full(sc.shape, -50.0, np.float32)  # all interstitium
    t[:, :16] = 5.0  # a tubule on the left
    p0 = sc.p.copy()
    caps = phantom._draw_capillaries(sc, t, cell=12.0)
    assert len(caps) > 3
    assert (sc.comp == 1).all() and (sc.glom == 0).all()  # compartments untouched
    yy, xx = np.indices(sc.shape)
    near = np.zeros(sc.shape, bool)
    for y, x, ra, rb, _a, full in caps:
        assert t[int(y), int(x)] < 0  # centred in the interstitium
        near |= np.hypot(yy - y, xx - x) <= ra + 2.0
        # the lumen centre is drawn: white (no red cells) or red-cell material
        want = phantom._MATERIALS_REAL["pas"]["caplumen"][1] if not full else None
        if want is not None:
            assert sc.p[int(round(y)), int(round(x))] == pytest.approx(want, rel=0.05)
    changed = sc.p != p0
    assert changed.any() and not (changed & ~near).any()  # paint only where a capillary is
    # red cells and walls are not nuclei: only endothelial nuclei were added, on the walls
    spec = sc.nuclei.array()
    for y, x in spec[:, :2]:
        d = np.hypot(caps[:, 0] - y, caps[:, 1] - x)
        assert (d <= caps[:, 2] + 0.5).any()


def test_tubule_nuclei_labels_are_exactly_the_drawn_nuclei(cal):
    """On a blank canvas a nucleus adds ``0.15 * coverage`` of PAS (``p_frac`` 0.5 of the nucleus' 0.3), so the
    coverage of every pixel is known: the label map must be exactly the pixels covered at least half."""
    sc = _scene(cal, shape=(64, 64), D=80.0, nd=4.0, seed=3)
    phantom._draw_tubulointerstitium(sc)
    sc.h[:] = 0.0
    sc.p[:] = 0.0
    labels = phantom._render_nuclei(sc, sc.nuclei.array())
    assert labels.max() > 40  # crowded
    cov = sc.p / np.float32(0.15)
    np.testing.assert_array_equal(labels > 0, cov >= 0.5 - 1e-5)
    assert (sc.h[labels > 0] > 0).all()


def test_tubules_are_crowded_and_irregular(cal):
    from scipy import ndimage
    from skimage.measure import regionprops

    def tubule_stats(c):
        frac, sol = [], []
        for seed in range(3):
            sc = _scene(c, shape=(112, 112), D=110.0, nd=3.0, seed=seed)
            phantom._draw_tubulointerstitium(sc)
            tub = sc.t_tubule > 0
            lab, _ = ndimage.label(tub)
            frac.append(tub.mean())
            sol += [r.solidity for r in regionprops(lab) if r.area > 40 and min(r.bbox[:2]) > 0
                    and max(r.bbox[2:]) < 112]  # whole tubules only
        return np.mean(frac), np.median(sol)

    frac_default, sol_default = tubule_stats(None)
    frac_real, sol_real = tubule_stats(cal)
    assert frac_real > frac_default + 0.1  # crowded: tubules fill more of the cortex
    assert sol_real < sol_default  # non-convex outlines


def test_calibrated_lumina_and_urinary_space_are_white_for_the_texture_mask(cal):
    """The cause of the default's saturated glomeruli: its capillary lumina (and, with the stain gain, the urinary
    space) pass the texture mask's S > 0.1. Calibrated lumina stay below it up to the real 95th-percentile
    stain amount (gain p95 / median ~2.7)."""
    from histolib.ops.stain import od_to_rgb

    def sat(material, table, gain):
        rgb = od_to_rgb(np.array([[table[material]]]) * gain, PAS_MATRIX[:2])
        return texture_mask(rgb)[0, 0]

    assert sat("caplumen", phantom._MATERIALS["pas"], 1.0)
    assert sat("urinary", phantom._MATERIALS["pas"], 2.0)
    real = {**phantom._MATERIALS["pas"], **phantom._MATERIALS_REAL["pas"]}
    gain = cal.quantiles["second_conc_p50"][2] / cal.quantiles["second_conc_p50"][1]
    for m in ("caplumen", "urinary", "lumen"):
        assert not sat(m, real, gain), m
    # and in a rendered calibrated glomerulus the urinary space shows as white pixels inside the label
    t = glomerulus_patch(2, size=112, fill=(0.9, 0.9), sclerosed=False, calibration=cal)
    g = t.glomeruli == 1
    assert (~texture_mask(t.image) & g).mean() > 0.05


def test_calibrate_phantom_measures_the_calibrated_mode_from_a_calibration_json(tmp_path):
    import json

    from histolib.calibration import calibrate, read_calibration

    src = tmp_path / "set.json"
    src.write_text(json.dumps(_record(derived={"stain_vectors": [list(PAS_MATRIX[0]), list(PAS_MATRIX[1])],
                                               "glomerulus_fill": 0.9, "image_side_px": 64.0})))
    paths = calibrate(src, phantom_out=tmp_path / "ph.json", n_phantom=2, progress=False,
                      phantom_calibration_json=src)
    assert set(paths) == {"phantom"}  # the real set is not re-measured
    rec = read_calibration(paths["phantom"])
    assert rec["phantom_mode"]["spread"] == 1.25 and "calibrated on hand-made" in rec["source"]
    assert rec["features"]["saturated_fraction_inside"]["n"] == 2
