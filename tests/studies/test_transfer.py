"""histolib.studies.transfer: notebook 00's transfer checks (issue 15): nuclei sim-to-real, phantom + real crops."""

import numpy as np
import pytest

from histolib.data.folder import Pairs
from histolib.errors import DataError, ParamError
from histolib.studies import transfer as nt


def _discs(n, radius, size=(40, 60)):
    """``n`` grey-as-RGB images, each with three discs of ``radius`` (ids 1..3)."""
    yy, xx = np.mgrid[:size[0], :size[1]]
    masks = []
    for _ in range(n):
        m = np.zeros(size, np.int32)
        for k, (cy, cx) in enumerate([(10, 12), (28, 30), (15, 48)]):
            m[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k + 1
        masks.append(m)
    images = [np.repeat(np.where(m > 0, 200, 10).astype(np.uint8)[..., None], 3, 2) for m in masks]
    return images, masks


def test_split_is_seeded_disjoint_and_scaled_by_the_reference_masks_only():
    images, masks = _discs(6, radius=4)
    names = [f"im{i}.png" for i in range(6)]
    # the first three images get larger nuclei; whichever half they fall in, the scale must follow the reference
    big_i, big_m = _discs(3, radius=8)
    images[:3], masks[:3] = big_i, big_m
    pairs = Pairs(images, masks, names)
    a = nt.split_real_set(pairs, 0.5, target_diameter=6.0, size=16, seed=3)
    b = nt.split_real_set(pairs, 0.5, target_diameter=6.0, size=16, seed=3)
    assert a.reference_names == b.reference_names and a.test_names == b.test_names
    assert len(a.reference_names) == 3 and len(a.test_names) == 3
    assert not set(a.reference_names) & set(a.test_names)
    ref_masks = [masks[names.index(n)] for n in a.reference_names]
    from histolib.data.nuclei_scale import equivalent_diameters

    assert a.scale.median_diameter == pytest.approx(float(np.median(equivalent_diameters(ref_masks))))
    assert a.scale.factor == pytest.approx(6.0 / a.scale.median_diameter)
    assert a.reference[0].shape[1:] == (16, 16, 3) and a.test[1].dtype == np.int32
    with pytest.raises(DataError, match="at least 2"):
        nt.split_real_set(Pairs(images[:1], masks[:1], names[:1]), 0.5, 6.0, 16, 0)


def test_split_keeps_one_image_on_each_side_at_extreme_fractions():
    images, masks = _discs(3, radius=4)
    pairs = Pairs(images, masks, ["a.png", "b.png", "c.png"])
    assert len(nt.split_real_set(pairs, 0.01, 6.0, 16, 0).reference_names) == 1
    assert len(nt.split_real_set(pairs, 0.99, 6.0, 16, 0).test_names) == 1


def test_nuclei_sim_to_real_on_real_like_folders(tmp_path, real_like_root, one_torch_thread):
    from histolib.config import load_params
    from histolib.studies.data_overview import find_real_sets

    real_like_root(tmp_path / "real")
    P = load_params("smoke", {"data.nuclei_size": 32, "sim2real.n_phantom_nuclei": 2, "nuclei.hv_crop": 32})
    sets = find_real_sets(tmp_path / "real")
    rows, splits = nt.nuclei_sim_to_real(sets, P, [0], tmp_path / "models")
    assert sorted(splits) == ["fluo", "he"]  # the glomerulus crops are not a nucleus set
    assert splits["fluo"]["phantom_style"] == "fluorescence" and splits["he"]["phantom_style"] == "he"
    assert {(r["set"], r["source"]) for r in rows} == {("fluo", "phantom"), ("fluo", "real"),
                                                      ("he", "phantom"), ("he", "real")}
    assert all(0.0 <= r["aji"] <= 1.0 and r["n_train"] > 0 for r in rows)
    # a second call reloads the finished models: same numbers
    again, _ = nt.nuclei_sim_to_real(sets, P, [0], tmp_path / "models")
    assert [r["aji"] for r in again] == [r["aji"] for r in rows]
    table = nt.summary_table(rows, splits)
    assert [(t["real set"], t["trained on"].split(" ")[0]) for t in table] == [
        ("fluo", "phantom"), ("fluo", "real"), ("he", "phantom"), ("he", "real")]
    assert all(t["target AJI (issue 15)"] == "" for t in table)  # targets name monuseg and fluo_dsb only


def test_summary_table_states_the_target_and_whether_it_is_met():
    rows = [{"set": "fluo_dsb", "source": src, "trained on": src, "seed": s, "aji": a, "dice": 0.8, "pq": 0.5}
            for src, vals in (("phantom", (0.5, 0.7)), ("real", (0.8, 0.8))) for s, a in enumerate(vals)]
    splits = {"fluo_dsb": {"test_images": ["a", "b"], "test_tiles": 4}}
    t = nt.summary_table(rows, splits)
    assert t[0]["AJI"] == "0.600 ± 0.141" and t[0]["target AJI (issue 15)"] == ">= 0.60" and t[0]["met"] == "yes"
    assert t[0]["AJI / real-trained"] == "0.75" and t[1]["met"] == ""


def _crops_folder(root, n_slides=8):
    """Tight crops (glomerulus ~0.9 of the side) from ``n_slides`` slides, one crop each, named ``<slide>-<i>``."""
    from histolib.data.folder import save_pairs

    yy, xx = np.mgrid[:48, :48]
    m = ((yy - 24) ** 2 + (xx - 24) ** 2 <= 21 ** 2).astype(np.uint8)
    im = np.where(m[..., None] > 0, np.array([200, 120, 180], np.uint8), np.array([240, 220, 235], np.uint8))
    names = [f"slide{k}-1.png" for k in range(n_slides)]
    save_pairs(root, np.stack([im] * n_slides), np.stack([m] * n_slides), names,
               [{"class": "nonGS", "slide": f"slide{k}"} for k in range(n_slides)])


def test_crop_splits_follow_the_data_stage_by_slide(tmp_path):
    from histolib.config import load_params

    _crops_folder(tmp_path / "crops")
    P = load_params("smoke")
    splits = nt.crop_splits(P, tmp_path, "crops")
    assert set(splits) == {"gan", "train", "val", "test"} and all(len(v) for v in splits.values())
    slides = [{v.labels[n]["slide"] for n in v.names} for v in splits.values()]
    assert sum(len(s) for s in slides) == len(set().union(*slides)) == 8  # no slide in two splits
    assert splits["train"].images.shape[1:] == (P.data.patch_size, P.data.patch_size, 3)
    assert nt.crop_splits(P, tmp_path, "crops")["test"].names == splits["test"].names  # seeded
    with pytest.raises(DataError):
        nt.crop_splits(P, tmp_path, "absent")


def test_tight_phantom_frames_the_glomerulus_tighter():
    from histolib.config import load_params

    P = load_params("smoke")
    tight, loose = nt.tight_phantom(P, [0.9, 0.99]), nt.tight_phantom(P, P.data.fill)
    assert len(tight["train"]) == P.data.n_train and len(tight["val"]) == P.data.n_val
    assert np.asarray(tight["train"].masks).mean() > np.asarray(loose["train"].masks).mean() + 0.2
    assert P.data.fill != [0.9, 0.99]  # the params themselves are untouched


def test_phantom_and_real_rows_table_and_claim(tmp_path, one_torch_thread):
    from histolib.config import load_params

    _crops_folder(tmp_path / "crops")
    P = load_params("smoke", {"unet.epochs": 1})
    real = nt.crop_splits(P, tmp_path, "crops")
    tight = nt.tight_phantom(P, [0.9, 0.99])
    rows = nt.phantom_and_real(real, tight, P.unet, [0], tmp_path / "models")
    assert [r["setting"] for r in rows] == list(nt.MIX_SETTINGS)
    n = {r["setting"]: r["n_train"] for r in rows}
    assert n["real + phantom"] == n["real"] + n["phantom only"] == len(real["train"]) + len(tight["train"])
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
    # the phantom-only model saw no real crop: it is also scored on all of them
    ph = rows[-1]
    assert ph["n_all"] == 8 and 0.0 <= ph["all_dice"] <= 1.0 and "all_dice" not in rows[0]
    fixed = {"disc": nt.fixed_mask_scores(nt.fixed_mask(tight["train"].masks), real["test"])}
    table = nt.mix_table(rows, {"dice": 0.9, "precision": 0.8, "recall": 1.0}, fixed)
    assert [t["trained on"] for t in table][2:] == ["phantom only", "phantom only, scored on all 8 crops",
                                                    "all-glomerulus baseline (every pixel glomerulus)", "disc"]
    assert table[-2]["Dice"] == "90.00" and table[2]["target"].startswith("dice >= 90")
    assert table[2]["met"] in ("yes", "no")
    only = nt.phantom_and_real(real, tight, P.unet, [0], tmp_path / "models", settings=("phantom only",))
    assert only == [ph]  # reloaded, same scores
    with pytest.raises(ParamError, match="unknown setting"):
        nt.phantom_and_real(real, tight, P.unet, [0], tmp_path / "models", settings=("mixed",))
    claim = nt.mix_claim(rows)
    assert claim["key"] == "00-phantom-adds-to-real" and claim["verdict"] == "extension"


def test_mix_claim_estimate_by_hand():
    rows = [{"setting": s, "seed": k, "dice": d} for s, ds in (("real", (0.90, 0.92)), ("real + phantom", (0.93, 0.95)))
            for k, d in enumerate(ds)]
    claim = nt.mix_claim(rows)
    assert claim["estimate"] == pytest.approx(3.0)  # (0.94 - 0.91) x 100 points
    assert claim["ci"][0] < 3.0 < claim["ci"][1]
    assert nt.mix_claim([])["evidence"] == ""


def test_fixed_mask_is_the_majority_of_the_training_masks_by_hand():
    m = np.zeros((3, 4, 4), np.uint8)
    m[:, 1:3, 1:3] = 1          # every mask: the centre
    m[0, 0, 0] = m[1, 0, 0] = 1  # two of three: a corner pixel too
    m[2, 3, 3] = 1              # one of three
    disc = nt.fixed_mask(m)
    assert disc.sum() == 5 and disc[0, 0] == 1 and disc[3, 3] == 0
    target = np.zeros((2, 4, 4), np.uint8)
    target[:, 1:3, 1:3] = 1     # 8 glomerulus pixels; the mask predicts 10, 8 of them right
    s = nt.fixed_mask_scores(disc, Pairs(np.zeros((2, 4, 4, 3), np.uint8), target, ["a", "b"]))
    assert s["precision"] == pytest.approx(8 / 10) and s["recall"] == pytest.approx(1.0)
    assert s["dice"] == pytest.approx(2 * 8 / (10 + 8))
    with pytest.raises(DataError, match="does not match"):
        nt.fixed_mask_scores(disc, Pairs(np.zeros((1, 5, 5, 3), np.uint8), np.zeros((1, 5, 5), np.uint8), ["c"]))
    with pytest.raises(DataError, match="N >= 1"):
        nt.fixed_mask(np.zeros((0, 4, 4)))


def test_conditions_and_fixed_baselines_name_what_was_run(tmp_path):
    from histolib.config import load_params

    _crops_folder(tmp_path / "crops")
    P = load_params("smoke", {"sim2real.crops_source": "crops"})
    crops = nt.crop_splits(P, tmp_path, "crops")
    tight = nt.tight_phantom(P, P.sim2real.mix_fill)
    fixed = nt.fixed_baselines(tight["train"].masks, crops)
    assert list(fixed) == ["fixed centred mask (phantom masks, >= 0.5)", "fixed centred mask, scored on all 8 crops"]
    disc = nt.fixed_mask(tight["train"].masks)
    assert fixed["fixed centred mask (phantom masks, >= 0.5)"] == nt.fixed_mask_scores(disc, crops["test"])
    text = nt.crops_conditions(P, crops, tight, [0, 1])
    n = {k: len(crops[k]) for k in crops}
    assert f"train {n['train']} crops / {n['train']} slides" in text and "seeds [0, 1]" in text
    assert f"phantom {P.data.n_train} train / {P.data.n_val} val patches, fill [0.85, 0.99]" in text
    splits = {"fluo_dsb": {"scale": {"factor": 0.5, "median_diameter": 14.0}}}
    text = nt.nuclei_conditions(P, splits, [0])
    assert "`fluo_dsb` x0.500 (reference median 14.0 px)" in text and f"{P.nuclei.hv_steps} steps" in text
