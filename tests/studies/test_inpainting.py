import numpy as np
import pytest

from histolib.config import load_params
from histolib.data.folder import save_pairs
from histolib.errors import DataError, ParamError
from histolib.studies import inpainting as ip


def _disc(n, cy, cx, r):
    yy, xx = np.mgrid[:n, :n]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _tiles(n=3, s=40):
    labels = np.zeros((n, s, s), np.uint8)
    labels[:, _disc(s, 8, 8, 5)] = 1
    labels[0, _disc(s, 30, 30, 4)] = 2
    allowed = labels == 0
    images = np.full((n, s, s, 3), 200, np.uint8)
    return ip.TileSet(images, labels, allowed, [f"t{i}" for i in range(n)])


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_params_section_loads_for_every_profile(profile):
    P = load_params(profile)
    c = P.inpainting
    assert c.synthetic_fractions == [0.3, 0.6, 1.0] and "effb3_unet" in c.models
    assert P.data.crop_size % 4 == 0
    if profile == "paper":
        assert (c.ngf, c.n_blocks, c.batch_size, c.epochs, P.data.crop_size) == (64, 8, 16, 100, 256)
        assert (c.lambda_adv, c.lambda_perceptual, c.lambda_style, c.lr) == (0.02, 0.1, 150.0, 1e-4)


def test_downsample_boxes_images_and_samples_labels():
    img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(3, -1)
    lab = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    i2, l2 = ip.downsample(img, lab, 2)
    np.testing.assert_array_equal(i2[0, :, :, 0], [[2, 4], [10, 12]])  # means 2.5, 4.5, ... rounded half to even
    np.testing.assert_array_equal(l2[0], [[5, 7], [13, 15]])
    with pytest.raises(ParamError):
        ip.downsample(img[:, :3, :3], lab[:, :3, :3], 2)


def test_testset_tile_seeds_extend_the_builder_split():
    from histolib.data.builder import item_seed

    P = load_params("smoke")
    seeds = ip.testset_tile_seeds(P)
    n = P.data.n_tiles[2]
    assert seeds[:n] == [item_seed(P.seed, "tiles", "test", i) for i in range(n)]
    assert len(seeds) == n + P.inpainting.extra_test_tiles and len(set(seeds)) == len(seeds)


def test_crops_of_and_counts():
    ts = _tiles()
    assert ts.count(1) == 3 and ts.count(2) == 1
    cr = ip.crops_of(ts, 2, 16)
    assert len(cr) == 1 and cr.items == [0] and cr.masks[0, 8, 8] == 1
    assert len(ip.crops_of(ts, 3, 16)) == 0


def test_synthetic_counts():
    assert ip.synthetic_counts(18, [0.3, 0.6, 1.0]) == [5, 11, 18]
    assert ip.synthetic_counts(1, [0.3, 1.0]) == [1, 1]
    assert ip.synthetic_counts(0, [0.3]) == [0]


def test_plan_and_apply_placements_stay_in_free_tissue():
    ts = _tiles(n=2, s=48)
    rng = np.random.default_rng(0)
    radii = np.full(5, 4.0)
    pl = ip.plan_placements(ts, radii, 16, margin=0.25, max_per_tile=2, rng=rng)
    assert 1 <= len(pl) <= 4  # at most max_per_tile per tile
    assert max(np.bincount([p.item for p in pl])) <= 2
    masks = np.stack([_disc(16, 8, 8, 4)] * 5).astype(np.uint8)
    inpainted = np.zeros((len(pl), 16, 16, 3), np.uint8)
    images, labels = ip.apply_placements(ts, pl, inpainted, masks)
    for p in pl:
        cy, cx = p.centre
        disc = _disc(48, cy, cx, 4)
        assert ts.allowed[p.item][disc].all()                  # new glomerulus in free tissue only
        assert (labels[p.item][disc] == 2).all() and (images[p.item][disc] == 0).all()
    changed = (labels != ts.labels)
    assert set(np.unique(labels[changed])) <= {2} and (ts.labels[changed] == 0).all()
    for a in pl:  # disjoint
        for b in pl:
            if a is not b and a.item == b.item:
                assert np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) > 2 * 4 * 1.25


def _rows():
    rows = []

    def add(model, set_, g, seed, test, ng, sg):
        row = {"model": model, "set": set_, "g": g, "seed": seed, "test": test}
        for k in ("precision", "recall", "f1", "dice"):
            row.update({f"NG_{k}": ng, f"SG_{k}": sg, f"mean_{k}": (ng + sg) / 2})
        rows.append(row)

    for s in range(3):
        for test, shift in (("PAS", 0.0), ("H&E", -0.2 - 0.01 * s)):
            add("effb3_unet", ip.REAL, None, s, test, 0.9 + shift + 0.01 * s, 0.5 + shift + 0.01 * s)
            add("effb3_unet", ip.REAL_NOAUG, None, s, test, 0.85 + shift + 0.01 * s, 0.4 + shift + 0.02 * s)
            for g in range(3):
                for k, f in enumerate(("+30%", "+60%", "+100%")):
                    gain = (0.1, 0.15, 0.17 + 0.002 * g)[k]
                    add("effb3_unet", f, g, s, test, 0.9 + shift, 0.5 + shift + gain + 0.01 * g + 0.003 * s)
                add("unet", "+100%", g, s, test, 0.6 + 2 * shift + 0.01 * g, 0.3 + 2 * shift + 0.005 * s)
    return rows


