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
    """Rows of run_experiment: ``{set: [seed values]}`` (Real) or ``{set: [[replicate 0 seeds], ...]}``."""
    out = []
    for s, v in dice_by_set.items():
        groups = [v] if not isinstance(v[0], list) else v
        for g, vals in enumerate(groups):
            name = sp.replicate_set(s, None if not isinstance(v[0], list) else g)
            out += [{"set": name, "seed": k, "dice": x, "precision": 0.9, "recall": 0.9, "n_train": 10}
                    for k, x in zip(seeds, vals, strict=True)]
    return out


def _faith(ratio_by_kind):
    return {k: [{"synthetic": 0.9 * r, "real": 0.9, "ratio": r} for r in rs] for k, rs in ratio_by_kind.items()}


PAPER_LIKE = {"Real": [0.931, 0.932, 0.930],
              "SPADE-GTMask": [[0.850, 0.870, 0.860], [0.852, 0.866, 0.861]],
              "SPADE-Structure": [[0.880, 0.895, 0.882], [0.884, 0.890, 0.885]],
              "Real + SPADE-GTMask": [[0.9410, 0.9412, 0.9408], [0.9420, 0.9421, 0.9419]],
              "Real + SPADE-Structure": [[0.9320, 0.9322, 0.9321], [0.9325, 0.9326, 0.9324]]}


def test_claims_reproduced_untestable_and_extension():
    rows = _rows(PAPER_LIKE)
    faithful = sp.claims(rows, _faith({"gtmask": [0.95, 0.9], "structure": [0.9, 0.92]}), gate=0.8)
    by = {c["key"]: c for c in faithful}
    assert list(by) == [c.key for c, *_ in sp.CLAIMS]
    assert by["000-mix-gtmask-best"]["verdict"] == "reproduced"          # +0.9 over Real, 2 generators
    assert "best of all by mean Dice: Real + SPADE-GTMask" in by["000-mix-gtmask-best"]["evidence"]
    assert by["000-mix-gtmask-vs-structure"]["verdict"] == "reproduced"
    assert by["000-synthetic-structure-vs-gtmask"]["verdict"] == "reproduced"
    assert by["000-mix-gtmask-lower-std"]["verdict"] == "reproduced"     # tiny seed spread at each generator
    assert by["000-mix-gtmask-lower-std"]["expected"] == "negative"
    assert by["000-mix-structure-vs-real"]["verdict"] == "extension"
    assert all(len(c["claim"]) > 80 for c in faithful)                  # full texts
    # one unfaithful structure replicate: every claim resting on structure synthesis is untestable
    gated = {c["key"]: c for c in sp.claims(rows, _faith({"gtmask": [0.95, 0.9], "structure": [0.9, 0.5]}))}
    assert gated["000-mix-gtmask-best"]["verdict"] == "reproduced"
    for key in ("000-mix-gtmask-vs-structure", "000-synthetic-structure-vs-gtmask", "000-mix-structure-lower-std"):
        assert gated[key]["verdict"] == "untestable here"
        assert "SPADE-Structure replicate 1" in gated[key]["reason"] and "0.450" in gated[key]["reason"]
    assert gated["000-mix-structure-vs-real"]["verdict"] == "extension"
    # no faithfulness measured: untestable, never silently passed
    assert {c["verdict"] for c in sp.claims(rows) if not c["key"].endswith("vs-real")} == {"untestable here"}
    assert sp.claims(_rows({"Real": [0.9, 0.9, 0.9]})) == []             # missing sets: no claims


def test_claims_not_reproduced_in_the_opposite_direction():
    rows = _rows({**PAPER_LIKE, "Real": [0.950, 0.951, 0.949],
                  "Real + SPADE-GTMask": [[0.900, 0.910, 0.890], [0.905, 0.902, 0.899]]})
    by = {c["key"]: c for c in sp.claims(rows, _faith({"gtmask": [1, 1], "structure": [1, 1]}))}
    assert by["000-mix-gtmask-best"]["verdict"] == "not reproduced"
    assert by["000-mix-gtmask-vs-structure"]["verdict"] == "not reproduced"


