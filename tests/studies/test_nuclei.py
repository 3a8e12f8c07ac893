import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from histolib.config import load_params
from histolib.data.phantom import nuclei_field
from histolib.errors import DataError, ParamError
from histolib.studies import nuclei as nuc


@pytest.fixture(scope="module")
def C():
    return dataclasses.replace(load_params("smoke").nuclei, perlin_steps=3, blobs_per_j=60, n_generated=3,
                               n_placement_eval=3, adain_steps=2, adain_warmup=1, hv_steps=2)


@pytest.fixture(scope="module")
def real():
    tiles = [nuclei_field(i, size=64, style="he", nucleus_diameter=7) for i in range(4)]
    return (np.stack([t.image for t in tiles]), np.stack([t.nuclei for t in tiles]).astype(np.int32))


def test_nested_subsets_are_nested_sorted_and_checked():
    s = nuc.nested_subsets(10, [5, 2, 10], seed=3)
    assert list(s) == [2, 5, 10]
    assert set(s[2]) <= set(s[5]) <= set(s[10]) and s[10] == list(range(10))
    assert s[5] == sorted(s[5])
    assert nuc.nested_subsets(10, [2, 5], seed=3) == {2: s[2], 5: s[5]}
    with pytest.raises(ParamError, match="j_values"):
        nuc.nested_subsets(3, [5], seed=0)


def test_tiles_cut_and_renumber():
    images = np.zeros((1, 5, 9, 3), np.uint8)
    masks = np.zeros((1, 5, 9), np.int32)
    masks[0, 0, 0] = 7
    masks[0, 1, 5] = 9
    ti, tm = nuc.tiles(images, masks, 4)
    assert ti.shape == (2, 4, 4, 3) and tm.shape == (2, 4, 4)
    assert tm[0, 0, 0] == 1 and tm[1, 1, 1] == 1  # ids renumbered per tile
    with pytest.raises(ParamError, match="field_size"):
        nuc.tiles(images, masks, 6)
    assert nuc.count_nuclei(masks[0]) == 2


def test_source_generation_and_style_transfer_end_to_end(C, real, tmp_path):
    images, masks = real
    source = nuc.fit_source(images[:2], masks[:2], C, seed=0)
    assert source.j == 2 and source.k == sum(nuc.count_nuclei(m) for m in masks[:2])
    assert len(source.pool) == C.blobs_per_j and source.invert_content  # H&E: dark nuclei
    lo, hi = source.count_range
    assert 1 <= lo <= hi
    gm = nuc.generate_masks(source, 3, C, seed=1)
    assert gm.masks.shape == (3, C.field_size, C.field_size) and gm.priors.shape == gm.masks.shape
    for m, pl, offered in zip(gm.masks, gm.placements, gm.offered, strict=True):
        assert nuc.count_nuclei(m) == pl.n <= offered
    again = nuc.generate_masks(source, 3, C, seed=1)
    np.testing.assert_array_equal(gm.masks, again.masks)
    model, info, _ = nuc.train_style(source, C, 0, tmp_path / "adain", progress=False)
    assert info.kind == "vgg19-random-init"
    gs = nuc.generate_set(source, model, C, seed=1)
    assert gs.images.shape == (C.n_generated, C.field_size, C.field_size, 3) and gs.images.dtype == np.uint8
    np.testing.assert_array_equal(gs.masks, nuc.generate_masks(source, C.n_generated, C, seed=1).masks)
    assert set(gs.style_index.tolist()) <= set(range(len(source.tile_images)))
    assert nuc.sample_grid(gs, 2).ndim == 3


def test_fit_source_needs_two_nuclei(C):
    images = np.zeros((1, 64, 64, 3), np.uint8)
    masks = np.zeros((1, 64, 64), np.int32)
    masks[0, 10:15, 10:15] = 1
    with pytest.raises(DataError, match="at least 2"):
        nuc.fit_source(images, masks, C, seed=0)


