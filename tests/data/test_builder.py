"""The dataset builder: same bytes for the same seed, real folders split by slide, skipped files counted."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from histolib.config import load_params
from histolib.data.builder import build_all, split_by_group
from histolib.data.folder import save_pairs
from histolib.data.prepared import ensure_prepared, is_current, load_split
from histolib.errors import DataError

TINY = {"data.n_gan": 2, "data.n_train": 3, "data.n_val": 2, "data.n_test": 2, "data.n_tiles": [2, 1, 1],
        "data.n_nuclei": [2, 1, 1]}


def _build(tmp_path, name, **over):
    P = load_params("smoke", {**TINY, **over})
    return P, build_all(P, tmp_path, prepared=tmp_path / name, log=lambda *_: None)


def test_same_seed_same_bytes_and_layout(tmp_path):
    _, a = _build(tmp_path, "a")
    _, b = _build(tmp_path, "b")
    assert {k: v["digest"] for k, v in a["datasets"].items()} == {k: v["digest"] for k, v in b["datasets"].items()}
    assert a["datasets"]["glomeruli"]["counts"] == {"gan": 2, "train": 3, "val": 2, "test": 2}
    pairs = load_split("glomeruli", "train", tmp_path / "a")
    assert pairs.images.shape == (3, 32, 32, 3) and set(np.unique(pairs.masks)) <= {0, 1}
    nuclei = load_split("nuclei", "train", tmp_path / "a")
    assert nuclei.masks[0].max() > 1  # instance ids, not a binary mask
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["profile"] == "smoke" and manifest["datasets"]["glomeruli"]["files"]


def test_other_seed_other_data(tmp_path, monkeypatch):
    P = load_params("smoke", TINY)
    a = build_all(P, tmp_path, prepared=tmp_path / "a", log=lambda *_: None)
    object.__setattr__(P, "seed", 1)
    b = build_all(P, tmp_path, prepared=tmp_path / "b", log=lambda *_: None)
    assert a["datasets"]["glomeruli"]["digest"] != b["datasets"]["glomeruli"]["digest"]


def test_split_by_group_never_shares_a_slide():
    groups = [f"s{i // 3}" for i in range(30)]  # 10 slides of 3 images
    parts = split_by_group(groups, [0.3, 0.3, 0.15, 0.25], seed=0)
    assert sorted(i for p in parts for i in p) == list(range(30))
    slides = [{groups[i] for i in p} for p in parts]
    assert all(not (slides[a] & slides[b]) for a in range(4) for b in range(a + 1, 4))


def test_real_folder_mode_counts_skipped_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    images = rng.integers(0, 255, (n, 40, 40, 3), dtype=np.uint8)
    masks = np.zeros((n, 40, 40), np.uint8)
    masks[:, 10:30, 10:30] = 1
    names = [f"slide{i % 6}-{i}.png" for i in range(n)]
    save_pairs(tmp_path / "real", images, masks, names)
    (tmp_path / "real" / "images" / "slide0-0.png").write_bytes(b"broken")
    P, m = _build(tmp_path, "out", **{"data.source": "real"})
    counts = m["datasets"]["glomeruli"]["counts"]
    assert sum(counts.values()) == n - 1
    assert m["skipped"]["glomeruli"][0]["file"] == "slide0-0.png"
    assert load_split("glomeruli", "train", tmp_path / "out").images.shape[1:] == (32, 32, 3)


def test_empty_real_folder_is_an_error(tmp_path):
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "real" / "masks").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        _build(tmp_path, "out", **{"data.source": "real"})


def test_ensure_prepared_rebuilds_only_when_stale(tmp_path):
    P = load_params("smoke", TINY)
    calls = []
    folder = ensure_prepared(P, root=tmp_path, log=calls.append)
    assert is_current(folder, P) and calls
    calls.clear()
    ensure_prepared(P, root=tmp_path, log=calls.append)
    assert not calls


# --- issue 9 (integrity): splits by patient, manifest written last, source listing, real-data edge cases ------

def _real_folder(folder, n=12, size=(40, 40), names=None, masks=None):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (n, *size, 3), dtype=np.uint8)
    if masks is None:
        masks = np.zeros((n, *size), np.uint8)
        masks[:, 10:30, 10:30] = 1
    save_pairs(folder, images, masks, names or [f"img{i:02d}.png" for i in range(n)])
    return names or [f"img{i:02d}.png" for i in range(n)]


def test_patients_never_in_two_splits_with_semicolon_labels(tmp_path):
    names = _real_folder(tmp_path / "real", n=16)
    # spreadsheet export: ';' delimiter; the patient is only in the slide column, not in the file name
    rows = [f"{n};{'GS' if i % 3 == 0 else 'nonGS'};patient{i % 4}" for i, n in enumerate(names)]
    (tmp_path / "real" / "labels.csv").write_text("file;class;slide\n" + "\n".join(rows) + "\n")
    _, m = _build(tmp_path, "out", **{"data.source": "real"})
    seen = {}
    for split in ("gan", "train", "val", "test"):
        pairs = load_split("glomeruli", split, tmp_path / "out")
        for name in pairs.names:
            seen.setdefault(pairs.label(name, "slide"), set()).add(split)
    assert set(seen) == {f"patient{i}" for i in range(4)}
    assert all(len(splits) == 1 for splits in seen.values()), seen


def test_labels_csv_without_file_column_stops_the_build(tmp_path):
    names = _real_folder(tmp_path / "real")
    (tmp_path / "real" / "labels.csv").write_text("".join(f"{n},GS,p{i % 4}\n" for i, n in enumerate(names)))
    with pytest.raises(DataError, match=r"labels\.csv.*no 'file' column"):
        _build(tmp_path, "out", **{"data.source": "real"})


def test_interrupted_build_leaves_no_manifest(tmp_path, monkeypatch):
    P, _ = _build(tmp_path, "out")
    assert is_current(tmp_path / "out", P)
    import histolib.data.builder as B

    real_write, calls = B._write_dataset, []

    def failing_write(prepared, name, splits, kind):
        calls.append(name)
        if len(calls) == 2:  # glomeruli rewritten with the new parameters, then the build dies
            raise KeyboardInterrupt
        return real_write(prepared, name, splits, kind)

    monkeypatch.setattr(B, "_write_dataset", failing_write)
    P2 = load_params("smoke", {**TINY, "data.n_train": 4})
    with pytest.raises(KeyboardInterrupt):
        build_all(P2, tmp_path, prepared=tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not is_current(tmp_path / "out", P) and not is_current(tmp_path / "out", P2)


def test_changed_source_listing_makes_the_build_stale(tmp_path):
    _real_folder(tmp_path / "real")
    source = {"data.source": str(tmp_path / "real")}  # absolute: is_current needs no project root
    P, m = _build(tmp_path, "out", **source)
    assert is_current(tmp_path / "out", P)
    img = tmp_path / "real" / "images" / "img03.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(img)  # same name, new content
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert not is_current(tmp_path / "out", P)
    _, m = _build(tmp_path, "out", **source)
    assert is_current(tmp_path / "out", P) and m["sources"]["glomeruli"]["files"] == 24
    (tmp_path / "real" / "labels.csv").write_text("file,class\nimg00.png,GS\n")  # a new file
    assert not is_current(tmp_path / "out", P)


def test_real_nuclei_crop_without_background_keeps_every_nucleus(tmp_path):
    inst = np.zeros((64, 64), np.int32)
    inst[:32, :32] = 5  # the top-left 32 px crop is covered by nuclei 5, 7 and 9: no background pixel
    inst[:16, 16:32] = 7
    inst[16:32, :16] = 9
    inst[40:50, 40:50] = 11
    save_pairs(tmp_path / "nuc", np.zeros((3, 64, 64, 3), np.uint8), [inst] * 3,
               ["a-1.png", "b-1.png", "c-1.png"], mask_kind="instances")
    P = load_params("smoke", {**TINY, "data.nuclei_source": "nuc", "data.nuclei_size": 32, "data.nuclei_rescale": False})
    build_all(P, tmp_path, prepared=tmp_path / "out", log=lambda *_: None)
    pairs = load_split("nuclei", "train", tmp_path / "out")
    crop = pairs.masks[pairs.names.index(next(n for n in pairs.names if n.endswith("_y0000_x0000.png")))]
    assert sorted(np.unique(crop).tolist()) == [1, 2, 3]  # three nuclei, none turned into background
    other = pairs.masks[pairs.names.index(next(n for n in pairs.names if n.endswith("_y0032_x0032.png")))]
    assert sorted(np.unique(other).tolist()) == [0, 1]  # background stays 0


def test_decompression_bomb_is_skipped_and_named_in_the_manifest(tmp_path, monkeypatch):
    _real_folder(tmp_path / "real", size=(16, 16))
    save_pairs(tmp_path / "real", np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 64, 64), np.uint8),
               ["bomb-1.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 > 2 x 1000: an error in PIL
    _, m = _build(tmp_path, "out", **{"data.source": "real"})
    skipped = m["skipped"]["glomeruli"]
    assert [s["file"] for s in skipped] == ["bomb-1.png"] and "decompression-bomb" in skipped[0]["reason"]
    assert sum(m["datasets"]["glomeruli"]["counts"].values()) == 12


def test_empty_split_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"'inpainting'.*'val'.*empty"):
        _build(tmp_path, "out", **{"data.n_tiles": [2, 0, 1]})
    with pytest.raises(DataError, match=r"'nuclei'.*'test'.*empty"):
        _build(tmp_path, "out2", **{"data.n_nuclei": [2, 1, 0]})
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_non_square_real_image_is_centre_cropped_not_squashed(tmp_path):
    yy, xx = np.mgrid[:40, :80]
    disc = ((yy - 20) ** 2 + (xx - 40) ** 2 <= 15 ** 2).astype(np.uint8)  # a round glomerulus, 40 x 80 image
    names = [f"s{i % 6}-{i}.png" for i in range(12)]
    _real_folder(tmp_path / "real", n=12, size=(40, 80), names=names, masks=np.stack([disc] * 12))
    _, m = _build(tmp_path, "out", **{"data.source": "real"})
    mask = load_split("glomeruli", "train", tmp_path / "out").masks[0]
    ys, xs = np.nonzero(mask)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert mask.shape == (32, 32) and abs(int(height) - int(width)) <= 1  # squashing made it 2:1
    assert "centre-cropped" in " ".join(m["warnings"]["glomeruli"])


def test_build_data_prints_each_skipped_file_with_its_reason(tmp_path, capsys):
    from histolib.cli import main

    _real_folder(tmp_path / "real")
    (tmp_path / "real" / "images" / "img04.png").write_bytes(b"broken")
    sets = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    argv = ["build-data", "--profile", "smoke", "--out", str(tmp_path / "out"),
            "--set", f"data.source={tmp_path / 'real'}"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "skipped img04.png" in out and "unreadable image" in out


def _disc_mask(shape, radius, first_id, n=3):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape, np.uint16)
    for k in range(n):
        cy, cx = (k + 1) * shape[0] // (n + 1), (k + 1) * shape[1] // (n + 1)
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = first_id + k
    return m


def _fluo_folder(folder, radii, shapes):
    """A tiny folder shaped like fluo_dsb/fluo_u2os: grey stored as RGB (one file 16-bit grey), 16-bit
    instance masks with ids above 255, non-square images; image i has nuclei of radius radii[i]."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (r, shape) in enumerate(zip(radii, shapes, strict=True)):
        m = _disc_mask(shape, r, 1000 + 10 * i)
        grey = np.where(m > 0, 180, 12).astype(np.uint8)
        if i == 0:
            Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "images" / f"im{i:02d}.png")  # 16-bit grey
        else:
            Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / "images" / f"im{i:02d}.png")
        Image.fromarray(m).save(folder / "masks" / f"im{i:02d}.png")


