import dataclasses

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


def _rows(gains, base=0.3, seeds=(0, 1, 2), noise=0.01):
    rows = []
    for s in seeds:
        e = noise * (s - 1)
        rows.append({"setting": "Full dataset", "J": 24, "K": 900, "seed": s, "dice": .9, "dice2": .8,
                     "aji": .7 + e, "aji_plus": .7, "pq": .6})
        for j, g in gains.items():
            for setting, v in (("Real", base), ("Generated", base + g + e)):
                rows.append({"setting": setting, "J": j, "K": 50 * j, "seed": s, "dice": v, "dice2": v, "aji": v,
                             "aji_plus": v, "pq": v})
    return rows


def _shapes(rel):
    return [{"quantity": q, "statistic": s, "generated": 1 + rel, "real": 1.0, "relative difference": rel}
            for q in ("area", "aspect_ratio") for s in ("median", "iqr")]


def _placement(diff, p):
    summ = {m: {"mean": 0.5, "std": 0.1, "n": 10} for m in ("greedy", "greedy_all_of_G", "random")}
    return {"summary": summ, "tests": {"greedy-random": {"mean_diff": diff, "p": p},
                                       "greedy-greedy_all_of_G": {"mean_diff": diff, "p": p}},
            "blobs": {m: [10] for m in summ}}


def test_table1_and_curves():
    rows = _rows({2: 0.2, 5: 0.1, 10: 0.0})
    t = nuc.table1(rows)
    assert [(r["setting"], r["J"]) for r in t] == [("Full dataset", 24), ("Real", 2), ("Real", 5), ("Real", 10),
                                                    ("Generated", 2), ("Generated", 5), ("Generated", 10)]
    assert t[0]["paper AJI"] == "0.81" and t[4]["paper AJI"] == "0.49" and t[1]["AJI"].startswith("0.300")
    curve = nuc.curve_rows(rows)
    assert len(curve) == 7 * len(nuc.METRIC_KEYS)
    fig = nuc.curve_figure(rows)
    assert len(fig.axes) == 4


def test_claim_verdicts_follow_the_rules():
    good = nuc.claims(_rows({2: 0.2, 5: 0.1, 10: 0.0}), _shapes(0.05), _placement(0.3, 0.001))
    assert [c["verdict"] for c in good] == ["reproduced"] * 4
    bad = nuc.claims(_rows({2: -0.1, 5: 0.0, 10: 0.2}), _shapes(0.3), _placement(-0.1, 0.5))
    assert [c["verdict"] for c in bad] == ["not reproduced"] * 4
    noisy = nuc.claims(_rows({2: 0.01, 10: 0.0}, noise=0.05), _shapes(0.0), _placement(0.1, 0.2))
    assert noisy[1]["verdict"] == "inconclusive" and noisy[2]["verdict"] == "inconclusive"
    no_gain = nuc.claims(_rows({2: -0.3, 10: -0.4}), _shapes(0.0), _placement(0.1, 0.01))
    assert no_gain[2]["verdict"] == "not reproduced" and no_gain[3]["verdict"] == "not reproduced"
    single = nuc.claims(_rows({2: 0.2}, seeds=(0,)), _shapes(0.0), _placement(0.1, 0.01))
    assert single[2]["verdict"] == "inconclusive" and single[3]["verdict"] == "inconclusive"
