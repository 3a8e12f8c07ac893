"""Notebook 02's study module: variants, conditions, deformations, collapse scores, replicates, claims, runs."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from histolib.errors import ParamError
from histolib.studies import pix2pix as p2p
from histolib.train.features import random_net


def _cfg(**kw):
    base = dict(variants=["full", "no_ms"], ngf=4, ndf=4, kernel_size=4, norm="instance", d_head="linear",
                n_dropout=3, dropout=0.5, batch_size=2, steps=4, lr=2e-4, beta1=0.5, beta2=0.999, lambda_l1=10.0,
                mu_ms=10.0, ema_kimg=0.0, upsample="transpose", structure_map="otsu", structure_threshold=0.1,
                eval_every=2, select_from=0.0,
                kid_features="random", kid_encoder_steps=1, kid_subsets=5, n_bootstrap=20, n_grid=4)
    base.update(kw)
    return p2p.Pix2PixParams(**base)


def _cset(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (6 + i) ** 2) for i in range(n)]).astype(np.uint8)
    structure = (rng.random((n, size, size)) > 0.5).astype(np.uint8)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return p2p.ConditionSet(images, masks, structure)


def test_variants_map_to_the_paper_ablations():
    cfg = _cfg()
    full, no_s, no_ms = (p2p.options_for(v, cfg, 64) for v in ("full", "no_structure", "no_ms"))
    cond_d, plain = p2p.options_for("conditional_d", cfg, 64), p2p.options_for("pix2pix", cfg, 64)
    assert (full.in_channels, full.mu_ms, full.conditional_d) == (2, 10.0, False)
    assert (no_s.in_channels, no_s.mu_ms) == (1, 10.0)
    assert (no_ms.in_channels, no_ms.mu_ms) == (2, 0.0)
    assert cond_d.conditional_d and cond_d.mu_ms == 10.0
    assert (plain.in_channels, plain.mu_ms, plain.conditional_d) == (1, 0.0, True)
    assert p2p.options_for("full", cfg, 8).n_dropout == 2  # capped by the depth at tiny sizes
    with pytest.raises(ParamError, match="unknown Pix2Pix variant"):
        p2p.get_variant("nope")
    with pytest.raises(ParamError, match="full"):
        p2p.check_variants(["no_ms"])
    with pytest.raises(ParamError, match="repeats"):
        p2p.check_variants(["full", "full"])


def test_run_identity_leaves_out_later_options_at_their_defaults():
    cs = _cset(n=4)
    plain = p2p.run_args("full", p2p.options_for("full", _cfg(), 32), _cfg(), cs, cs, 0)["options"]
    assert not {"upsample", "ema_kimg", "ema_rampup"} & set(plain)  # runs recorded before these options still load
    cfg = _cfg(upsample="resize", ema_kimg=2.5)
    used = p2p.run_args("full", p2p.options_for("full", cfg, 32), cfg, cs, cs, 0)["options"]
    assert (used["upsample"], used["ema_kimg"], used["ema_rampup"]) == ("resize", 2.5, 0.05)
    assert {k: v for k, v in used.items() if k not in ("upsample", "ema_kimg", "ema_rampup")} == plain


def test_condition_channels_follow_the_variant():
    cs = _cset(n=2)
    assert p2p.ConditionSet.conditions(cs, "full").shape == (2, 2, 32, 32)
    c = cs.conditions("no_structure")
    assert c.shape == (2, 1, 32, 32) and set(c.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(c[:, 0], cs.conditions("full")[:, 0])


def test_downstream_sets_follow_notebook_01():
    from types import SimpleNamespace

    from histolib.studies.spade import deform_copies

    cs, g = _cset(n=3), _Echo()
    spade_cfg = SimpleNamespace(n_deform=2, deform_sigma=40.0, deform_points=3)
    sets, deformed, synth = p2p.downstream_sets(g, cs, spade_cfg, seed=1)
    ref = deform_copies(cs.images, cs.masks, cs.structure, 2, 1, 40.0, 3)  # notebook 01's Real set
    assert np.array_equal(np.asarray(sets["Real"].images), ref.images.reshape(6, 32, 32, 3))
    assert np.array_equal(deformed.structure, ref.structure) and set(np.unique(deformed.structure)) <= {0, 1}
    assert list(sets) == ["Real", "Pix2Pix", "Real + Pix2Pix"] and all(len(p) == 6 for p in sets.values())
    # the echo generator paints the mask: synthetic images follow the deformed masks
    assert np.array_equal(synth[..., 0] > 127, deformed.masks.astype(bool))
    mixed = np.asarray(sets["Real + Pix2Pix"].images)
    assert np.array_equal(mixed[:3], ref.images[0]) and np.array_equal(mixed[3:], synth[1])
    assert np.array_equal(np.asarray(sets["Pix2Pix"].masks), np.asarray(sets["Real"].masks))


def test_real_rows_are_read_from_notebook_01_only_when_identical(tmp_path):
    from histolib.data.folder import Pairs
    from histolib.train.segmentation import run_experiment

    cs = _cset(n=6)
    real = Pairs(cs.images, cs.masks, [f"{i}.png" for i in range(6)])
    cfg = {"width": 2, "depth": 2, "epochs": 1, "batch_size": 4, "lr": 1e-3, "augment_p": 0.0, "loss": "ce"}
    rows = run_experiment({"Real": real}, real, real, cfg, [0, 1], tmp_path, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    read = p2p.notebook01_real_rows(tmp_path, real, real, cfg, [0, 1])
    assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert [(r["seed"], r["dice"]) for r in read] == [(r["seed"], r["dice"]) for r in rows]
    assert read[0]["source"] == "notebook 01"
    other = Pairs(cs.images[::-1].copy(), cs.masks[::-1].copy(), real.names)
    assert p2p.notebook01_real_rows(tmp_path, other, real, cfg, [0, 1]) is None  # other data
    assert p2p.notebook01_real_rows(tmp_path, real, real, {**cfg, "epochs": 2}, [0]) is None  # other options
    assert p2p.notebook01_real_rows(tmp_path, real, real, cfg, [0, 7]) is None  # a missing seed


def test_bootstrap_ratio_of_equal_matrices_is_one():
    d = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))
    lo, hi = p2p.bootstrap_ratio_interval(2 * d, d, n_boot=30, seed=0)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    assert all(math.isnan(v) for v in p2p.bootstrap_ratio_interval(d[:2, :2], d[:2, :2], 5, 0))


class _Constant(nn.Module):
    """A fully collapsed generator: the same grey image whatever the input."""

    def forward(self, x, generator=None):
        return torch.zeros(x.shape[0], 3, *x.shape[-2:])


class _Echo(nn.Module):
    """An input-driven generator: the mask in every channel."""

    def forward(self, x, generator=None):
        return x[:, :1].expand(-1, 3, -1, -1) * 0.9


def test_collapse_scores_tell_a_collapsed_generator_from_a_responsive_one():
    cs = _cset(n=6)
    net = random_net(0)
    flat = p2p.collapse_scores(_Constant(), cs, "full", net, seed=0, n_subsets=5, n_boot=20)
    echo = p2p.collapse_scores(_Echo(), cs, "full", net, seed=0, n_subsets=5, n_boot=20)
    assert flat["diversity_ratio"] == pytest.approx(0.0, abs=1e-6) and flat["sensitivity"] == 0.0
    assert echo["diversity_ratio"] > 0.01 and echo["sensitivity"] > 0.1
    assert flat["dropout_diversity"] == 0.0
    assert flat["outputs"].shape == (6, 32, 32, 3)
    assert flat["diversity_ratio_ci"][1] <= echo["diversity_ratio_ci"][0] + 1e-9


def _scores(full_div, full_kid, others):
    """Per-variant replicate scores: ``others`` maps a variant to ``(diversity ratios, KIDs)``."""
    mk = lambda d, k: [{"diversity_ratio": a, "kid": b} for a, b in zip(d, k, strict=True)]  # noqa: E731
    return {"full": mk(full_div, full_kid), **{v: mk(*dk) for v, dk in others.items()}}


def _faith(synthetic, real=0.9):
    return [{"synthetic": s, "real": real, "ratio": s / real} for s in synthetic]


def _downstream():
    pr = {"precision": 0.9, "recall": 0.8, "n_train": 4}
    real = [{"set": "Real", "seed": k, "dice": d, **pr} for k, d in enumerate([0.90, 0.91, 0.895])]
    syn = [{"set": s, "seed": k, "generator": g, "dice": base + 0.01 * g + 0.002 * k, **pr}
           for s, base in (("Pix2Pix", 0.60), ("Real + Pix2Pix", 0.92)) for g in range(2) for k in range(3)]
    return real + syn


def test_claims_one_rule_realism_gate_and_extensions():
    # full: diverse and realistic (KID 1.0e-3, best); pix2pix collapsed; replicates agree closely
    scores = _scores([0.90, 0.92], [1.0e-3, 1.1e-3], {"pix2pix": ([0.10, 0.12], [4.0e-3, 4.2e-3]),
                                                     "no_ms": ([0.40, 0.41], [3.0e-3, 3.1e-3])})
    faith = {"full": _faith([0.85, 0.86])}
    rows = {r["key"]: r for r in p2p.claims(scores, faith, _downstream())}
    assert rows["001-full-vs-pix2pix-diversity"]["verdict"] == "reproduced"
    assert rows["001-no-ms-collapses"]["verdict"] == "reproduced"
    assert rows["001-full-quality-vs-pix2pix"]["verdict"] == "reproduced"  # lower KID, direction -1
    assert rows["001-pix2pix-collapses"]["verdict"] in ("reproduced", "inconclusive")  # 1 df: wide t-interval
    for key in ("001-synthetic-alone", "001-synthetic-added"):
        assert rows[key]["verdict"] == "extension" and math.isfinite(rows[key]["p"])
    assert rows["001-synthetic-alone"]["estimate"] < 0  # evidence still reported
    assert all(len(r["claim"]) > 50 for r in rows.values())  # full texts, never cut
    # the full model now the noisiest: highest diversity, KID 5x the best -> "not collapsed" untestable
    noisy = _scores([0.90, 0.92], [5.0e-3, 5.2e-3], {"no_ms": ([0.40, 0.41], [1.0e-3, 1.1e-3])})
    rows = {r["key"]: r for r in p2p.claims(noisy, faith, None)}
    for key in ("001-full-not-collapsed", "001-no-ms-collapses"):
        assert rows[key]["verdict"] == "untestable here" and "unrealistic noise" in rows[key]["reason"]
    assert rows["001-full-quality-vs-no-ms"]["verdict"] == "not reproduced"
    # an unfaithful full model: the quality claims are untestable, with both numbers shown
    rows = {r["key"]: r for r in p2p.claims(scores, {"full": _faith([0.30, 0.32])}, _downstream())}
    assert rows["001-full-quality-vs-pix2pix"]["verdict"] == "untestable here"
    assert "0.300 on generated images vs 0.900" in rows["001-full-quality-vs-pix2pix"]["reason"]
    assert rows["001-full-vs-pix2pix-diversity"]["verdict"] == "reproduced"  # diversity claims: realism only


def test_variant_difference_uses_replicates_as_units():
    scores = _scores([0.9, 0.8], [0.0, 0.0], {"no_ms": ([0.5, 0.6], [0.0, 0.0])})
    d = p2p.variant_difference(scores, "full", "no_ms", "diversity_ratio")
    assert d["estimate"] == pytest.approx(0.3) and d["a"]["n_generators"] == 2
    assert d["se"] == pytest.approx(math.sqrt(0.005 / 2 + 0.005 / 2))  # s^2 / G per side, Welch
    one = p2p.variant_difference(_scores([0.9], [0.0], {"no_ms": ([0.5], [0.0])}), "full", "no_ms",
                                 "diversity_ratio")
    assert math.isnan(one["p"])  # one replicate: no test


def test_realism_precondition_and_faithfulness_pooling():
    scores = _scores([0.9], [3.0e-3], {"no_ms": ([0.5], [1.0e-3]), "pix2pix": ([0.4], [1.9e-3])})
    assert not p2p.realism_precondition(scores, "full").met  # 3x the best
    assert p2p.realism_precondition(scores, "pix2pix").met and p2p.realism_precondition(scores, "no_ms").met
    pooled = p2p.pooled_faithfulness(_faith([0.6, 0.8], real=0.8))
    assert pooled["synthetic"] == pytest.approx(0.7) and pooled["ratio"] == pytest.approx(0.875)
    assert pooled["per_replicate"] == [0.6, 0.8]


def test_replicate_faithfulness_scores_generated_images_against_their_masks():
    cs = _cset(n=4)
    segment = lambda images: (images[..., 0] > 127).astype(np.uint8)  # noqa: E731
    echo = (np.repeat(cs.masks[..., None], 3, axis=3) * 255).astype(np.uint8)  # paints its mask
    res = p2p.replicate_faithfulness(segment, [echo, np.zeros_like(echo)], cs)
    assert res[0]["synthetic"] == pytest.approx(1.0) and res[1]["synthetic"] == 0.0
    assert res[0]["real"] == res[1]["real"]  # the same segmenter on the same real test patches


def test_dice_table_is_two_level_with_faithfulness():
    rows = _downstream()
    table = p2p.dice_table(rows, {"synthetic": 0.7, "real": 0.9})
    assert [r["training set"] for r in table] == ["Real", "Pix2Pix", "Real + Pix2Pix"]
    real, syn = table[0], table[1]
    assert real["generators"] == "" and real["seeds"] == 3 and real["vs Real"] == "baseline"
    assert syn["generators"] == 2 and syn["seeds"] == 3 and syn["per replicate (%)"] == "60.20, 61.20"
    assert syn["faithfulness (Dice %)"] == "70.00 vs real 90.00" and syn["vs Real"].startswith("-29.")
    assert p2p.set_groups(rows, "Pix2Pix") == [[0.6, 0.602, 0.604], [0.61, 0.612, 0.614]]
    assert p2p.set_groups(rows, "Real") == [[0.9], [0.91], [0.895]]


def test_train_replicates_use_replicate_seeds_and_folders(tmp_path):
    cfg, train, val = _cfg(steps=2, eval_every=2), _cset(n=4), _cset(n=4, seed=1)
    runs = p2p.train_replicates("no_ms", cfg, train, val, random_net(0), tmp_path, seed=3, n=2, progress=False)
    assert [r.folder for r in runs] == [tmp_path / "g0", tmp_path / "g1"]
    a, b = (dict(r.generator.state_dict()) for r in runs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # different seeds (3, 103), different generators
    labels = {r["variant"] for r in p2p.val_kid_curves({"no_ms": runs})}
    assert labels == {"no_ms", "no_ms_g1"}  # replicate 0 keeps the DVC plot's column


def test_train_variant_trains_then_loads_a_complete_run_without_writing(tmp_path):
    cfg, train, val = _cfg(), _cset(n=6), _cset(n=4, seed=1)
    net = random_net(0)
    run = p2p.train_variant("full", cfg, train, val, net, tmp_path, seed=0, progress=False)
    assert run.best_step in (2, 4) and [h["step"] for h in run.val_history] == [2, 4]
    assert run.log and "loss_ms" in run.log[-1]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = p2p.train_variant("full", cfg, train, val, net, tmp_path, seed=0, progress=False)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after  # read-only: under DVC the folder belongs to the training stage
    assert again.best_step == run.best_step
    for (k, a), b in zip(run.generator.state_dict().items(), again.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_wide_table_for_dvc_plots():
    rows = [{"variant": "full", "step": 2, "val_kid": 0.1}, {"variant": "no_ms", "step": 2, "val_kid": 0.3},
            {"variant": "full", "step": 4, "val_kid": 0.05}]
    assert p2p.wide_table(rows, "val_kid") == [{"step": 2, "full": 0.1, "no_ms": 0.3}, {"step": 4, "full": 0.05}]
    two = p2p.wide_table([{"variant": "full", "step": 1, "loss_d": 1.0, "loss_l1": 0.5}], ["loss_d", "loss_l1"])
    assert two == [{"step": 1, "full_loss_d": 1.0, "full_loss_l1": 0.5}]


def test_structure_maps_threshold_dark_structures():
    img = np.full((1, 4, 4, 3), 230, np.uint8)
    img[0, :2, :2] = (120, 40, 120)  # a dark, saturated purple corner on pale background
    otsu = p2p.structure_maps(img, "otsu")
    assert otsu.dtype == np.uint8 and otsu[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4]
    assert p2p.structure_maps(img, "texture", 0.1)[0].tolist() == otsu[0].tolist()  # grey is unsaturated
    assert p2p.structure_maps(np.full((1, 4, 4, 3), 9, np.uint8))[0].sum() == 0  # uniform: nothing to split
    assert p2p.structure_maps(np.zeros((0, 4, 4, 3), np.uint8)).shape == (0, 4, 4)
    with pytest.raises(ParamError, match="method"):
        p2p.structure_maps(img, "edges")