def test_placement_study_and_shape_rows(C, real):
    source = nuc.fit_source(*real, C, seed=0)
    study = nuc.placement_study(source, C, seed=0)
    assert set(study["correlation"]) == {"greedy", "greedy_all_of_G", "random"}
    assert all(len(v) == C.n_placement_eval for v in study["correlation"].values())
    assert study["blobs"]["greedy"] == study["blobs"]["random"] or \
        all(r <= g for r, g in zip(study["blobs"]["random"], study["blobs"]["greedy"], strict=True))
    assert len(nuc.placement_rows(study)) == 3
    rows = nuc.shape_rows(source.real_blobs, source.pool)
    assert [(r["quantity"], r["statistic"]) for r in rows] == [("area", "median"), ("area", "iqr"),
                                                               ("aspect_ratio", "median"), ("aspect_ratio", "iqr")]
    ex = nuc.interpolation_examples(source.real_blobs, 32)
    np.testing.assert_allclose(ex["contours"][0], ex["p2"])  # alpha = 0
    np.testing.assert_allclose(ex["contours"][-1], ex["p1"])  # alpha = 1


def _rows(gains, base=0.3, seeds=(0, 1, 2), reps=(0, 1), noise=0.01):
    """Per-run rows: Full and Real per seed, Generated per seed and replicate (gain ``g`` at each J)."""
    rows = []
    for s in seeds:
        e = noise * (s - 1)
        rows.append({"setting": "Full dataset", "J": 24, "K": 900, "replicate": None, "seed": s, "dice": .9,
                     "dice2": .8, "aji": .7 + e, "aji_plus": .7, "pq": .6})
        for j, g in gains.items():
            v = base + e
            rows.append({"setting": "Real", "J": j, "K": 50 * j, "replicate": None, "seed": s,
                         **{m: v for m in nuc.METRIC_KEYS}})
            for r in reps:
                v = base + g + e + noise * (r - 0.5)
                rows.append({"setting": "Generated", "J": j, "K": 50 * j, "replicate": r, "seed": s,
                             **{m: v for m in nuc.METRIC_KEYS}})
    return rows


def _faith(js, reps=(0, 1), ratio=1.0, real=0.6):
    return {(j, r): {k: {"synthetic": ratio * real, "real": real, "ratio": ratio} for k in ("aji", "dice")}
            for j in js for r in reps}


def _placement(greedy, random, all_of_g=None):
    corr = {"greedy": list(greedy), "random": list(random), "greedy_all_of_G": list(all_of_g or random)}
    return {"correlation": corr, "summary": {m: {"mean": float(np.mean(v)), "std": 0.1, "n": len(v)}
                                             for m, v in corr.items()},
            "blobs": {m: [10] for m in corr}}


def _source(real_blobs, pool):
    return SimpleNamespace(real_blobs=real_blobs, pool=pool)


def _ellipses(n, rng, scale=1.0):
    out = []
    for _ in range(n):
        a, b = rng.uniform(8, 12) * scale, rng.uniform(5, 7) * scale
        yy, xx = np.mgrid[-20:21, -20:21]
        out.append((yy / a) ** 2 + (xx / b) ** 2 <= 1)
    return out


def test_groups_and_table1_two_level():
    rows = _rows({2: 0.2, 10: 0.0})
    g = nuc.groups(rows, "Generated", 2, "aji")
    assert len(g) == 2 and all(len(x) == 3 for x in g)  # 2 replicates x 3 seeds
    assert nuc.groups(rows, "Real", 2, "aji") == [[0.29], [0.3], [0.31]]  # single_level: one group per seed
    t = nuc.table1(rows, _faith([2, 10], ratio=0.5))
    assert [(r["setting"], r["J"]) for r in t] == [("Full dataset", 24), ("Real", 2), ("Real", 10),
                                                    ("Generated", 2), ("Generated", 10)]
    assert t[0]["paper AJI"] == "0.81" and t[3]["paper AJI"] == "0.49" and t[1]["AJI"].startswith("0.300 [")
    assert t[3]["generator replicates"] == 2 and t[3]["seeds"] == 3 and t[1]["generator replicates"] == "-"
    assert t[3]["faithfulness AJI (per replicate)"] == "0.300 (0.300, 0.300)"
    assert t[3]["segmenter AJI on real test"] == "0.600" and t[1]["faithfulness AJI (per replicate)"] == ""
    means = {(r["setting"], r["J"]): r["aji"] for r in nuc.table1_means(rows)}
    assert means[("Generated", 2)] == pytest.approx(0.5)  # mean of the generator means
    curve = nuc.curve_rows(rows)
    assert len(curve) == 5 * len(nuc.METRIC_KEYS) and {"ci_low", "ci_high"} <= set(curve[0])
    fig = nuc.curve_figure(rows)
    assert len(fig.axes) == 4