def test_groups_and_paired_groups():
    rows = _rows()
    real = ip.groups(rows, "effb3_unet", ip.REAL, "PAS", "SG_dice")
    assert [v[0] for v in real] == pytest.approx([0.5, 0.51, 0.52])
    syn = ip.groups(rows, "effb3_unet", "+100%", "PAS", "SG_dice")
    assert len(syn) == 3 and len(syn[0]) == 3
    d = ip.paired_groups(rows, [("effb3_unet", "+100%", "PAS", "SG_dice", 1), ("effb3_unet", ip.REAL, "PAS",
                                                                               "SG_dice", -1)])
    assert d[1][2] == pytest.approx((0.5 + 0.172 + 0.01 + 0.006) - 0.52)  # g = 1, seed 2
    assert ip.paired_groups(rows, [("nope", ip.REAL, "PAS", "SG_dice", 1)]) == []


def test_claims_verdicts_on_constructed_results():
    rows = _rows()
    roles = {"PAS": "in-domain", "H&E": "stain-shifted"}
    good = [{"synthetic": 0.5, "real": 0.55, "ratio": 0.9, "g": g} for g in range(3)]
    out = {c["key"]: c for c in ip.claims(rows, roles, ["+30%", "+60%", "+100%"], ["effb3_unet", "unet"], good, 0.8)}
    assert out["003-trad-aug"]["verdict"] == "reproduced"
    assert out["003-ng-above-sg"]["verdict"] == "reproduced"
    assert out["003-he-below-pas"]["verdict"] == "reproduced"
    assert out["003-synthetic-raises-sg-pas"]["verdict"] == "reproduced"
    assert out["003-more-not-always-better"]["verdict"] == "reproduced"  # gains 0.10, 0.15, 0.17: concave
    assert out["003-effb3-beats-unet-pas"]["verdict"] == "reproduced"
    assert out["003-effb3-advantage-larger-on-he"]["verdict"] == "reproduced"
    assert not any(k.startswith("003-effb3-beats-unetpp") for k in out)  # model not run: claim left out
    bad = [{**good[0], "synthetic": 0.1, "ratio": 0.18}] + good[1:]
    gated = {c["key"]: c for c in ip.claims(rows, roles, ["+30%", "+60%", "+100%"], ["effb3_unet"], bad, 0.8)}
    assert gated["003-synthetic-raises-sg-pas"]["verdict"] == "untestable here"
    assert gated["003-trad-aug"]["verdict"] == "reproduced"  # not resting on the generators


def test_tables_have_the_papers_numbers_beside_ours():
    rows = _rows()
    roles = {"PAS": "in-domain", "H&E": "stain-shifted"}
    t3 = ip.table3(rows, roles)
    assert len(t3) == 8 and t3[0]["paper dice"] == "0.9036 ± 0.0005"
    t4 = ip.table4(rows, roles, ["+30%", "+60%", "+100%"])
    assert t4[3]["paper dice"] == "0.7491 ± 0.0006" and t4[3]["G"] == 3
    t5 = ip.table5(rows, roles, ["effb3_unet", "unet"], "+100%")
    assert [r["model"] for r in t5[:3]] == ["Unet", "Swin-Unet", "EfficientNetB3-Unet"]
    assert "not run" in t5[1]["dice"]


def test_run_specs_cross_models_sets_and_replicates():
    P = load_params("cpu")
    specs = ip.run_specs(P)
    g = P.protocol.n_gan_seeds
    assert len(specs) == 2 + 3 * g + 2 * g
    assert specs[1].augment is False and specs[0].g is None
    assert {s.set for s in specs if s.model == "unetpp"} == {"+100%"}
    assert len({s.folder for s in specs}) == len(specs)
    with pytest.raises(ParamError):
        ip.run_specs(load_params("cpu", {"inpainting.models": ["unet"]}))


