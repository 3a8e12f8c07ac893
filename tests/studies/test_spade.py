import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histolib.errors import ParamError
from histolib.studies import spade as sp
from histolib.train.spade import SpadeOptions, SpadeTrainer

ROOT = Path(__file__).resolve().parents[2]


def _square_patches(n=4, size=32):
    images = np.full((n, size, size, 3), 230, np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, 8:24, 10:22] = 1
    images[masks.astype(bool)] = (150, 60, 140)
    return images, masks


def test_deformations_share_one_geometry_and_do_not_depend_on_batching():
    images, masks = _square_patches()
    structure = masks * 2 + (np.arange(32)[None, None, :] % 2).astype(np.uint8)  # some 4-class map
    d = sp.deform_copies(images, masks, structure, 3, seed=0, sigma=40.0)
    assert d.images.shape == (3, 4, 32, 32, 3) and d.masks.shape == d.structure.shape == (3, 4, 32, 32)
    assert set(np.unique(d.masks)) <= {0, 1} and set(np.unique(d.structure)) <= {0, 1, 2, 3}
    assert np.array_equal(d.structure // 2, d.masks)  # structure and mask stay aligned
    purple = np.abs(d.images[..., 1].astype(int) - 60) < 40  # the image's square follows the mask
    assert (purple == d.masks.astype(bool)).mean() > 0.95
    assert not np.array_equal(d.masks[0], d.masks[1])  # copies differ
    again = sp.deform_copies(images, masks, structure, 3, seed=0, sigma=40.0, chunk=1)
    assert np.array_equal(again.images, d.images) and np.array_equal(again.structure, d.structure)


def _generator(n_classes, seed=0):
    opts = SpadeOptions(n_classes=n_classes, image_size=32, ngf=2, ndf=4, z_dim=2, spade_hidden=4, num_D=1,
                        n_layers_D=2, ada_ops=())
    return SpadeTrainer(opts, seed=seed).G


def test_build_training_sets_composition():
    images, masks = _square_patches(n=3)
    d = sp.deform_copies(images, masks, masks * 3, 4, seed=1, sigma=20.0)
    sets = sp.build_training_sets(d, {"gtmask": _generator(2), "structure": _generator(4)}, seed=0)
    assert list(sets) == list(sp.SETS)
    assert all(len(p) == 12 for p in sets.values())
    real, mixed = sets["Real"], sets["Real + SPADE-GTMask"]
    assert np.array_equal(np.asarray(real.images), d.images.reshape(12, 32, 32, 3))
    assert np.array_equal(np.asarray(mixed.images)[:6], d.images[:2].reshape(6, 32, 32, 3))  # copies 0, 1 real
    assert np.array_equal(np.asarray(mixed.images)[6:], np.asarray(sets["SPADE-GTMask"].images)[6:])
    for p in sets.values():  # every set is labelled with the deformed masks
        assert np.array_equal(np.asarray(p.masks), d.masks.reshape(12, 32, 32))
    with pytest.raises(ParamError, match="at least 2"):
        sp.build_training_sets(sp.Deformed(d.images[:1], d.masks[:1], d.structure[:1]), {}, seed=0)


def _rows(dice_by_set, seeds=(0, 1, 2)):
    return [{"set": s, "seed": k, "dice": v[i], "precision": 0.9, "recall": 0.9, "n_train": 10}
            for s, v in dice_by_set.items() for i, k in enumerate(seeds)]


def test_claims_follow_the_paired_tests():
    paper_like = _rows({"Real": [0.930, 0.936, 0.925], "SPADE-GTMask": [0.850, 0.870, 0.860],
                        "SPADE-Structure": [0.880, 0.895, 0.882], "Real + SPADE-GTMask": [0.941, 0.946, 0.936],
                        "Real + SPADE-Structure": [0.931, 0.935, 0.926]})
    verdicts = [c["verdict"] for c in sp.claims(paper_like)]
    assert verdicts[0] == "reproduced"      # best, and above Real in every seed
    assert verdicts[1] == "reproduced"      # GT-mask mixture above the structure mixture
    assert verdicts[2] == "reproduced"      # structure above GT-mask alone
    assert verdicts[3] in ("reproduced", "inconclusive")
    opposite = _rows({"Real": [0.95, 0.951, 0.949], "SPADE-GTMask": [0.90, 0.88, 0.89],
                      "SPADE-Structure": [0.80, 0.81, 0.79], "Real + SPADE-GTMask": [0.90, 0.91, 0.89],
                      "Real + SPADE-Structure": [0.94, 0.955, 0.93]})
    verdicts = [c["verdict"] for c in sp.claims(opposite)]
    assert verdicts[:3] == ["not reproduced"] * 3
    assert sp.claims(_rows({"Real": [0.9, 0.9, 0.9]})) == []  # missing sets: no claims


def test_results_table_and_paired_tests():
    rows = _rows({"Real": [0.90, 0.92, 0.94], "SPADE-GTMask": [0.91, 0.93, 0.95]})
    table = sp.results_table(rows)
    assert table[0]["training set"] == "Real" and table[0]["dice"] == "92.00 ± 2.00"
    assert table[0]["paper dice"] == "93.31 ± 0.46"
    paired = sp.paired_tests(rows)
    assert paired[0]["set"] == "SPADE-GTMask" and paired[0]["difference (points)"] == pytest.approx(1.0)
    assert paired[0]["paper difference"] == pytest.approx(85.86 - 93.31)


def test_variance_ratio_test_hand_case():
    t = sp.variance_ratio_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])  # variances 1 and 4: F = 0.25
    assert t["F"] == pytest.approx(0.25) and t["p"] == pytest.approx(0.2)  # F(2, 2) cdf = F / (1 + F)
    assert math.isnan(sp.variance_ratio_test([1.0, 1.0], [1.0, 2.0])["p"])