def test_replicate_bookkeeping():
    assert sp.replicate_set("SPADE-GTMask", 1) == "SPADE-GTMask@g1" and sp.replicate_set("Real", 0) == "Real"
    assert sp.split_set("Real + SPADE-Structure@g2") == ("Real + SPADE-Structure", 2)
    assert sp.split_set("Real") == ("Real", None)
    assert sp.set_kind("Real + SPADE-GTMask@g0") == "gtmask" and sp.set_kind("Real") is None
    assert sp.replicate_folder("m/spade/gtmask", 1).as_posix() == "m/spade/gtmask/g1"
    rows = _rows(PAPER_LIKE)
    assert sp.set_groups(rows, "Real") == [[0.931], [0.932], [0.930]]   # seeds as units
    assert sp.set_groups(rows, "SPADE-GTMask") == [[0.850, 0.870, 0.860], [0.852, 0.866, 0.861]]
    assert sp.set_groups(rows, "nothing") == []

    class P:  # the params a replicate needs
        seed = 7
        protocol = type("protocol", (), {"n_gan_seeds": 3})
    assert sp.generator_seeds(P) == [7, 107, 207]


def test_replicate_training_sets_share_deformations():
    images, masks = _square_patches(n=2)
    d = sp.deform_copies(images, masks, masks * 3, 2, seed=1, sigma=20.0)
    gens = {"gtmask": [_generator(2, 0), _generator(2, 1)], "structure": [_generator(4, 0), _generator(4, 1)]}
    sets = sp.replicate_training_sets(d, gens, seeds=[0, 100])
    assert list(sets)[0] == "Real" and len(sets) == 1 + 2 * 4
    assert "SPADE-GTMask@g1" in sets and "Real + SPADE-Structure@g0" in sets
    single = sp.build_training_sets(d, {k: g[0] for k, g in gens.items()}, seed=0)
    view = sp.replicate_view(sets, 0)
    assert list(view) == list(sp.SETS)  # replicate 0 is the single-generator protocol
    assert all(np.array_equal(np.asarray(view[n].images), np.asarray(single[n].images)) for n in sp.SETS)
    assert not np.array_equal(np.asarray(sets["SPADE-GTMask@g1"].images), np.asarray(view["SPADE-GTMask"].images))
    assert np.array_equal(np.asarray(sets["SPADE-GTMask@g1"].masks), np.asarray(view["SPADE-GTMask"].masks))
    with pytest.raises(ParamError, match="one generator per replicate"):
        sp.replicate_training_sets(d, gens, seeds=[0])


def test_results_table_two_level_with_faithfulness():
    table = sp.results_table(_rows(PAPER_LIKE), _faith({"gtmask": [0.9, 0.8], "structure": [1.0, 1.0]}))
    real, gt = table[0], table[1]
    assert real["training set"] == "Real" and real["G"] == "—" and real["faithfulness"] == "—"
    assert real["dice"].startswith("93.10 [") and real["paper dice"] == "93.31 ± 0.46"
    assert gt["G"] == 2 and gt["seeds"] == 3 and gt["faithfulness"] == "0.765 (0.810, 0.720)"
    assert gt["real score"] == "0.900"


def test_spread_test_hand_case():
    # a: pooled within-replicate variance 1 (2 groups, 2 df), b: variance 4 (2 df): F = 0.25, SD ratio 0.5
    t = sp.spread_test([[1.0, 2.0, 3.0]], [[2.0], [4.0], [6.0]])
    assert t["estimate"] == pytest.approx(-0.5) and t["p"] == pytest.approx(2 * 0.2)  # F(2, 2) cdf = F/(1+F)
    assert t["ci_low"] < -0.5 < t["ci_high"]
    assert math.isnan(sp.spread_test([[1.0, 1.0]], [[1.0], [2.0]])["p"])


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
