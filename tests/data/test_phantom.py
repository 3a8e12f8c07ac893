import numpy as np
import pytest

from histolib.data.phantom import COMPARTMENTS, PhantomTile, glomerulus_patch, nuclei_field, render_tile
from histolib.errors import ParamError


def _arrays(t: PhantomTile):
    return (t.image, t.compartments, t.glomeruli, t.nuclei)


def _check_tile(t: PhantomTile, shape):
    assert t.image.shape == (*shape, 3) and t.image.dtype == np.uint8
    assert t.compartments.shape == shape and t.compartments.dtype == np.uint8
    assert t.glomeruli.shape == shape and t.glomeruli.dtype == np.uint16
    assert t.nuclei.shape == shape and t.nuclei.dtype == np.uint16
    assert t.compartments.max() < len(COMPARTMENTS)
    # glomerulus instances and compartment 2 coincide exactly
    np.testing.assert_array_equal(t.glomeruli > 0, t.compartments == 2)
    # instance ids consecutive from 1, none empty, one class per id
    for labels in (t.glomeruli, t.nuclei):
        ids = np.unique(labels[labels > 0])
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    assert sorted(t.glomerulus_class) == list(range(1, int(t.glomeruli.max()) + 1))
    assert set(t.glomerulus_class.values()) <= {"normal", "sclerosed"}


@pytest.mark.parametrize("fn,kwargs", [
    (render_tile, {"size": (96, 128), "glomerulus_diameter": 48, "nucleus_diameter": 4}),
    (glomerulus_patch, {"size": 64}),
    (glomerulus_patch, {"size": 128, "stain": "he", "sclerosed": None}),
    (nuclei_field, {"size": 64, "nucleus_diameter": 8}),
    (nuclei_field, {"size": 48, "style": "fluorescence", "nucleus_diameter": 6}),
])
def test_deterministic_per_seed_and_different_across_seeds(fn, kwargs):
    a, b, c = fn(3, **kwargs), fn(3, **kwargs), fn(4, **kwargs)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert x.tobytes() == y.tobytes()
    assert a.glomerulus_class == b.glomerulus_class
    assert a.image.tobytes() != c.image.tobytes()
    assert a.nuclei.tobytes() != c.nuclei.tobytes()


def test_does_not_touch_global_random_state():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    glomerulus_patch(1, size=48)
    assert np.random.random() == before


def test_render_tile_ground_truth_is_consistent():
    t = render_tile(0, size=(160, 192), glomerulus_diameter=70, nucleus_diameter=5, n_glomeruli=2,
                    sclerosed_fraction=0.5)
    _check_tile(t, (160, 192))
    assert t.stain == "pas"
    assert 1 <= len(t.glomerulus_class) <= 2
    assert (t.compartments == 1).mean() > 0.3  # mostly tubulointerstitium
    assert t.nuclei.max() > 50


def test_render_tile_glomerulus_count_and_classes():
    none = render_tile(5, size=(96, 96), glomerulus_diameter=40, n_glomeruli=0)
    assert none.glomeruli.max() == 0 and none.glomerulus_class == {}
    all_scl = render_tile(5, size=(128, 128), glomerulus_diameter=40, n_glomeruli=2, sclerosed_fraction=1.0)
    assert set(all_scl.glomerulus_class.values()) == {"sclerosed"}
    assert len(all_scl.glomerulus_class) == 2


def test_render_tile_he_and_no_jitter():
    a = render_tile(2, size=(64, 64), stain="he", glomerulus_diameter=30, nucleus_diameter=3, stain_jitter=0)
    _check_tile(a, (64, 64))
    assert a.stain == "he"