def test_run_experiments_crosses_seeds_with_replicates(C, real, tmp_path, monkeypatch):
    images, masks = real
    calls = []

    def fake(x, y, ti, tm, C_, seed, folder, progress=True, cross=None):
        calls.append(str(folder.relative_to(tmp_path)))
        return {**{m: 0.5 for m in nuc.METRIC_KEYS}, "train_seconds": 0.0}

    monkeypatch.setattr(nuc, "train_and_test", fake)
    src = SimpleNamespace(k=7)
    gs = SimpleNamespace(images=images[:2], masks=masks[:2])
    sets = {(2, 0): gs, (2, 1): gs}
    rows = nuc.run_experiments((images, masks), (images, masks), {2: [0, 1]}, {(2, 0): src, (2, 1): src}, sets, C,
                               [0, 1], tmp_path, gan_seeds=[0, 100], log=lambda *_: None)
    assert len(rows) == 2 * (1 + 1 + 2)  # per seed: full, real, 2 generated replicates
    gen = [r for r in rows if r["setting"] == "Generated"]
    assert sorted((r["replicate"], r["generator_seed"], r["seed"]) for r in gen) == \
        [(0, 0, 0), (0, 0, 1), (1, 100, 0), (1, 100, 1)]
    assert all(r["replicate"] is None for r in rows if r["setting"] != "Generated")
    assert "hovernet/generated_J2_s1/g1" in calls and "hovernet/real_J2_s0" in calls
    assert nuc.generator_seeds(5, 3) == [5, 105, 205]


def test_claims_one_verdict_rule():
    rng = np.random.default_rng(0)
    real_blobs = _ellipses(1000, rng)
    source = _source(real_blobs, real_blobs + real_blobs[::-1])  # same shapes as the real ones
    greedy = rng.normal(0.6, 0.02, 12)
    placement = _placement(greedy, greedy - 0.2 + rng.normal(0, 0.02, 12))
    rows = _rows({2: 0.2, 10: 0.0})
    out = {r["key"]: r for r in nuc.claims(rows, source, placement, _faith([2, 10]))}
    assert list(out) == ["004-blob-shapes", "004-greedy-placement", "004-gain-smallest-J", "004-gain-fades",
                         "004-topfraction-placement"]
    assert out["004-blob-shapes"]["verdict"] == "reproduced"
    assert out["004-greedy-placement"]["verdict"] == "reproduced"
    assert out["004-gain-smallest-J"]["verdict"] == "reproduced"
    assert out["004-gain-fades"]["verdict"] == "reproduced"
    assert out["004-topfraction-placement"]["verdict"] == "extension"  # the study's own question
    assert "advantages of image generation are lost" in out["004-gain-fades"]["claim"]  # full text, not cut
    # the gate: generated images the real-trained segmenter cannot read make the J claims untestable,
    # with both numbers shown; blob and placement claims do not rest on generated images
    gated = {r["key"]: r for r in nuc.claims(rows, source, placement, _faith([2, 10], ratio=0.5))}
    assert gated["004-gain-smallest-J"]["verdict"] == "untestable here"
    assert "0.300 on generated images vs 0.600" in gated["004-gain-fades"]["reason"]
    assert gated["004-blob-shapes"]["verdict"] == "reproduced"
    # opposite direction, significant: not reproduced; a gain that grows with J is not "fading"
    bad = {r["key"]: r for r in nuc.claims(_rows({2: -0.2, 10: 0.2}), _source(real_blobs, _ellipses(600, rng, 1.6)),
                                           _placement(greedy - 0.2, greedy), _faith([2, 10]))}
    assert bad["004-gain-smallest-J"]["verdict"] == "not reproduced"
    assert bad["004-gain-fades"]["verdict"] == "not reproduced"
    assert bad["004-greedy-placement"]["verdict"] == "not reproduced"
    assert bad["004-blob-shapes"]["verdict"] == "not reproduced"
    # a small, noisy difference is inconclusive, not "not reproduced"
    noisy = {r["key"]: r for r in nuc.claims(_rows({2: 0.005, 10: 0.0}, noise=0.1), source, placement,
                                             _faith([2, 10]))}
    assert noisy["004-gain-smallest-J"]["verdict"] == "inconclusive"
    assert noisy["004-gain-fades"]["verdict"] == "inconclusive"
    # one J value (the smoke profile): the fading claim cannot be tested
    one = {r["key"]: r for r in nuc.claims(_rows({2: 0.2}), source, placement, _faith([2]))}
    assert one["004-gain-fades"]["verdict"] == "untestable here"


