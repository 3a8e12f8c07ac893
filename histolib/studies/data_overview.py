"""Notebook 00: the datasets at a glance, phantom realism against real crops, and a sim-to-real check.

Everything the notebook does beyond a call and a plot lives here, with tests in
``tests/studies/test_data_overview.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image
from skimage.color import rgb2hsv

from histolib import viz
from histolib.data.folder import Pairs, load_pairs
from histolib.data.prepared import DATASETS, load_split


def dataset_grid(root: Path, dataset: str, split: str = "train", n: int = 8):
    """A figure: ``n`` images of one prepared split above their masks (overlay or colour map)."""
    pairs = load_split(dataset, split, root)
    k = min(n, len(pairs))
    kind, n_classes = DATASETS[dataset]
    images = [pairs.images[i] for i in range(k)]
    if kind == "binary":
        masks = [viz.overlay(pairs.images[i], pairs.masks[i]) for i in range(k)]
        label = "mask overlay"
    elif kind == "classes":
        masks = [viz.label_map_to_rgb(pairs.masks[i], n_classes) for i in range(k)]
        label = f"{n_classes}-class map"
    else:
        masks = [viz.instances_to_rgb(pairs.masks[i]) for i in range(k)]
        label = "instances"
    return viz.image_grid([images, masks], row_labels=["image", label],
                          title=f"{dataset} / {split} ({len(pairs)} items, {images[0].shape[1]} px)")


def structure_and_deformations(image: np.ndarray, mask: np.ndarray, seeds=(0, 1, 2), sigma: float = 20.0,
                               threshold: float = 0.1):
    """A figure: one patch, its texture mask and structure label map, and deformations of both.

    ``sigma`` is in pixels of a 256-px patch (paper 000) and is scaled to the patch's size, so the
    deformation has the same relative magnitude at every profile.
    """
    from histolib.ops.deform import elastic_deform_numpy
    from histolib.ops.structure import structure_label_map, texture_mask

    scaled = sigma * image.shape[0] / 256
    smap = structure_label_map(image, mask, threshold)
    top = [image, texture_mask(image, threshold).astype(np.uint8) * 255, viz.label_map_to_rgb(smap)]
    deformed_img, deformed_map = [], []
    for s in seeds:
        di, dm = elastic_deform_numpy(image, smap, seed=s, sigma=scaled)
        deformed_img.append(di)
        deformed_map.append(viz.label_map_to_rgb(dm))
    return viz.image_grid([top, deformed_img, deformed_map],
                          row_labels=["patch", "deformed", "deformed map"],
                          col_labels=["image", f"texture (S > {threshold})", "structure map"],
                          title=f"Structure label map and grid deformations (sigma {scaled:.1f} px)")


def colour_statistics(images, masks=None, white: float = 0.1) -> dict[str, np.ndarray]:
    """Per-image colour statistics inside tissue (HSV saturation above ``white``), one
    :func:`histolib.calibration.tissue_colour` per image.

    Args:
        images: ``(N, H, W, 3) uint8`` or a list of such images.
        masks: optional binary masks; when given, statistics are also taken inside them.

    Returns:
        Arrays of length N: ``hue``, ``saturation``, ``value`` (tissue means), ``od_mean`` (mean optical
        density over RGB inside tissue), ``tissue_fraction`` and, with masks, ``sat_inside``.
    """
    from histolib.calibration import tissue_colour

    out: dict[str, list] = {k: [] for k in ("hue", "saturation", "value", "od_mean", "tissue_fraction")}
    if masks is not None:
        out["sat_inside"] = []
    for i, im in enumerate(images):
        hsv = rgb2hsv(np.asarray(im))
        for k, v in tissue_colour(im, white, hsv=hsv).items():
            out[k].append(v)
        if masks is not None:
            m = np.asarray(masks[i]) > 0
            out["sat_inside"].append(float(hsv[..., 1][m].mean()) if m.any() else float("nan"))
    return {k: np.asarray(v) for k, v in out.items()}


def equivalent_diameter_fraction(masks) -> np.ndarray:
    """Equivalent diameter of each mask's foreground, ``sqrt(4 A / pi)``, as a fraction of the image side."""
    return np.array([np.sqrt(4 * (np.asarray(m) > 0).sum() / np.pi) / np.asarray(m).shape[0] for m in masks])