def test_unknown_label_map_is_named():
    with pytest.raises(ParamError, match="unknown label map 'edges'"):
        sp.get_kind("edges")


def _write_fixture(folder: Path, n_slides=8, per_slide=2, size=40):
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for s in range(n_slides):
        for k in range(per_slide):
            r = rng.uniform(8, 14)
            cy, cx = rng.uniform(15, 25, 2)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 255
            img = rng.integers(180, 240, (size, size, 3)).astype(np.uint8)
            img[mask > 0] = rng.integers(90, 160, (int((mask > 0).sum()), 3))
            name = f"slide{s}-{k}.png"
            Image.fromarray(img).save(folder / "images" / name)
            Image.fromarray(mask).save(folder / "masks" / name)


def test_real_mode_runs_the_study_on_a_folder_of_patches(tmp_path, monkeypatch):
    pytest.importorskip("histolib.ops.structure")
    from histolib.config import load_params
    from histolib.data.prepared import ensure_prepared, load_split
    from histolib.train.segmentation import run_experiment

    root = tmp_path / "project"
    root.mkdir()
    for f in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / f, root / f)
    fixture = tmp_path / "real_glomeruli"
    _write_fixture(fixture)
    monkeypatch.setenv("HISTOLIB_ROOT", str(root))
    monkeypatch.setenv("HISTOLIB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("HISTOLIB_OVERRIDES", json.dumps({
        "data.source": str(fixture), "spade.steps": 2, "spade.kid_encoder_steps": 2, "unet.epochs": 1,
        "unet.n_seeds": 1}))
    P = load_params("smoke")
    assert P.data.source == str(fixture)
    prepared = ensure_prepared(P, log=lambda *a: None)
    pairs = {s: load_split("glomeruli", s, prepared) for s in ("gan", "train", "val", "test")}
    assert sum(len(p) for p in pairs.values()) == 16 and all(len(p) for p in pairs.values())
    img = {s: np.asarray(p.images) for s, p in pairs.items()}
    mask = {s: np.asarray(p.masks) for s, p in pairs.items()}
    runs = {k: sp.train_spade(k, P, img["gan"], mask["gan"], tmp_path / "spade" / k, progress=False)
            for k in sp.LABEL_MAPS}
    assert all(r.log[-1]["step"] == 2 for r in runs.values())
    structure = sp.label_maps(img["train"], mask["train"], "structure", P.spade.structure_threshold)
    deformed = sp.deform_copies(img["train"], mask["train"], structure, 2, P.seed, 20.0)
    sets = sp.build_training_sets(deformed, {k: r.generator for k, r in runs.items()}, P.seed)
    rows = run_experiment(sets, pairs["val"], pairs["test"], P.unet, [P.seed], tmp_path / "unet", progress=False)
    table = sp.results_table(rows)
    assert [r["training set"] for r in table] == list(sp.SETS)
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)


def test_label_maps_have_the_declared_classes():
    pytest.importorskip("histolib.ops.structure")
    images, masks = _square_patches()
    gt = sp.label_maps(images, masks, "gtmask", 0.1)
    st = sp.label_maps(images, masks, "structure", 0.1)
    assert np.array_equal(gt, masks) and st.dtype == np.uint8
    assert set(np.unique(st)) <= {0, 1, 2, 3} and len(np.unique(st)) >= 2
    tex = sp.texture_masks(images, 0.1)
    assert tex[0, 0, 0] == 0 and tex[0, 16, 16] == 1  # grey-white background untextured, purple textured
    with pytest.raises(ParamError, match="uint8"):
        sp.label_maps(images.astype(float), masks, "gtmask", 0.1)


def test_image_quality_scores_a_generator():
    from histolib.train.features import random_net

    images, masks = _square_patches(n=6)
    q = sp.image_quality(_generator(2), masks, images, random_net(0), seed=0, n_subsets=3)
    assert q["outputs"].shape == (6, 32, 32, 3)
    assert q["kid"] == q["kid"] and q["diversity_real"] >= 0 and q["noise_ratio"] >= 0
    assert "random" in q["backbone"] and q["noise_diversity"] >= 0