def test_gain_contrast_matches_hand_computation():
    gen_a, real_a = [[0.5, 0.52], [0.54, 0.56]], [[0.3], [0.32]]
    gen_b, real_b = [[0.4, 0.4], [0.42, 0.42]], [[0.4], [0.42]]
    c = nuc.gain_contrast(gen_a, real_a, gen_b, real_b)
    assert c["estimate"] == pytest.approx((0.53 - 0.31) - (0.41 - 0.41))
    # SE^2 = sum of var(group means) / G over the four samples: 0.04^2/2/2 + 3 x 0.02^2/2/2
    assert c["se"] == pytest.approx(np.sqrt(0.04 ** 2 / 4 + 3 * 0.02 ** 2 / 4))
    assert 0 < c["p"] < 0.05 and c["ci_low"] < c["estimate"] < c["ci_high"]
    assert np.isnan(nuc.gain_contrast(gen_a, [[0.3]], gen_b, real_b)["p"])  # one real seed: no test


def test_image_subsets_take_whole_images():
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    s = nuc.image_subsets(groups, [1, 2, 4], seed=0)
    assert s[4] == list(range(7))
    for j, idx in s.items():
        assert len({groups[i] for i in idx}) == j  # J images, every tile of each
        assert all(i in idx for i in range(7) if groups[i] in {groups[k] for k in idx})
    assert set(s[1]) <= set(s[2]) <= set(s[4])
    # one tile per image: the same as nested_subsets
    assert nuc.image_subsets([f"t{i}" for i in range(10)], [2, 5], 3) == nuc.nested_subsets(10, [2, 5], 3)
    with pytest.raises(ParamError, match="j_values"):
        nuc.image_subsets(groups, [5], 0)