def compare_statistics(phantom: dict, real: dict) -> list[dict]:
    """Rows ``statistic, phantom median [IQR], real median [IQR]`` for a side-by-side table."""
    rows = []
    for key in phantom:
        if key not in real:
            continue
        p, r = phantom[key][~np.isnan(phantom[key])], real[key][~np.isnan(real[key])]
        fmt = lambda v: f"{np.median(v):.3f} [{np.percentile(v, 25):.3f}, {np.percentile(v, 75):.3f}]"  # noqa: E731
        rows.append({"statistic": key, "phantom": fmt(p), "real": fmt(r),
                     "difference of medians": float(np.median(p) - np.median(r))})
    return rows


def load_real_crops(folder: Path, limit: int) -> Pairs | None:
    """The real glomerulus crops, or ``None`` when the folder is absent (the check is skipped)."""
    if not (Path(folder) / "images").is_dir():
        return None
    return load_pairs(folder, "binary", limit=limit)


def rescale_to_glomerulus_size(pairs: Pairs, target_diameter: float, multiple: int = 1) -> Pairs:
    """Resize each crop so its glomerulus' equivalent diameter becomes ``target_diameter`` px.

    Real crops are cut tight around the glomerulus and resized to 224 px, so their pixel size varies; the
    phantom patches have a fixed glomerulus-to-patch ratio. Matching the glomerulus diameter puts both at
    the same scale before a phantom-trained U-Net sees the real images. Sides are rounded to ``multiple``.
    """
    images, masks = [], []
    for im, m in zip(pairs.images, pairs.masks, strict=True):
        d = np.sqrt(4 * (np.asarray(m) > 0).sum() / np.pi)
        scale = target_diameter / max(d, 1.0)
        side = max(multiple, int(round(im.shape[0] * scale / multiple)) * multiple)
        images.append(np.asarray(Image.fromarray(im).resize((side, side), Image.BOX if scale < 1 else Image.BILINEAR)))
        masks.append(np.asarray(Image.fromarray(np.asarray(m)).resize((side, side), Image.NEAREST)))
    return Pairs(images, masks, list(pairs.names), dict(pairs.labels))


def all_foreground_baseline(pairs: Pairs) -> dict[str, float]:
    """Scores of the trivial segmenter that calls every pixel glomerulus (the real crops are tight)."""
    from histolib.metrics.segmentation import segmentation_scores

    target = np.concatenate([np.asarray(m).ravel() for m in pairs.masks])
    return segmentation_scores(np.ones_like(target), target)


def sim_to_real(train: Pairs, val: Pairs, test: Pairs, real: Pairs | None, cfg, seeds, out_dir: Path,
                progress: bool = True) -> list[dict]:
    """Train a U-Net on phantom patches only (one per seed) and score it on phantom test and real crops.

    Returns:
        One row per seed: ``seed``, ``phantom_dice`` (+ precision/recall), and with real crops
        ``real_dice``, ``real_precision``, ``real_recall``; plus ``best_epoch``.
    """
    from histolib.train.segmentation import evaluate, train_unet

    rows = []
    for seed in seeds:
        res = train_unet(train, val, cfg, seed, Path(out_dir) / f"seed{seed}", progress=progress)
        row = {"seed": seed, "best_epoch": res.best_epoch}
        row.update({f"phantom_{k}": v for k, v in evaluate(res.model, test).items()})
        if real is not None:
            row.update({f"real_{k}": v for k, v in evaluate(res.model, real).items()})
        rows.append(row)
    return rows


