"""The dataset builder: same bytes for the same seed, real folders split by slide, skipped files counted."""

import json

import numpy as np
import pytest

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
