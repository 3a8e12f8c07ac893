"""Read the builder's output, ``data/prepared/<dataset>/<split>/``."""

from __future__ import annotations

import json
from pathlib import Path

from histolib.data.folder import Pairs, load_pairs
from histolib.errors import DataError
from histolib.paths import data_tag, prepared_dir

# dataset -> (mask kind, number of classes): what each folder's masks hold.
DATASETS = {
    "glomeruli": ("binary", 2),          # glomerulus-centred patches (papers 000, 001)
    "inpainting": ("classes", 3),        # tiles: 0 other, 1 normal glomerulus, 2 sclerosed (paper 003)
    "sclerosed_crops": ("binary", 2),    # sclerosed-centred crops cut from the tiles (paper 003)
    "compartments": ("classes", 5),      # tiles: 5 compartments (paper 002)
    "nuclei": ("instances", 0),          # nuclei fields with instance maps (paper 004)
}
SPLITS = {
    "glomeruli": ("gan", "train", "val", "test"),
    "inpainting": ("train", "val", "test"),
    "sclerosed_crops": ("train", "val", "test"),
    "compartments": ("train", "val", "test"),
    "nuclei": ("train", "val", "test"),
}


def load_split(dataset: str, split: str, root: str | Path) -> Pairs:
    """Load one split of a prepared dataset.

    Args:
        dataset: a key of :data:`DATASETS`.
        split: e.g. ``train``; see :data:`SPLITS`.
        root: the prepared folder of a profile, as returned by :func:`ensure_prepared`.

    Raises:
        DataError: unknown dataset/split, or the split was not built (run ``histolib build-data``).
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; one of {list(DATASETS)}")
    if split not in SPLITS[dataset]:
        raise DataError(f"dataset {dataset!r} has no split {split!r}; one of {SPLITS[dataset]}")
    folder = Path(root) / dataset / split
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist: build the data first (`histolib build-data` or `dvc repro data`)")
    kind, n_classes = DATASETS[dataset]
    return load_pairs(folder, kind, n_classes or None)


def load_manifest(root: str | Path) -> dict:
    """The builder's ``manifest.json`` (counts, sizes, source, seed, skipped files, hashes)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: build the data first (`histolib build-data`)")
    return json.loads(path.read_text())


def is_current(root: str | Path, P, project: str | Path | None = None) -> bool:
    """True when ``root`` holds a complete build made with ``P``'s seed and ``data`` parameters from
    source folders whose listing (names, sizes, modification times) has not changed since.

    Args:
        root: the prepared folder of a profile.
        P: resolved params.
        project: the project root real-data folders are relative to (default: this project's).
    """
    from histolib.data.builder import source_fingerprints
    from histolib.paths import project_root

    path = Path(root) / "manifest.json"
    if not path.is_file():  # the builder deletes it first and writes it last: no manifest, no complete build
        return False
    m = json.loads(path.read_text())
    if m.get("seed") != P.seed or m.get("data_params") != json.loads(json.dumps(P.resolved["data"])):
        return False
    return m.get("sources", {}) == source_fingerprints(P, Path(project or project_root()))


def ensure_prepared(P, root: Path | None = None, log=print) -> Path:
    """The prepared-data folder for ``P``'s profile, built first if missing or made with other parameters.

    Under ``dvc repro`` the ``data`` stage has already built it and this only checks the manifest;
    in JupyterLab or under nbval it builds what the notebook needs (seconds at ``smoke``).

    Returns:
        ``data/prepared/<profile>`` (``data/prepared/real/<tag>/<profile>`` for real folders).
    """
    from histolib.data.builder import build_all
    from histolib.paths import project_root

    root = root or project_root()
    folder = prepared_dir(P.profile, root, data_tag(P))
    if not is_current(folder, P, root):
        log(f"building data for profile {P.profile!r} into {folder} ...")
        build_all(P, root, prepared=folder, log=log)
    return folder