def sim_to_real_summary(rows: list[dict], real: Pairs | None) -> tuple[dict, list[dict]]:
    """Summaries over seeds of :func:`sim_to_real` rows, and the table the notebook shows.

    Args:
        rows: one row per seed from :func:`sim_to_real`.
        real: the (rescaled) real crops the rows were scored on, or ``None`` when absent.

    Returns:
        ``(summary, table)``: ``summary["phantom_test_dice"]`` and, with real crops,
        ``real_dice``/``real_precision``/``real_recall`` (each :func:`summarize`'s dict) and
        ``real_baseline`` (:func:`all_foreground_baseline`); ``table`` has one row per evaluation
        (phantom test; with real crops also the U-Net and the baseline on them).
    """
    from histolib.metrics.segmentation import summarize

    summary = {"phantom_test_dice": summarize([r["phantom_dice"] for r in rows])}
    table = [{"evaluated on": "phantom test", "model": "U-Net (phantom-trained)",
              "Dice": viz.fmt_mean_std(summary["phantom_test_dice"]["mean"], summary["phantom_test_dice"]["std"])}]
    if real is None:
        return summary, table
    for key in ("dice", "precision", "recall"):
        summary[f"real_{key}"] = summarize([r[f"real_{key}"] for r in rows])
    summary["real_baseline"] = all_foreground_baseline(real)
    where = f"real crops (n={len(real)})"
    table += [{"evaluated on": where, "model": "U-Net (phantom-trained)",
               "Dice": viz.fmt_mean_std(summary["real_dice"]["mean"], summary["real_dice"]["std"])},
              {"evaluated on": where, "model": "all-glomerulus baseline",
               "Dice": viz.fmt_mean_std(summary["real_baseline"]["dice"], float("nan"))}]
    return summary, table


def training_curves(folder: Path, seeds) -> pd.DataFrame:
    """Per-epoch training loss and validation scores of every seed's run, from its ``log.jsonl``."""
    from histolib.train.monitor import TrainingLog

    rows = [{"seed": s, "epoch": r.pop("step"), **r}
            for s in seeds for r in TrainingLog.read_file(Path(folder) / f"seed{s}" / "log.jsonl")]
    return pd.DataFrame(rows)