def _cross_folder(folder, n=6, cal_radius=None):
    """A cross-source folder: grey-as-RGB images of 120 x 90 px with 16-bit masks; nuclei of radius 12."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[:90, :120]
    for i in range(n):
        m = np.zeros((90, 120), np.uint16)
        for k, (cy, cx) in enumerate([(25, 30), (60, 85), (30, 90)]):
            m[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12 ** 2] = 500 + 3 * i + k
        g = np.where(m > 0, 200, 10).astype(np.uint8)
        Image.fromarray(np.repeat(g[..., None], 3, 2)).save(folder / "images" / f"dna-{i}.png")
        Image.fromarray(m).save(folder / "masks" / f"dna-{i}.png")


def test_cross_source_scale_comes_from_calibration_images_only(tmp_path):
    from histolib.data.nuclei_scale import equivalent_diameters

    _cross_folder(tmp_path / "x")
    # make the calibration images' nuclei half as wide: the factor must follow them, not the tested images
    cs0 = nuc.load_cross_source(tmp_path / "x", 6.0, 32, 2, seed=0)
    for name in cs0.calibration:
        from PIL import Image
        m = np.asarray(Image.open(tmp_path / "x" / "masks" / name))
        small = np.zeros_like(m)
        yy, xx = np.mgrid[:90, :120]
        for k, (cy, cx) in enumerate([(25, 30), (60, 85), (30, 90)]):
            small[(yy - cy) ** 2 + (xx - cx) ** 2 <= 6 ** 2] = 900 + k
        Image.fromarray(small).save(tmp_path / "x" / "masks" / name)
    cs = nuc.load_cross_source(tmp_path / "x", 6.0, 32, 2, seed=0)
    assert cs.calibration == cs0.calibration and len(cs.calibration) == 2 and len(cs.test) == 4
    assert not set(cs.calibration) & set(cs.test)
    assert cs.scale.median_diameter == pytest.approx(2 * np.sqrt(113 / np.pi))  # radius-6 discs: 113 px
    assert cs.scale.factor == pytest.approx(6.0 / cs.scale.median_diameter)
    # the tested nuclei (radius 12) come out at about twice the target diameter
    assert np.median(equivalent_diameters(list(cs.masks))) == pytest.approx(12.0, rel=0.2)
    assert cs.images.shape[1:] == (32, 32, 3) and cs.masks.dtype == np.int32
    assert "calibration" in cs.text()
    with pytest.raises(DataError, match="cross_calibration"):
        nuc.load_cross_source(tmp_path / "x", 6.0, 32, 6, seed=0)


def test_cross_source_rows_tables_and_claims():
    rows = _rows({2: 0.2, 10: 0.0})
    assert not nuc.has_cross(rows)
    for r in rows:  # on the other source, the gain grows with J: +0.1 at J = 2, +0.3 at J = 10 (made up)
        gain = 0.0 if r["setting"] != "Generated" else (0.1 if r["J"] == 2 else 0.3)
        r.update({f"cross_{m}": (r[m] if r["setting"] != "Generated" else r["aji"] - (0.2 if r["J"] == 2 else 0.0))
                  - 0.1 + gain for m in nuc.METRIC_KEYS})
    assert nuc.has_cross(rows)
    t = {(r["setting"], r["J"]): r for r in nuc.table1(rows, _faith([2, 10]), prefix="cross_")}
    assert t[("Real", 2)]["AJI"].startswith("0.200 [") and t[("Generated", 2)]["AJI"].startswith("0.300 [")
    means = {(r["setting"], r["J"]): r["aji"] for r in nuc.table1_means(rows, "cross_")}
    assert means[("Generated", 10)] == pytest.approx(0.5) and means[("Real", 10)] == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    blobs = _ellipses(200, rng)
    greedy = rng.normal(0.6, 0.02, 12)
    out = {r["key"]: r for r in nuc.claims(rows, _source(blobs, blobs), _placement(greedy, greedy - 0.2),
                                           _faith([2, 10]))}
    assert "004-gain-smallest-J-cross" in out and "004-gain-fades-cross" in out
    assert out["004-gain-smallest-J-cross"]["verdict"] == "reproduced"
    assert out["004-gain-fades-cross"]["verdict"] == "not reproduced"  # the gain does not fade there
    assert out["004-gain-fades"]["verdict"] == "reproduced"  # held-out test unchanged


def test_fluorescence_sources_generate_grey_images(C, tmp_path):
    tiles = [nuclei_field(i, size=64, style="fluorescence", nucleus_diameter=7) for i in range(2)]
    images, masks = np.stack([t.image for t in tiles]), np.stack([t.nuclei for t in tiles]).astype(np.int32)
    source = nuc.fit_source(images, masks, C, seed=0)
    assert source.grey and not source.invert_content  # bright nuclei: the plain mask is the content
    model, _, _ = nuc.train_style(source, C, 0, tmp_path / "adain", progress=False)
    gs = nuc.generate_set(source, model, C, seed=1)
    assert nuc.is_grey(gs.images)
    rgb = np.array([[[10, 20, 31]]], np.uint8)
    np.testing.assert_array_equal(nuc.grey_as_rgb(rgb), [[[20, 20, 20]]])
    assert not nuc.is_grey(rgb)