@pytest.mark.parametrize("size", [32, 64, 160])
@pytest.mark.parametrize("sclerosed", [False, True])
def test_glomerulus_patch_centre_and_fill(size, sclerosed):
    fill = (0.5, 0.7)
    for seed in range(3):
        t = glomerulus_patch(seed, size=size, sclerosed=sclerosed, fill=fill)
        _check_tile(t, (size, size))
        assert t.glomeruli[size // 2, size // 2] == 1
        assert t.glomerulus_class[1] == ("sclerosed" if sclerosed else "normal")
        eq_diam = np.sqrt(4 * (t.glomeruli == 1).sum() / np.pi) / size
        tol = 1.5 / size + 0.02  # rasterisation of the outline
        assert fill[0] - tol <= eq_diam <= fill[1] + tol


def test_small_patch_shows_capsule_urinary_space_and_tuft():
    # a normal glomerulus at 48 px still has pale urinary space and darker tuft/capsule inside it
    t = glomerulus_patch(0, size=48, sclerosed=False, fill=(0.7, 0.7))
    inside = t.image[t.glomeruli == 1].astype(float).mean(1)
    assert inside.max() > 200 and inside.min() < 150


def _glom_stats(t: PhantomTile):
    g = t.glomeruli == 1
    n_nuc = len(np.unique(t.nuclei[g & (t.nuclei > 0)]))
    bright = (t.image[g].astype(float).min(1) > 200).mean()
    return n_nuc / g.sum(), bright


def test_sclerosed_glomeruli_are_nucleus_and_lumen_poor():
    normal = np.array([_glom_stats(glomerulus_patch(s, size=128, sclerosed=False)) for s in range(4)])
    scl = np.array([_glom_stats(glomerulus_patch(s, size=128, sclerosed=True)) for s in range(4)])
    assert scl[:, 0].mean() < 0.5 * normal[:, 0].mean()
    assert scl[:, 1].mean() < 0.5 * normal[:, 1].mean()
    # sclerosed tufts are more saturated magenta (PAS-positive): green absorbed more than red/blue
    img_n = glomerulus_patch(0, size=128, sclerosed=False, stain_jitter=0)
    img_s = glomerulus_patch(0, size=128, sclerosed=True, stain_jitter=0)
    gn = img_n.image[img_n.glomeruli == 1].astype(float)
    gs = img_s.image[img_s.glomeruli == 1].astype(float)
    assert (gs[:, [0, 2]].mean(1) - gs[:, 1]).mean() > (gn[:, [0, 2]].mean(1) - gn[:, 1]).mean()


def test_pas_patch_colours_in_realistic_range():
    t = glomerulus_patch(7, size=128, stain_jitter=0)
    img = t.image.astype(float)
    tissue = img.mean(-1) < 215
    r, g, b = (img[..., i][tissue].mean() for i in range(3))
    assert g < r - 20 and g < b - 20  # magenta-pink tissue
    assert 120 < r < 210 and 70 < g < 160


def test_nuclei_are_non_empty_and_darker_in_brightfield():
    t = nuclei_field(1, size=96, density=0.3, nucleus_diameter=10)
    _check_tile(t, (96, 96))
    assert t.glomeruli.max() == 0 and t.glomerulus_class == {}
    n = t.nuclei.max()
    assert n > 20
    assert (np.bincount(t.nuclei.ravel())[1:] > 0).all()
    grey = t.image.astype(float).mean(-1)
    assert grey[t.nuclei > 0].mean() < grey[t.nuclei == 0].mean() - 30


def test_nuclei_field_fluorescence_dark_background_bright_nuclei():
    t = nuclei_field(2, size=96, style="fluorescence", density=0.2, nucleus_diameter=10)
    assert t.stain == "fluorescence"
    img = t.image.astype(float)
    assert np.median(img[t.nuclei == 0]) < 30
    assert img[t.nuclei > 0].mean() > np.median(img[t.nuclei == 0]) + 15
    assert (t.image[..., 0] == t.image[..., 1]).all() and (t.image[..., 0] == t.image[..., 2]).all()  # grey as RGB


def test_nuclei_field_density_controls_count():
    lo = nuclei_field(0, size=96, density=0.08, style="fluorescence", nucleus_diameter=8).nuclei.max()
    hi = nuclei_field(0, size=96, density=0.4, style="fluorescence", nucleus_diameter=8).nuclei.max()
    assert hi > 2 * lo
    # H&E: density sets the scattered nuclei; the cell sheets add theirs whatever it is
    lo = nuclei_field(0, size=96, density=0.08, nucleus_diameter=8).nuclei.max()
    hi = nuclei_field(0, size=96, density=0.4, nucleus_diameter=8).nuclei.max()
    assert hi > lo


def test_nuclei_shapes_vary():
    t = nuclei_field(3, size=128, density=0.25, nucleus_diameter=12)
    areas = np.bincount(t.nuclei.ravel())[1:]
    assert areas.std() / areas.mean() > 0.25


@pytest.mark.parametrize("call,name", [
    (lambda: render_tile(-1), "seed"),
    (lambda: render_tile(0, size=(8, 8)), "size"),
    (lambda: render_tile(0, stain="giemsa"), "stain"),
    (lambda: render_tile(0, glomerulus_diameter=0), "glomerulus_diameter"),
    (lambda: render_tile(0, n_glomeruli=-1), "n_glomeruli"),
    (lambda: render_tile(0, sclerosed_fraction=1.5), "sclerosed_fraction"),
    (lambda: render_tile(0, nucleus_diameter="big"), "nucleus_diameter"),
    (lambda: render_tile(0, stain_jitter=-0.1), "stain_jitter"),
    (lambda: glomerulus_patch(0, size=(64, 32)), "size"),
    (lambda: glomerulus_patch(0, fill=(0.8, 0.5)), "fill"),
    (lambda: glomerulus_patch(0, fill=0.5), "fill"),
    (lambda: glomerulus_patch(0, sclerosed="yes"), "sclerosed"),
    (lambda: nuclei_field(0, style="dapi"), "style"),
    (lambda: nuclei_field(0, density=0.0), "density"),
    (lambda: nuclei_field(0, nucleus_diameter=1.0), "nucleus_diameter"),
])
def test_bad_arguments_raise_param_error_naming_the_argument(call, name):
    with pytest.raises(ParamError, match=name):
        call()


# ---- H&E nuclei fields: the tissue around the nuclei (issue 15) ----

def test_he_cell_sheets_lie_in_their_region():
    from histolib.data.phantom import _he_cell_sheets

    found = 0
    for seed in range(6):
        region, centres = _he_cell_sheets(np.random.default_rng(seed), 96, 8.0)
        assert region.shape == (96, 96) and region.dtype == bool
        iy = np.clip(np.round(centres[:, 0]).astype(int), 0, 95)
        ix = np.clip(np.round(centres[:, 1]).astype(int), 0, 95)
        assert region[iy, ix].all()
        if region.mean() > 0.3:  # a sheet packs nuclei at 1.6-2.6 diameters: >= 1 / (2.6 d)^2 per region px
            found += 1
            assert len(centres) >= 0.8 * region.sum() / (2.6 * 8.0) ** 2 / 0.866
    assert found >= 2


def _he_scene(seed=0, n=64, nd=8.0):
    from histolib.data.phantom import _Scene

    return _Scene(np.random.default_rng(seed), (n, n), "he", 8 * nd, nd, 1)


def test_he_tissue_paints_stain_and_labels_nothing():
    from histolib.data.phantom import _he_tissue

    sc = _he_scene()
    region = np.zeros((64, 64), bool)
    region[:, :32] = True
    centres = np.array([[10.0, 10.0], [20.0, 20.0], [40.0, 12.0], [30.0, 50.0]])
    gaps = _he_tissue(sc, centres, np.full(4, 4.0), 0.3, region)
    assert gaps.shape == (64, 64) and 0 <= gaps.min() and gaps.max() <= 1
    assert (sc.h >= 0).all() and (sc.p >= 0).all() and sc.h.mean() > 0.02 and sc.p.mean() > 0.05
    assert sc.nuclei.array().shape[0] == 0  # cytoplasm, fibres, red cells: none is a nucleus
    assert (sc.glom == 0).all()


def test_he_nucleoli_stay_inside_their_nuclei():
    from histolib.data.phantom import _he_nucleoli

    sc = _he_scene(1)
    labels = np.zeros((64, 64), np.int32)
    yy, xx = np.mgrid[:64, :64]
    labels[(yy - 30) ** 2 + (xx - 30) ** 2 <= 25] = 1
    before = sc.h.copy()
    _he_nucleoli(sc, np.array([[30.0, 30.0]]), np.array([5.0]), labels)
    changed = sc.h != before
    assert changed.any() and not changed[labels == 0].any()
    assert (sc.h >= before).all()


def test_he_fields_vary_in_nucleus_size_around_the_nominal():
    from histolib.ops.instance import median_nucleus_diameter

    d = [median_nucleus_diameter(nuclei_field(s, size=128, nucleus_diameter=9).nuclei[None]) for s in range(12)]
    assert max(d) / min(d) > 1.3  # one size per field, as images of different organs
    assert 7.0 < float(np.median(d)) < 11.0  # around the nominal 9 px


def test_he_nuclei_are_bluer_than_the_cytoplasm_around_them():
    # the stain, not only the grey level, tells nuclei from purple cytoplasm: hematoxylin OD share higher
    for s in range(4):
        t = nuclei_field(s, size=128, nucleus_diameter=9)
        od = -np.log(np.clip(t.image.astype(float), 1, 255) / 255.0)
        red_share = od[..., 0] / np.maximum(od.sum(-1), 1e-6)
        nuc, rest = t.nuclei > 0, (t.nuclei == 0) & (t.compartments > 0)
        assert red_share[nuc].mean() > red_share[rest].mean()  # eosin absorbs little red light