def curves_figure(curves: pd.DataFrame):
    """Training loss and validation Dice per epoch, one line per seed."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for seed, g in curves.groupby("seed"):
        axes[0].plot(g["epoch"], g["train_loss"], marker="o", label=f"seed {seed}")
        axes[1].plot(g["epoch"], g["val_dice"], marker="o", label=f"seed {seed}")
    axes[0].set(xlabel="epoch", ylabel="training loss (CE + Dice)", title="U-Net training")
    axes[1].set(xlabel="epoch", ylabel="validation Dice (phantom)", title="checkpoint choice", ylim=(0, 1))
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


COLOUR_STATS = ("hue", "saturation", "value", "od_mean", "sat_inside")
STAT_LABELS = {"hue": "hue (tissue)", "saturation": "saturation (tissue)", "value": "value (tissue)",
               "od_mean": "optical density (tissue)", "tissue_fraction": "tissue fraction",
               "sat_inside": "saturation inside glomerulus",
               "glomerulus_diameter_fraction": "glomerulus diameter / side"}


def statistics_figure(phantom: dict, real: dict):
    """Histograms of each statistic, phantom against real, on shared bins."""
    keys = [k for k in phantom if k in real]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.6))
    for ax, k in zip(np.atleast_1d(axes), keys, strict=True):
        p, r = phantom[k][~np.isnan(phantom[k])], real[k][~np.isnan(real[k])]
        bins = np.linspace(min(p.min(), r.min()), max(p.max(), r.max()) + 1e-9, 25)
        ax.hist(r, bins, alpha=0.6, density=True, label="real", color="#0072B2")
        ax.hist(p, bins, alpha=0.6, density=True, label="phantom", color="#E69F00")
        ax.set_title(STAT_LABELS.get(k, k), fontsize=9)
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def realism_claims(summary: dict, stats_rows: list[dict]) -> list[dict]:
    """Verdicts on what the phantom is claimed to be good for, from the measurements above.

    1. *A U-Net trained on phantom patches alone segments real glomeruli better than labelling
       everything glomerulus*: one-sample t-test of the per-seed real Dice against the baseline's Dice;
       "holds" when the 95% interval lies above the baseline, "does not hold" when below.
    2. *Phantom colour statistics fall in the real range*: per colour statistic, the phantom median
       inside the real interquartile range. (Tissue fraction and glomerulus size differ by design: the
       real crops are cut tight around the glomerulus; they are tabulated, not judged.)
    """
    from scipy import stats

    if "real_dice" not in summary:
        return [{"key": "00-sim2real-beats-baseline",
                 "claim": "phantom-trained U-Net beats the all-glomerulus baseline on real crops",
                 "evidence": "no real crops given (the default run reads no real data; `histolib run-real 00` "
                             "measures it)", "verdict": "not measured"}]
    d, base = summary["real_dice"], summary["real_baseline"]["dice"]
    if d["n"] > 1 and d["std"] > 0:
        t = stats.t.sf((d["mean"] - base) / (d["std"] / np.sqrt(d["n"])), d["n"] - 1)
        p = float(2 * min(t, 1 - t))
    else:
        p = float("nan")
    verdict = ("holds" if d["ci_low"] > base else "does not hold" if d["ci_high"] < base else "inconclusive")
    claims = [{"key": "00-sim2real-beats-baseline",
               "claim": "phantom-trained U-Net beats the all-glomerulus baseline on real crops",
               "evidence": f"real Dice {d['mean']:.3f} (95% CI {d['ci_low']:.3f}-{d['ci_high']:.3f}, n={d['n']}) "
                           f"vs baseline {base:.3f}; one-sample t-test p={p:.3g}",
               "verdict": verdict}]
    for row in stats_rows:
        if row["statistic"] not in COLOUR_STATS:
            continue
        lo, hi = (float(v) for v in row["real"].split("[")[1].rstrip("]").split(","))
        med = float(row["phantom"].split(" ")[0])
        claims.append({"key": f"00-colour-{row['statistic']}",
                       "claim": f"phantom {STAT_LABELS.get(row['statistic'], row['statistic'])} in the real range",
                       "evidence": f"phantom median {med:.3f}, real IQR [{lo:.3f}, {hi:.3f}]",
                       "verdict": "holds" if lo <= med <= hi else "does not hold"})
    return claims


# --------------------------------------------------------------------------------------------
# Every real set against the phantom (nuclei sets: fluorescence and H&E)
# --------------------------------------------------------------------------------------------

def find_real_sets(real_root: Path) -> dict[str, dict]:
    """Every folder directly under ``real_root`` in the plain layout (``images/``, ``masks/``).

    The kind is read from the first mask (``nuclei``: instance ids beyond 0/1/255, else ``glomeruli``)
    and the modality from the first image (``fluorescence``: grey stored as RGB, else ``brightfield``).

    Returns:
        ``{name: {"folder": Path, "kind": "nuclei" | "glomeruli", "modality": ...}}`` sorted by name;
        ``{}`` when ``real_root`` is absent (the callers then skip their real sections).
    """
    from histolib.calibration import is_grey
    from histolib.data.folder import IMAGE_SUFFIXES, read_mask, read_rgb

    real_root = Path(real_root)
    if not real_root.is_dir():
        return {}
    out = {}
    for folder in sorted(p for p in real_root.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir()):
        first = next((p for p in sorted((folder / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES), None)
        if first is None or not (folder / "masks" / first.name).is_file():
            continue
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # grey-as-RGB conversions
            mask = read_mask(folder / "masks" / first.name, "instances")
            image = read_rgb(first)
        kind = "nuclei" if set(np.unique(mask).tolist()) - {0, 1, 255} else "glomeruli"
        out[folder.name] = {"folder": folder, "kind": kind,
                            "modality": "fluorescence" if is_grey(image) else "brightfield"}
    return out


def load_real_nuclei(folder: Path, limit: int) -> Pairs:
    """Up to ``limit`` images of a real nuclei folder (16-bit instance masks), grey-as-RGB warnings silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pairs(folder, "instances", strict=False, limit=limit)


