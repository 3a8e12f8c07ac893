"""The loaders on the real development sets in ../shared/data/real (skipped cleanly when absent).

Nothing here writes or commits anything derived from their pixels: only shapes, types and nucleus
sizes are checked against the sets' README.
"""

from pathlib import Path

import numpy as np
import pytest

from histolib.data.folder import load_pairs
from histolib.data.nuclei_scale import nucleus_scale, scaled_tiles

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"


def _folder(name: str) -> Path:
    folder = REAL / name
    if not (folder / "images").is_dir():
        pytest.skip(f"real development set {folder} absent")
    return folder


@pytest.mark.parametrize("name,lo,hi", [("fluo_dsb", 8, 40), ("fluo_u2os", 60, 200), ("monuseg", 12, 40)])
def test_real_nuclei_sets_load_and_measure(name, lo, hi):
    pairs = load_pairs(_folder(name), "instances", limit=2)
    for im, m in zip(pairs.images, pairs.masks, strict=True):
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 and m.shape == im.shape[:2]
        assert m.dtype == np.int32 and m.max() > 0
    if name.startswith("fluo"):  # grey stored as RGB
        assert all((np.asarray(im)[..., 0] == np.asarray(im)[..., 2]).all() for im in pairs.images)
    s = nucleus_scale(pairs.masks, 9.0)
    assert lo < s.median_diameter < hi  # the README: ~17, ~110 and 22 px
    t = scaled_tiles(pairs.images, pairs.masks, pairs.names, s.factor, 64)
    assert t["images"] and all(x.shape == (64, 64, 3) for x in t["images"])


def test_real_glomerulus_crops_load_with_classes():
    pairs = load_pairs(_folder("glomeruli_crops"), "binary", limit=3, classes=("GS", "nonGS"))
    assert pairs.images.shape[1:] == (224, 224, 3) and set(np.unique(pairs.masks)) <= {0, 1}
    assert all(pairs.label(n, "class") in ("GS", "nonGS") for n in pairs.names)