def _real_folder(root, n_slides=4, per=3, size=48):
    rng = np.random.default_rng(0)
    images, masks, names, labels = [], [], [], []
    for s in range(n_slides):
        for k in range(per):
            gs = (s + k) % 3 == 0
            m = _disc(size, size // 2, size // 2, 15)
            img = np.full((size, size, 3), 230, np.uint8)
            img[m] = (150, 60, 140) if gs else (200, 120, 190)
            img = (img + rng.integers(0, 10, img.shape)).astype(np.uint8)
            images.append(img)
            masks.append(m)
            names.append(f"S{s}-{k}.png")
            labels.append({"class": "GS" if gs else "nonGS", "slide": f"S{s}"})
    save_pairs(root, images, masks, names, labels)
    return root


def test_real_mode_on_a_tiny_folder(tmp_path):
    folder = _real_folder(tmp_path / "crops")
    P = load_params("smoke", {"inpainting.source": str(folder), "inpainting.real_split": [0.5, 0.25, 0.25]})
    data = ip.load_data(P)
    assert data.train.kind == "crops" and list(data.tests) == ["Test"]
    slides = [{n.split("-")[0] for n in ts.names} for ts in (data.train, data.val, data.tests["Test"])]
    assert not (slides[0] & slides[1] or slides[0] & slides[2] or slides[1] & slides[2])  # split by slide
    size = P.data.crop_size
    assert data.train.images.shape[1:] == (size, size, 3)
    assert set(np.unique(data.train.labels)) <= {0, 1, 2} and data.train.count(2) >= 1
    reps = ip.train_replicates(P, data, tmp_path / "gan", progress=False)
    assert len(reps) == P.protocol.n_gan_seeds
    crops = ip.crops_of(data.train, 2, size)
    bank = ip.mask_bank(reps[0].mask_G, 4, crops.masks, P, reps[0].seed)
    syn = ip.build_synthetic_sets(P, data, reps[0], bank, None, 0)
    n_sg = data.train.count(2)
    counts = ip.synthetic_counts(n_sg, P.inpainting.synthetic_fractions)
    for f, k in zip(P.inpainting.synthetic_fractions, counts, strict=True):
        imgs, labs = syn.sets[ip.fraction_name(f)]
        assert len(imgs) == len(data.train) + k  # new crops: normal crops turned sclerosed
        assert (labs[len(data.train):] == 2).any(axis=(1, 2)).all()
        assert not (labs[len(data.train):] == 1).any()  # the normal glomerulus is inside the union mask
    again = ip.train_replicates(P, data, tmp_path / "gan", progress=False)  # complete: loaded
    assert again[0].inpainter.seconds == reps[0].inpainter.seconds


def test_real_mode_rejects_bad_classes(tmp_path):
    folder = _real_folder(tmp_path / "crops")
    text = (folder / "labels.csv").read_text().replace("nonGS", "other", 1)
    (folder / "labels.csv").write_text(text)
    P = load_params("smoke", {"inpainting.source": str(folder)})
    with pytest.raises(DataError, match="GS or nonGS"):
        ip.load_data(P)


def test_seg_precision_auto_uses_bf16_only_where_the_cpu_has_it(monkeypatch):
    from histolib.train import spade as spade_module

    monkeypatch.setattr(spade_module, "native_bf16", lambda: True)
    assert ip.seg_precision("auto", "effb3_unet") == "fp32"
    assert ip.seg_precision("auto", "unetpp") == "bf16" and ip.seg_precision("fp32", "unet") == "fp32"
    monkeypatch.setattr(spade_module, "native_bf16", lambda: False)  # emulated bf16: far slower than fp32
    assert ip.seg_precision("auto", "unetpp") == "fp32" and ip.seg_precision("bf16", "unet") == "bf16"


def test_inpainting_trainer_resolves_auto_precision(monkeypatch):
    from histolib.train import spade as spade_module
    from histolib.train.inpainting import InpaintOptions, InpaintTrainer

    opts = InpaintOptions(image_size=32, ngf=4, n_blocks=1, rates=(1, 2), ndf=4, d_layers=2, precision="auto")
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(spade_module, "native_bf16", lambda native=native: native)
        assert InpaintTrainer(opts).precision == expected


def test_mask_bank_cleans_scales_and_falls_back_to_real_masks():
    import torch

    from histolib.models.dcgan import DCGANGenerator

    P = load_params("smoke", {"inpainting.mask_size": 16})
    real = np.stack([_disc(32, 16, 16, r) for r in (5, 6, 7, 8)]).astype(np.uint8)

    class Blob(torch.nn.Module):  # a "generator" drawing a disc of random radius
        z_dim, size, training = 4, 16, False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def __call__(self, z):
            yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
            r = 2 + 3 * z[:, :1].abs().clamp(max=1)
            d = ((yy - 8) ** 2 + (xx - 8) ** 2).sqrt()
            return (torch.where(d[None] <= r[:, :, None], 1.0, -1.0))[:, None]

    bank = ip.mask_bank(Blob(), 6, real, P, seed=0)
    assert bank.scaled.shape == (6, 32, 32) and bank.n_real_fallback == 0
    assert bank.scaled_sizes.min() >= bank.real_sizes.min() - 1.5
    assert bank.scaled_sizes.max() <= bank.real_sizes.max() + 1.5
    empty = DCGANGenerator(16, z_dim=4, ngf=2)
    torch.nn.init.zeros_(empty.net[-2].weight)
    torch.nn.init.constant_(empty.net[-2].bias, -5.0)  # tanh(-5): nothing above the threshold
    fb = ip.mask_bank(empty, 3, real, P, seed=0, max_rounds=1)
    assert fb.n_real_fallback == 3 and fb.clean.sum() > 0
