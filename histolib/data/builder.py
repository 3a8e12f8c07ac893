"""The dataset builder: cuts every paper's dataset from the phantom (or real folders) into ``data/prepared``.

Output (one folder per dataset, written under a temporary name and renamed when complete)::

    data/prepared/glomeruli/{gan,train,val,test}/     glomerulus-centred patches, binary masks
    data/prepared/inpainting/{train,val,test}/        tiles, masks 0 other / 1 normal / 2 sclerosed glomerulus
    data/prepared/sclerosed_crops/{train,val,test}/   sclerosed-centred crops of those tiles, binary masks
    data/prepared/compartments/{train,val,test}/      the same tiles, 5-compartment masks
    data/prepared/nuclei/{train,val,test}/            nuclei fields, 16-bit instance masks
    data/prepared/manifest.json                       counts, sizes, source, seed, skipped files, hashes

Every item has its own seed, derived from ``(seed, dataset, split, index)``, so the bytes written
are the same on every run and do not depend on the order of generation.

``manifest.json`` vouches for the folder: it is deleted when a build starts and written last, so an
interrupted or failed build leaves none (and :func:`histolib.data.prepared.is_current` is false). For a
real source it records a fingerprint of the folder's listing (names, sizes, modification times), so
editing the folder makes the build stale. Real folders: bad files are skipped and listed with their
reason (manifest ``skipped``, and one log line each); warnings (``labels.csv`` rows and images that do
not correspond, conversions, non-square images centre-cropped) go to the manifest's ``warnings``; an
empty split is an error naming it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from histolib.data import phantom
from histolib.data.folder import Pairs, listing_fingerprint, load_pairs, save_pairs
from histolib.errors import DataError
from histolib.fileio import complete_dir, write_json
from histolib.paths import data_tag, prepared_dir
from histolib.ops.instance import relabel_sequential

DATASET_IDS = {"glomeruli": 1, "tiles": 2, "nuclei": 3}
SPLIT_IDS = {"gan": 0, "train": 1, "val": 2, "test": 3}
GLOMERULUS_CLASSES = ("GS", "nonGS")  # labels.csv `class` of glomerulus patches: globally sclerosed or not
# Derived datasets whose split sizes are not set by a parameter: an empty split is a warning, not an error.
MAY_BE_EMPTY = ("sclerosed_crops",)


def item_seed(seed: int, dataset: str, split: str, index: int) -> int:
    """A 32-bit seed for one item, independent of every other item's."""
    ss = np.random.SeedSequence([seed, DATASET_IDS[dataset], SPLIT_IDS[split], index])
    return int(ss.generate_state(1)[0])


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of ``image`` (``(H, W, ...)``): non-square images are cropped, never
    squashed, so shapes keep their aspect ratio. Odd leftovers drop the extra pixel at the end."""
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return image[y:y + side, x:x + side]


def _resize(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    image = centre_square(image)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resample = Image.NEAREST if nearest else Image.BOX if image.shape[0] > size else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


def _slide_of(name: str, pairs: Pairs) -> str:
    """The slide id: ``labels.csv``'s ``slide`` column, else the file name up to its last ``-``."""
    slide = pairs.label(name, "slide")
    if slide:
        return slide
    stem = Path(name).stem
    return stem.rsplit("-", 1)[0] if "-" in stem else stem


