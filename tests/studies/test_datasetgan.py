"""Notebook 03's study module: data, selection, export/import of annotations, features, labelling, claims.

The generator here is a tiny stand-in with the StyleGAN2 interface the study uses (``z_dim``,
``mapping(z, truncation_psi)``, ``synthesis(ws, noise_mode, return_features)``), so these tests do not depend on
StyleGAN2 training.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from histolib.errors import DataError, ParamError
from histolib.studies import datasetgan as dg

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest.py)



class StandInG(nn.Module):
    """4 -> 8 -> 16 px: three 'synthesis blocks' of 6, 5 and 4 channels, then an RGB head."""

    z_dim = 8

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.map = nn.Linear(8, 8)
        self.const = nn.Parameter(torch.randn(1, 6, 4, 4))
        self.b1 = nn.Conv2d(6, 6, 3, padding=1)
        self.b2 = nn.Conv2d(6, 5, 3, padding=1)
        self.b3 = nn.Conv2d(5, 4, 3, padding=1)
        self.rgb = nn.Conv2d(4, 3, 1)
        self.style = nn.Linear(8, 6)
        self.register_buffer("w_avg", torch.zeros(8))

    def mapping(self, z, truncation_psi=1.0):
        w = self.map(z)
        w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w[:, None].repeat(1, 3, 1)

    def synthesis(self, ws, noise_mode="const", return_features=False):
        s = self.style(ws[:, 0])[:, :, None, None]
        x = torch.relu(self.b1(self.const * (1 + s)))
        f1 = x
        x = torch.relu(self.b2(nn.functional.interpolate(x, scale_factor=2)))
        f2 = x
        x = torch.relu(self.b3(nn.functional.interpolate(x, scale_factor=2)))
        img = torch.tanh(self.rgb(x))
        return (img, [f1, f2, x]) if return_features else img


def _P(tmp_path=None, **over):
    c = dict(source="phantom", real_split=[0.6, 0.2, 0.2], glomerulus_size=0.5, nucleus_size=0.1,
             n_gan_tiles=3, n_labelled=[4, 2, 2], annot_width=4, annot_depth=2, annot_epochs=1, annot_batch=4,
             annot_lr=1e-3, n_generate=12, truncation_psi=0.7, n_annotated=[3, 2, 3], annotations="",
             feature_blocks=2, feature_chunk=3, clf_optimizer="adam", clf_lr=1e-2, clf_momentum=0.0, clf_epochs=2,
             clf_batch=32, clf_patience=0, clf_hidden=[8, 8], clf_dropout=0.0, clf_ensemble=2, clf_seeds=1,
             uncertainty_drop=0.25, n_synthetic=8, seg_width=4, seg_depth=2, seg_epochs=1, seg_batch=4, seg_lr=1e-3,
             seg_seeds=1, threads=0, n_grid=2)
    c.update(over)
    return SimpleNamespace(seed=3, profile="smoke", datasetgan=SimpleNamespace(**c),
                           stylegan2=SimpleNamespace(resolution=16),
                           data=SimpleNamespace(stain="pas", sclerosed_fraction=0.2, calibration="none"),
                           protocol=SimpleNamespace(n_gan_seeds=2, alpha=0.05, faithfulness_gate=0.8))


def test_rendered_tiles_are_deterministic_and_disjoint_between_splits():
    P = _P()
    a, b = dg.render_tiles(P, "gan", 2), dg.render_tiles(P, "gan", 2)
    assert a.images.shape == (2, 16, 16, 3) and a.masks.shape == (2, 16, 16)
    assert np.array_equal(a.images, b.images) and a.masks.max() < 5
    t = dg.render_tiles(P, "test", 2)
    assert not np.array_equal(a.images, t.images)
    assert dg.tile_seed(3, "gan", 0) != dg.tile_seed(3, "test", 0) != dg.tile_seed(4, "gan", 0)


def test_real_folder_gan_images_and_split(tmp_path):
    from histolib.data.folder import save_pairs

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (10, 20, 24, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (10, 20, 24), dtype=np.uint8)
    save_pairs(tmp_path / "real", imgs, masks, [f"s{i // 2}-{i}.png" for i in range(10)], mask_kind="classes")
    P = _P(source="real", real_split=[0.6, 0.2, 0.2])
    g = dg.gan_images(P, tmp_path)
    assert g.shape == (10, 16, 16, 3)
    sets = dg.labelled_sets(P, tmp_path)
    assert sum(len(s) for s in sets.values()) == 10 and sets["train"].masks.shape[1:] == (16, 16)
    slides = {k: {n.split("-")[0] for n in s.names} for k, s in sets.items()}
    assert not (slides["train"] & slides["test"])  # split by slide
    with pytest.raises(DataError, match="images/"):
        dg.gan_images(_P(source="nowhere"), tmp_path)


def test_compartment_scores_by_hand():
    target = np.array([[[0, 1], [2, 2]]])
    pred = np.array([[[0, 1], [2, 3]]])
    s = dg.compartment_scores(pred, target)
    assert s["accuracy"]["Whitespace"] == 1.0 and s["accuracy"]["Glomerulus"] == 0.5
    assert math.isnan(s["accuracy"]["Arteriole"]) and math.isnan(s["dice"]["Artery"])
    assert s["dice"]["Arteriole"] == 0.0 and s["dice"]["Glomerulus"] == pytest.approx(2 / 3)
    assert s["mean_dice"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert s["pixel_accuracy"] == 0.75
    assert dg.trivial_scores(target)["accuracy"]["Glomerulus"] == 1.0


def test_selection_is_disjoint_and_bounded():
    sel = dg.select_annotated(500, [16, 4, 16], 0)
    allidx = np.concatenate(list(sel.values()))
    assert [len(sel[s]) for s in ("train", "val", "test")] == [16, 4, 16] and len(set(allidx)) == 36
    assert np.array_equal(sel["test"], dg.select_annotated(500, [16, 4, 16], 0)["test"])
    with pytest.raises(ParamError, match="n_generate"):
        dg.select_annotated(10, [16, 4, 16], 0)
    assert dg.annotation_names({"train": np.array([7])}) == {"train": ["train_0007"]}


def test_export_then_import_round_trip_and_rejections(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    z = rng.normal(size=(3, 8)).astype(np.float32)
    names = ["train_0001", "train_0005", "test_0002"]
    out = dg.export_for_annotation(tmp_path / "export", images, z, names, g=0)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "train_0005.png")), images[1])
    assert np.array_equal(np.load(out / "latents.npy"), z)
    assert (out / "names.txt").read_text().split() == names and "4 artery" in (out / "README.txt").read_text()
    hand = tmp_path / "hand"
    hand.mkdir()
    masks = rng.integers(0, 5, (3, 16, 16), dtype=np.uint8)
    for m, n in zip(masks, names, strict=True):
        Image.fromarray(m).save(hand / f"{n}.png")
    assert np.array_equal(dg.import_annotations(hand, names, 16), masks)
    bad = masks[1].copy()
    bad[0, 0] = 5  # a class outside the five
    Image.fromarray(bad).save(hand / "train_0005.png")
    with pytest.raises(DataError, match=r"train_0005\.png.*outside 0\.\.4"):
        dg.import_annotations(hand, names, 16)
    Image.fromarray(masks[1][:8]).save(hand / "train_0005.png")
    with pytest.raises(DataError, match=r"train_0005\.png.*16x8"):
        dg.import_annotations(hand, names, 16)
    (hand / "train_0005.png").unlink()
    with pytest.raises(DataError, match=r"train_0005\.png: missing"):
        dg.import_annotations(hand, names, 16)
    with pytest.raises(DataError, match="does not exist"):
        dg.import_annotations(tmp_path / "none", names, 16)


def test_annotate_with_hand_masks_uses_them(tmp_path):
    P = _P(annotations="hand")
    rep = dg.Replicate(0, 5, tmp_path, StandInG())
    sel = dg.select_annotated(12, [3, 2, 3], rep.seed)
    names = dg.annotation_names(sel)
    (tmp_path / "hand" / "g0").mkdir(parents=True)
    for s in names:
        for n in names[s]:
            Image.fromarray(np.full((16, 16), 2, np.uint8)).save(tmp_path / "hand" / "g0" / f"{n}.png")
    ann = dg.annotate_replicate(P, rep, export_dir=tmp_path / "exp", root=tmp_path)
    assert "hand-drawn" in ann.annotator
    assert all((ann.labels[s] == 2).all() for s in ("train", "val", "test"))
    assert ann.images.shape == (12, 16, 16, 3) and ann.z.shape == (12, 8)
    assert len(list((tmp_path / "exp" / "images").glob("*.png"))) == 8
    with pytest.raises(ParamError, match="annotator"):
        dg.annotate_replicate(_P(), rep)


def test_features_classifier_and_labelled_set_with_a_stand_in_generator(tmp_path):
    P = _P()
    rep = dg.Replicate(0, 5, tmp_path, StandInG())
    sel = dg.select_annotated(12, [3, 2, 3], rep.seed)
    z = dg.latents(rep.G, 12, 1)
    images = dg.synthesize(rep.G, z, 0.7, chunk=5)
    assert images.shape == (12, 16, 16, 3) and images.dtype == np.uint8
    # labels: a function of the image (so the features can predict it)
    lab = {s: (images[idx, :, :, 0] > 127).astype(np.uint8) * 2 for s, idx in sel.items()}
    ann = dg.Annotated(0, z, images, sel, dg.annotation_names(sel), lab, "test labels")
    feats = dg.write_split_features(P, rep, ann, tmp_path / "f")
    arr = np.load(feats["train"])
    assert arr.shape == (3 * 256, 5 + 4) and arr.dtype == np.float16  # last 2 blocks: 5 + 4 channels
    assert dg.feature_channels(rep.G, z, 0.7, 2) == [(5, 8), (4, 16)]
    with pytest.raises(ParamError, match="feature_blocks"):
        dg.feature_fn(rep.G, z, 0.7, 4)(0, 1)
    runs = dg.train_classifiers(P, rep, ann, feats, tmp_path / "clf")
    assert len(runs) == 1 and len(runs[0].members) == 2
    assert runs[0].test_pred.shape == (3, 16, 16) and runs[0].test_js.shape == (3, 16, 16)
    gen = dg.label_generated(P, rep, runs[0].members, 8, seed=9)
    assert len(gen["kept"]) == 6 and gen["images"].shape == (6, 16, 16, 3)  # 25 % most uncertain dropped
    dropped = sorted(set(range(8)) - set(gen["kept"].tolist()))
    assert min(gen["uncertainty"][dropped]) >= max(gen["uncertainty"][gen["kept"]])
    assert gen["labels"].max() <= 4
    one = dg.label_generated(P, rep, runs[0].members[:1], 4, seed=9)
    assert len(one["kept"]) == 4  # a single classifier has no uncertainty to filter by


def _run(g, acc, dice):
    sc = {"accuracy": dict(zip(dg.CLASS_NAMES, acc, strict=True)), "mean_dice": dice}
    return dg.ClassifierRun(g, 0, [], sc, None, None, [], 0.0)


def test_table1_and_claims_verdicts():
    runs = [_run(0, [0.6, 0.6, 0.9, 0.3, 0.8], 0.95), _run(0, [0.6, 0.62, 0.91, 0.31, 0.8], 0.96),
            _run(1, [0.61, 0.6, 0.92, 0.3, 0.82], 0.955), _run(1, [0.6, 0.6, 0.9, 0.32, 0.81], 0.952)]
    t = dg.table1(runs, "stand-in annotator")
    assert [r["class"] for r in t][:5] == list(dg.CLASS_NAMES) and t[2]["accuracy (%) paper"] == "82.89"
    seg = [{"set": "Generated", "g": g, "seed": s, "mean_dice": 0.8 + 0.01 * g + 0.001 * s} for g in (0, 1)
           for s in (0, 1)]
    seg += [{"set": "Annotated", "g": g, "seed": s, "mean_dice": 0.6 + 0.01 * g + 0.002 * s} for g in (0, 1)
            for s in (0, 1)]
    seg += [{"set": "Real", "g": None, "seed": s, "mean_dice": 0.85 + 0.01 * s} for s in (0, 1)]
    faith = [{"synthetic": 0.8, "real": 0.9, "ratio": 0.89, "trivial": 0.2}] * 2
    rows = dg.claims(runs, seg, faith, [])
    v = {r["key"]: r["verdict"] for r in rows}
    assert v["002-glomerulus-artery-highest"] == "reproduced" and v["002-arteriole-lowest"] == "reproduced"
    assert v["002-mean-dice"] == "reproduced"  # 0.954 > 0.92 across both replicates
    assert v["002-generated-vs-annotated"] == "extension"
    low = [_run(0, [0.6] * 5, 0.5), _run(1, [0.6] * 5, 0.52)]
    v = {r["key"]: r["verdict"] for r in dg.claims(low, [], None, [])}
    assert v["002-mean-dice"] == "not reproduced"
    assert v["002-arteriole-lowest"] == "inconclusive"  # no ordering at all
    failed = dg.claims(runs, seg, faith, [dg.report.Precondition("annotator", False, "x")])
    assert {r["verdict"] for r in failed if not r["key"].startswith("002-generated")} == {"untestable here"}
    annot = {"accuracy": dict(zip(dg.CLASS_NAMES, [0.8, 0.99, 0.9, 0.0, 0.7], strict=True))}
    gated = {r["key"]: r for r in dg.claims(runs, seg, faith, [], annot_scores=annot)}
    assert gated["002-arteriole-lowest"]["verdict"] == "untestable here"
    assert "Arteriole" in gated["002-arteriole-lowest"]["reason"]
    assert gated["002-mean-dice"]["verdict"] == "reproduced"  # not a per-class claim
    table = dg.segmentation_table([{**r, "n_distinct": 4, **{f"dice {c}": 0.5 for c in dg.CLASS_NAMES}}
                                   for r in seg])
    assert [r["training set"] for r in table] == ["Generated", "Annotated", "Real"]


def test_training_sets_are_repeated_to_the_same_length_and_real_matches_the_generated_count():
    P = _P(n_synthetic=10)
    rng = np.random.default_rng(0)
    real = dg.LabelledSet(rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8), np.zeros((20, 16, 16), np.uint8),
                          [f"r{i}" for i in range(20)])
    gens = [{"images": real.images[:k], "labels": real.masks[:k]} for k in (6, 7)]
    sel = {"train": np.array([0, 1, 2]), "val": np.array([3]), "test": np.array([4])}
    anns = [dg.Annotated(g, np.zeros((8, 8)), real.images[:8], sel, dg.annotation_names(sel),
                         {"train": real.masks[:3], "val": real.masks[:1], "test": real.masks[:1]}, "x") for g in (0, 1)]
    sets = dg.training_sets(P, gens, anns, real)
    assert set(sets) == {("Generated", 0), ("Generated", 1), ("Annotated", 0), ("Annotated", 1), ("Real", None)}
    assert all(len(v) == 10 for v in sets.values())
    assert len(set(sets[("Real", None)].names)) == 6  # as many distinct real tiles as the smallest generated set
    assert len(set(sets[("Annotated", 0)].names)) == 3
    assert dg.seg_groups([{"set": "Real", "g": None, "mean_dice": 0.5}, {"set": "Real", "g": None,
                                                                        "mean_dice": 0.7}], "Real") == [[0.5], [0.7]]