NUCLEI_STATS = ("background_intensity", "nucleus_intensity", "contrast", "saturation", "nucleus_diameter_px",
                "nucleus_fraction", "nuclei_per_1e4_px_at_target")
NUCLEI_STAT_LABELS = {
    "background_intensity": "background intensity (grey, 0-255)",
    "nucleus_intensity": "nucleus intensity (grey, 0-255)",
    "contrast": "nucleus - background (grey)",
    "saturation": "saturation (HSV, whole image)",
    "nucleus_diameter_px": "median nucleus diameter, px (as stored)",
    "nucleus_fraction": "area fraction covered by nuclei",
    "nuclei_per_1e4_px_at_target": "nuclei per 10^4 px at the profile's nucleus diameter",
}


def nuclei_statistics(images, masks, target_diameter: float) -> dict[str, np.ndarray]:
    """Per-image intensity, colour, size and density statistics of nucleus images.

    Args:
        images: ``(H, W, 3)`` uint8 images (sizes may differ).
        masks: their instance maps.
        target_diameter: the profile's ``data.nucleus_diameter``: densities are counted after the set is
            scaled so its median nucleus has this diameter (one factor for the set, as the builder does),
            so sets of different pixel sizes compare.

    Returns:
        Arrays of length N for every key of :data:`NUCLEI_STATS`: grey = RGB mean; ``contrast`` =
        nucleus - background grey means; ``nucleus_diameter_px`` the median equivalent diameter
        ``2 sqrt(A / pi)`` in the image; ``nuclei_per_1e4_px_at_target`` = ``n / (H W f^2) * 1e4`` with
        ``f = target / (the set's median diameter)``. Images without a nucleus give NaN where undefined.
    """
    from histolib.calibration import intensity_features
    from histolib.data.nuclei_scale import equivalent_diameters

    set_median = float(np.median(equivalent_diameters(masks))) if len(masks) else float("nan")
    f = target_diameter / set_median if set_median > 0 else float("nan")
    out: dict[str, list] = {k: [] for k in NUCLEI_STATS}
    for im, m in zip(images, masks, strict=True):
        im, m = np.asarray(im), np.asarray(m)
        fg = m > 0
        d = equivalent_diameters([m])
        for k, v in intensity_features(im, m).items():
            out[k].append(v)
        out["nucleus_diameter_px"].append(float(np.median(d)) if d.size else float("nan"))
        out["nucleus_fraction"].append(float(fg.mean()))
        out["nuclei_per_1e4_px_at_target"].append(d.size / (m.size * f * f) * 1e4)
    return {k: np.asarray(v, float) for k, v in out.items()}


def phantom_nuclei_fields(style: str, n: int, size: int, nucleus_diameter: float, seed: int = 0) -> Pairs:
    """``n`` phantom nuclei fields of one style (``fluorescence`` or ``he``), for comparison with a real set
    of that modality (the prepared dataset holds one style only)."""
    from histolib.data import phantom

    tiles = [phantom.nuclei_field(seed * 100_003 + i, size=size, style=style, nucleus_diameter=nucleus_diameter)
             for i in range(n)]
    return Pairs(np.stack([t.image for t in tiles]), np.stack([t.nuclei.astype(np.int32) for t in tiles]),
                 [f"phantom_{style}_{i:03d}.png" for i in range(n)])