def test_real_fluorescence_folder_scaled_by_training_masks_only(tmp_path):
    from histolib.data.nuclei_scale import equivalent_diameters
    from histolib.data.folder import read_mask

    radii = [4, 5, 6, 7, 8, 9, 10, 11, 12]
    shapes = [(60, 90), (48, 48), (70, 64), (64, 100), (80, 80), (90, 60), (96, 96), (100, 120), (110, 90)]
    _fluo_folder(tmp_path / "fluo", radii, shapes)
    _, m = _build(tmp_path, "out", **{"data.nuclei_source": "fluo", "data.nuclei_size": 32,
                                      "data.n_nuclei": [5, 2, 2]})
    scale = m["datasets"]["nuclei"]["scale"]
    train = load_split("nuclei", "train", tmp_path / "out")
    train_src = sorted({train.label(n, "source_image") for n in train.names})
    every = sorted(p.name for p in (tmp_path / "fluo" / "images").iterdir())
    d = {n: equivalent_diameters([read_mask(tmp_path / "fluo" / "masks" / n, "instances")]) for n in every}
    train_median = float(np.median(np.concatenate([d[n] for n in train_src])))
    all_median = float(np.median(np.concatenate(list(d.values()))))
    assert train_median != pytest.approx(all_median)  # the check below can tell the two apart
    assert scale["median_diameter"] == pytest.approx(train_median) and scale["target"] == 7
    assert scale["factor"] == pytest.approx(7 / train_median)
    for split in ("train", "val", "test"):
        pairs = load_split("nuclei", split, tmp_path / "out")
        assert pairs.images.shape[1:] == (32, 32, 3)
        assert (pairs.images[..., 0] == pairs.images[..., 2]).all()  # grey stays grey
        srcs = {pairs.label(n, "source_image") for n in pairs.names}
        assert srcs and (split == "train") == (srcs == set(train_src))
        # every split rescaled by the training factor: its nuclei measure its own median times that factor
        own = float(np.median(np.concatenate([d[n] for n in srcs])))
        got = float(np.median(equivalent_diameters(list(pairs.masks))))
        assert got == pytest.approx(own * scale["factor"], rel=0.25)
    # padded, not dropped: the 48 px image shrinks below 32 px at this factor and still gives a tile
    assert any("padded" in w for w in m["warnings"]["nuclei"])
    _, kept = _build(tmp_path, "raw", **{"data.nuclei_source": "fluo", "data.nuclei_size": 32,
                                         "data.n_nuclei": [5, 2, 2], "data.nuclei_rescale": False})
    assert kept["datasets"]["nuclei"]["scale"] is None