def split_by_group(groups: list[str], fractions: list[float], seed: int) -> list[list[int]]:
    """Assign whole groups (slides) to splits so that item counts approach ``fractions``.

    Groups are shuffled with ``seed`` and dealt greedily to the split furthest below its target,
    so no slide is ever in two splits.

    Returns:
        One list of item indices per fraction.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.sum() <= 0:
        raise DataError("split fractions must sum to a positive number")
    fractions = fractions / fractions.sum()
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    members: dict[str, list[int]] = {g: [] for g in uniq}
    for i, g in enumerate(groups):
        members[g].append(i)
    out: list[list[int]] = [[] for _ in fractions]
    total = len(groups)
    for k in order:
        g = uniq[k]
        deficit = fractions * total - np.array([len(s) for s in out])
        deficit[fractions == 0] = -np.inf
        out[int(np.argmax(deficit))].extend(members[g])
    return [sorted(s) for s in out]


def _hash_folder(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(folder.rglob("*")) if p.is_file()}


def phantom_calibration_of(P, root: Path | None = None):
    """The calibration the phantom renders with: ``None`` for ``data.calibration: none`` (the default phantom),
    else the :class:`histolib.data.phantom.PhantomCalibration` read from that JSON (relative to ``root``, the
    project root by default) by :func:`histolib.calibration.phantom_calibration`.

    Raises:
        DataError: the file is missing or unreadable, or its kind is not ``data.stain`` (named).
    """
    c = P.data.calibration
    if c in ("none", ""):
        return None
    from histolib.calibration import phantom_calibration
    from histolib.paths import project_root

    path = Path(c) if Path(c).is_absolute() else Path(root or project_root()) / c
    if not path.is_file():
        raise DataError(f"data.calibration: {c!r} not found (looked for {path}); 'none' or a calibration JSON "
                        "written by histolib calibrate-phantom")
    cal = phantom_calibration(path)
    if cal.stain != P.data.stain:
        raise DataError(f"data.calibration: {c} is a {cal.stain!r} calibration but data.stain is {P.data.stain!r}")
    return cal


def _phantom_glomeruli(P, seed: int) -> dict[str, dict]:
    d = P.data
    cal = phantom_calibration_of(P)
    counts = {"gan": d.n_gan, "train": d.n_train, "val": d.n_val, "test": d.n_test}
    out = {}
    for split, n in counts.items():
        images, masks, names, labels = [], [], [], []
        for i in tqdm(range(n), desc=f"glomeruli/{split}", leave=False):
            s = item_seed(seed, "glomeruli", split, i)
            sclerosed = bool(np.random.default_rng(s).random() < d.sclerosed_fraction)
            tile = phantom.glomerulus_patch(s, size=d.patch_size, stain=d.stain, sclerosed=sclerosed,
                                            fill=tuple(d.fill), calibration=cal)
            centre = tile.glomeruli[d.patch_size // 2, d.patch_size // 2]
            # The mask is the centred glomerulus plus any neighbour cut by the border: all glomerulus pixels.
            images.append(tile.image)
            masks.append((tile.glomeruli > 0).astype(np.uint8))
            names.append(f"{split}_{i:05d}.png")
            labels.append({"class": "GS" if tile.glomerulus_class.get(int(centre)) == "sclerosed" else "nonGS",
                           "slide": f"phantom-{split}-{i:05d}"})
        out[split] = {"images": images, "masks": masks, "names": names, "labels": labels}
    return out


def source_fingerprints(P, root: Path) -> dict[str, dict]:
    """The listing fingerprint of every real source folder ``P`` reads (phantom sources have none).

    Returns:
        ``{dataset: {"folder": the parameter's value, "files": n, "listing": hash}}``, see
        :func:`histolib.data.folder.listing_fingerprint`.
    """
    d = P.data
    out = {}
    for dataset, source in (("glomeruli", d.source), ("nuclei", d.nuclei_source)):
        if source != "phantom":
            out[dataset] = {"folder": source, **listing_fingerprint((Path(root) / source).resolve())}
    return out


def _load_real(folder: Path, kind: str, classes=None) -> tuple[Pairs, list[str]]:
    """``load_pairs`` that skips bad files, with every warning it raised collected (for the manifest)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_pairs(folder, kind, strict=False, classes=classes)
    return pairs, list(dict.fromkeys(str(w.message) for w in caught))


def _real_glomeruli(P, seed: int, root: Path) -> tuple[dict[str, dict], list, list[str]]:
    d = P.data
    folder = (root / d.source).resolve()
    pairs, notes = _load_real(folder, "binary", GLOMERULUS_CLASSES)
    slides = [_slide_of(n, pairs) for n in pairs.names]
    parts = split_by_group(slides, d.real_split, seed)
    n_cropped = sum(pairs.images[i].shape[0] != pairs.images[i].shape[1] for i in range(len(pairs)))
    if n_cropped:
        notes.append(f"{folder}: {n_cropped} non-square image(s) centre-cropped to square before resizing "
                     f"to {d.patch_size} px")
    out = {}
    for split, idx in zip(("gan", "train", "val", "test"), parts, strict=True):
        if not idx:
            raise DataError(f"{folder}: real_split {d.real_split} leaves the {split!r} split empty "
                            f"({len(set(slides))} slides); give it a larger fraction or more slides")
        out[split] = {
            "images": [_resize(pairs.images[i], d.patch_size, nearest=False) for i in idx],
            "masks": [_resize(pairs.masks[i], d.patch_size, nearest=True) for i in idx],
            "names": [pairs.names[i] for i in idx],
            "labels": [{"class": pairs.label(pairs.names[i], "class"), "slide": slides[i]} for i in idx],
        }
    return out, pairs.skipped, notes


def _phantom_tiles(P, seed: int) -> tuple[dict, dict, dict]:
    """Tissue tiles -> inpainting (3-class) masks, compartment masks, and sclerosed-centred crops."""
    d = P.data
    cal = phantom_calibration_of(P)
    inpaint, comp, crops = {}, {}, {}
    half = d.crop_size // 2
    for split, n in zip(("train", "val", "test"), d.n_tiles, strict=True):
        inpaint[split] = {"images": [], "masks": [], "names": [], "labels": []}
        comp[split] = {"images": [], "masks": [], "names": [], "labels": []}
        crops[split] = {"images": [], "masks": [], "names": [], "labels": []}
        for i in tqdm(range(n), desc=f"tiles/{split}", leave=False):
            s = item_seed(seed, "tiles", split, i)
            t = phantom.render_tile(s, size=(d.tile_size, d.tile_size), stain=d.stain,
                                    glomerulus_diameter=d.glomerulus_diameter,
                                    sclerosed_fraction=d.sclerosed_fraction, calibration=cal)
            cls = np.zeros(t.glomeruli.shape, np.uint8)
            for gid, kind in t.glomerulus_class.items():
                cls[t.glomeruli == gid] = 2 if kind == "sclerosed" else 1
            name = f"{split}_{i:05d}.png"
            n_scl = sum(k == "sclerosed" for k in t.glomerulus_class.values())
            row = {"slide": f"phantom-{split}-{i:05d}", "n_glomeruli": str(len(t.glomerulus_class)),
                   "n_sclerosed": str(n_scl)}
            for store, mask in ((inpaint, cls), (comp, t.compartments)):
                store[split]["images"].append(t.image)
                store[split]["masks"].append(mask)
                store[split]["names"].append(name)
                store[split]["labels"].append(row)
            padded_img = np.pad(t.image, ((half, half), (half, half), (0, 0)), mode="reflect")
            for gid, kind in sorted(t.glomerulus_class.items()):
                if kind != "sclerosed":
                    continue
                ys, xs = np.nonzero(t.glomeruli == gid)
                cy, cx = int(round(ys.mean())), int(round(xs.mean()))
                # the crop is taken on a reflect-padded tile so glomeruli at the border still centre
                img = padded_img[cy:cy + d.crop_size, cx:cx + d.crop_size]
                m = np.pad(t.glomeruli == gid, half)[cy:cy + d.crop_size, cx:cx + d.crop_size]
                crops[split]["images"].append(np.ascontiguousarray(img))
                crops[split]["masks"].append(m.astype(np.uint8))
                crops[split]["names"].append(f"{split}_{i:05d}_g{gid:02d}.png")
                crops[split]["labels"].append({"slide": row["slide"], "class": "GS"})
    return inpaint, comp, crops


def _phantom_nuclei(P, seed: int) -> dict:
    d = P.data
    out = {}
    for split, n in zip(("train", "val", "test"), d.n_nuclei, strict=True):
        out[split] = {"images": [], "masks": [], "names": [], "labels": []}
        for i in tqdm(range(n), desc=f"nuclei/{split}", leave=False):
            t = phantom.nuclei_field(item_seed(seed, "nuclei", split, i), size=d.nuclei_size,
                                     style=d.nuclei_style, nucleus_diameter=d.nucleus_diameter)
            out[split]["images"].append(t.image)
            out[split]["masks"].append(t.nuclei)
            out[split]["names"].append(f"{split}_{i:05d}.png")
            out[split]["labels"].append({"slide": f"phantom-{split}-{i:05d}", "style": d.nuclei_style,
                                         "source_image": f"{split}_{i:05d}.png"})
    return out


def nuclei_group(name: str, pairs: Pairs) -> str:
    """The split unit of a real nuclei image: ``labels.csv``'s ``slide`` when given, else the image itself.

    (Nuclei file names carry no slide: ``dna-0.png``, ``dna-1.png``, ... are different fields, so the
    glomerulus rule "name up to the last ``-``" would put a whole set in one split.)
    """
    return pairs.label(name, "slide") or name


def _real_nuclei(P, seed: int, root: Path) -> tuple[dict, list, list[str], dict | None]:
    """Real instance-labelled images: split by image (or slide), rescaled so the training split's median
    nucleus has ``data.nucleus_diameter`` px (:func:`histolib.data.nuclei_scale.nucleus_scale`, measured on
    the training masks only; ``data.nuclei_rescale: false`` keeps the pixel size), then cut into
    non-overlapping ``data.nuclei_size`` crops (a side shorter than that is padded with the image's
    background level, see :func:`histolib.data.nuclei_scale.tile_pair`).

    Returns:
        ``(splits, skipped, notes, scale)``: ``scale`` the :class:`NucleusScale` as a dict (``None`` when
        not rescaled); every tile's labels row holds its ``source_image`` and ``slide``.
    """
    from histolib.data.nuclei_scale import nucleus_scale, scaled_tiles

    d = P.data
    folder = (root / d.nuclei_source).resolve()
    pairs, notes = _load_real(folder, "instances")
    groups = [nuclei_group(n, pairs) for n in pairs.names]
    parts = split_by_group(groups, list(d.n_nuclei), seed)
    size = d.nuclei_size
    scale = None
    factor = 1.0
    if d.nuclei_rescale and parts[0]:
        sc = nucleus_scale([pairs.masks[i] for i in parts[0]], d.nucleus_diameter, measured_on="training")
        scale, factor = sc.to_dict(), sc.factor
        notes.append(f"{folder}: every split rescaled {sc.text()}")
    out = {}
    for split, idx in zip(("train", "val", "test"), parts, strict=True):
        t = scaled_tiles([pairs.images[i] for i in idx], [pairs.masks[i] for i in idx],
                         [pairs.names[i] for i in idx], factor, size)
        if t["padded"]:
            notes.append(f"{folder}: {split}: {len(t['padded'])} image(s) shorter than nuclei_size {size} px "
                         f"after rescaling, padded with their background level: "
                         f"{', '.join(t['padded'][:10])}{' ...' if len(t['padded']) > 10 else ''}")
        group_of = dict(zip(pairs.names, groups, strict=True))
        out[split] = {"images": t["images"], "masks": t["masks"], "names": t["names"],
                      "labels": [{"slide": group_of[src], "source_image": src} for src in t["source_image"]]}
    return out, pairs.skipped, notes, scale


def _check_splits(name: str, splits: dict, source: str) -> list[str]:
    """An empty split is an error naming it (a warning for :data:`MAY_BE_EMPTY` datasets)."""
    empty = [split for split, items in splits.items() if not items["names"]]
    if not empty:
        return []
    where = "the phantom" if source == "phantom" else source
    msg = (f"dataset {name!r} ({where}): split(s) {', '.join(map(repr, empty))} empty "
           f"(counts {({s: len(v['names']) for s, v in splits.items()})})")
    if name in MAY_BE_EMPTY:
        return [msg]
    hint = ("raise its count in params.yaml (data.n_*)" if source == "phantom" else
            "give it a larger fraction, more images or smaller crops")
    raise DataError(f"{msg}: {hint}")


def _write_dataset(prepared: Path, name: str, splits: dict, mask_kind: str) -> dict:
    with complete_dir(prepared / name) as tmp:
        for split, items in splits.items():
            save_pairs(tmp / split, items["images"], items["masks"], items["names"], items["labels"] or None,
                       mask_kind=mask_kind)
        hashes = _hash_folder(tmp)
    sizes = {split: sorted({f"{im.shape[1]}x{im.shape[0]}" for im in items["images"]})
             for split, items in splits.items()}
    digest = hashlib.sha256("".join(f"{k}{v}" for k, v in hashes.items()).encode()).hexdigest()[:16]
    return {"counts": {s: len(v["names"]) for s, v in splits.items()}, "sizes": sizes, "mask_kind": mask_kind,
            "digest": digest, "files": hashes}


def build_all(P, root: Path, prepared: Path | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Build every dataset for the resolved params ``P`` and write the manifest.

    The manifest is removed first and written last, so only a complete build has one. Real folders:
    each skipped file is logged with its reason and listed in the manifest.

    Args:
        P: :class:`histolib.config.Params` (uses ``P.data`` and ``P.seed``).
        root: the project root (real-data folders are relative to it).
        prepared: output folder; default :func:`histolib.paths.prepared_dir` (``<root>/data/prepared/<profile>``,
            or ``.../prepared/real/<tag>/<profile>`` when ``P`` reads real folders).
        log: where progress, skipped files and warnings are reported (one line each).

    Returns:
        The manifest dict (also written to ``manifest.json``).

    Raises:
        DataError: a bad real folder (see :func:`histolib.data.folder.load_pairs`) or an empty split.
    """
    prepared = Path(prepared or prepared_dir(P.profile, root, data_tag(P)))
    prepared.mkdir(parents=True, exist_ok=True)
    # from here on, the datasets may be a mix of old and new: no manifest may vouch for them
    (prepared / "manifest.json").unlink(missing_ok=True)
    d, seed = P.data, P.seed
    manifest = {"profile": P.profile, "seed": seed, "data_params": P.resolved["data"], "datasets": {},
                "skipped": {}, "sources": source_fingerprints(P, root), "warnings": {}}

    def real_report(name: str, skipped: list, notes: list[str]) -> None:
        manifest["skipped"][name] = [{"file": f, "reason": r} for f, r in skipped]
        for f, r in skipped:
            log(f"  {name}: skipped {f}: {r}")
        if notes:
            manifest["warnings"][name] = notes
        for note in notes:
            log(f"  {name}: warning: {note}")

    if d.source == "phantom":
        glom, skipped, notes = _phantom_glomeruli(P, seed), [], []
    else:
        glom, skipped, notes = _real_glomeruli(P, seed, root)
    real_report("glomeruli", skipped, notes)
    _check_splits("glomeruli", glom, d.source)
    manifest["datasets"]["glomeruli"] = _write_dataset(prepared, "glomeruli", glom, "binary")
    manifest["datasets"]["glomeruli"]["source"] = d.source
    log(f"glomeruli ({d.source}): {manifest['datasets']['glomeruli']['counts']}, skipped {len(skipped)}")

    inpaint, comp, crops = _phantom_tiles(P, seed)
    for name, splits, kind in (("inpainting", inpaint, "classes"), ("compartments", comp, "classes"),
                               ("sclerosed_crops", crops, "binary")):
        if notes := _check_splits(name, splits, "phantom"):
            manifest["warnings"][name] = notes
            log(f"  {name}: warning: {notes[0]}")
        manifest["datasets"][name] = _write_dataset(prepared, name, splits, kind)
        manifest["datasets"][name]["source"] = "phantom"
        log(f"{name} (phantom): {manifest['datasets'][name]['counts']}")

    if d.nuclei_source == "phantom":
        nuc, skipped, notes, nuc_scale = _phantom_nuclei(P, seed), [], [], None
    else:
        nuc, skipped, notes, nuc_scale = _real_nuclei(P, seed, root)
    real_report("nuclei", skipped, notes)
    _check_splits("nuclei", nuc, d.nuclei_source)
    manifest["datasets"]["nuclei"] = _write_dataset(prepared, "nuclei", nuc, "instances")
    manifest["datasets"]["nuclei"]["source"] = d.nuclei_source
    manifest["datasets"]["nuclei"]["scale"] = nuc_scale  # None: phantom (drawn at nucleus_diameter) or not rescaled
    log(f"nuclei ({d.nuclei_source}): {manifest['datasets']['nuclei']['counts']}, skipped {len(skipped)}")
    write_json(prepared / "manifest.json", manifest)
    return manifest