def nuclei_comparison_rows(name: str, style: str, phantom: dict, real: dict) -> list[dict]:
    """:func:`compare_statistics` rows of one real nuclei set against the phantom of its modality, labelled."""
    return [{"real set": name, "phantom style": style,
             "statistic": NUCLEI_STAT_LABELS.get(r["statistic"], r["statistic"]),
             **{k: v for k, v in r.items() if k != "statistic"}} for r in compare_statistics(phantom, real)]


def real_tiles_at_scale(pairs: Pairs, target_diameter: float, size: int, n: int) -> list[np.ndarray]:
    """``n`` tiles of a real nuclei set at the profile's scale (the set's own median nucleus diameter mapped
    to ``target_diameter``), for side-by-side grids (written only under ``results/real/``)."""
    from histolib.data.nuclei_scale import nucleus_scale, scaled_tiles

    s = nucleus_scale(pairs.masks, target_diameter, measured_on="all loaded")
    t = scaled_tiles(pairs.images, pairs.masks, pairs.names, s.factor, size)
    step = max(1, len(t["images"]) // max(n, 1))
    return t["images"][::step][:n]


def side_by_side_figure(phantom_images, real_images, title: str):
    """Two rows: phantom above, real below (the figure holds real pixels: save it under ``results/real/``)."""
    k = min(len(phantom_images), len(real_images))
    return viz.image_grid([list(phantom_images[:k]), list(real_images[:k])], row_labels=["phantom", "real"],
                          title=title)


def compare_real_sets(real_sets: dict, P, figures_dir: Path) -> tuple[list[dict], list[Path]]:
    """Every real set of :func:`find_real_sets` against the phantom of its kind and modality.

    Nuclei sets: :func:`nuclei_statistics` of up to ``sim2real.n_real`` real images against
    ``4 x sim2real.n_grid`` phantom fields of the same modality (fluorescence, or H&E for brightfield) at
    the profile's ``data.nuclei_size`` and ``data.nucleus_diameter``; glomerulus sets: their crops beside
    phantom glomerulus patches (their colour statistics are the section above). Every set also gets a
    side-by-side grid at the profile's scale, written to ``figures_dir`` (it holds real pixels: a
    git-ignored folder, never ``results/00``).

    Returns:
        ``(rows, figures)``: the comparison rows (numbers only) and the paths of the figures written.
    """
    from histolib.data import phantom
    from histolib.data.builder import _resize

    d, s = P.data, P.sim2real
    rows, figures = [], []
    for name, info in real_sets.items():
        if info["kind"] == "nuclei":
            style = "fluorescence" if info["modality"] == "fluorescence" else "he"
            real = load_real_nuclei(info["folder"], s.n_real)
            ph = phantom_nuclei_fields(style, 4 * s.n_grid, d.nuclei_size, d.nucleus_diameter, P.seed)
            rows += nuclei_comparison_rows(name, style, nuclei_statistics(ph.images, ph.masks, d.nucleus_diameter),
                                           nuclei_statistics(real.images, real.masks, d.nucleus_diameter))
            real_imgs = real_tiles_at_scale(real, d.nucleus_diameter, d.nuclei_size, s.n_grid)
            title = (f"{name} ({len(real)} images, {info['modality']}) beside phantom {style} fields, both at a "
                     f"median nucleus diameter of {d.nucleus_diameter:g} px")
            fig = side_by_side_figure(ph.images, real_imgs, title)
        else:
            real = load_real_crops(info["folder"], s.n_grid)
            ph = [phantom.glomerulus_patch(P.seed * 100_003 + i, size=d.patch_size, stain=d.stain).image
                  for i in range(s.n_grid)]
            fig = side_by_side_figure(ph, [_resize(np.asarray(im), d.patch_size, nearest=False) for im in real.images],
                                      f"{name} beside phantom {d.stain.upper()} glomerulus patches "
                                      f"({d.patch_size} px; real crops are tight)")
        path = Path(figures_dir) / f"side_by_side_{name}.png"
        viz.save_figure(fig, path)
        figures.append(path)
    return rows, figures