def test_real_he_folder_split_by_labels_slide(tmp_path):
    """MoNuSeg-shaped: RGB H&E, 16-bit instance masks, labels.csv with a slide column (two images share one)."""
    rng = np.random.default_rng(1)
    names = [f"TCGA-{i:02d}-01Z-00-DX1.png" for i in range(8)]
    masks = [_disc_mask((64, 64), 5, 300) for _ in names]
    images = rng.integers(120, 230, (8, 64, 64, 3), dtype=np.uint8)
    save_pairs(tmp_path / "he", images, masks, names, [{"slide": "shared" if i < 2 else f"s{i}"} for i in range(8)],
               mask_kind="instances")
    _, m = _build(tmp_path, "out", **{"data.nuclei_source": "he", "data.nuclei_size": 32, "data.n_nuclei": [4, 2, 2]})
    where = {}
    for split in ("train", "val", "test"):
        pairs = load_split("nuclei", split, tmp_path / "out")
        for n in pairs.names:
            where.setdefault(pairs.label(n, "source_image"), set()).add(split)
    assert all(len(v) == 1 for v in where.values()) and len(where) == 8
    assert where[names[0]] == where[names[1]]  # one slide, one split
    assert m["datasets"]["nuclei"]["scale"]["median_diameter"] == pytest.approx(2 * np.sqrt(81 / np.pi))
