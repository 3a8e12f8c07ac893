"""Phantom calibration: image features measured on a real folder (or on the phantom), their spread, a report.

The phantom (:mod:`histolib.data.phantom`) is the study's default data; how close it is to real slides is
measured here, feature by feature, and the measurement is data: :func:`calibrate` writes a JSON of summary
numbers (never pixels) that ``histolib calibrate-phantom REAL_FOLDER`` produces for any folder in the
study's plain layout (``images/``, optional ``masks/``).

Kinds (``--kind``) and the masks they read (same file name under ``masks/``; a missing mask only leaves the
features that need it undefined):

* ``pas``: bright-field PAS, ``masks/`` = binary glomerulus mask (the real ``glomeruli_crops``);
* ``he``: bright-field H&E, ``masks/`` = 16-bit nucleus instance map (the real ``monuseg``);
* ``fluorescence``: grey nuclear stain stored as RGB, ``masks/`` = nucleus instance map (``fluo_dsb``,
  ``fluo_u2os``).

Per-image features (:data:`FEATURES` lists every name with its definition):

* **stain** (bright-field): Macenko stain vectors (:mod:`histolib.ops.stain_estimation`) as OD components
  and as the angle to the study's reference vector of that stain; concentration percentiles (50th, 99th)
  of each stain over tissue pixels (``|OD| > 0.15``) by colour deconvolution with the image's own
  estimated matrix (natural-log OD units, as the phantom's materials); tissue colour (HSV, mean OD).
* **saturation**: fraction of pixels with HSV saturation ``> 0.1`` (the texture threshold of paper 000),
  whole image and, with a glomerulus mask, inside and outside it.
* **blur**: ``var(Laplacian(grey)) / var(grey)`` (grey = RGB mean, 0-255; 5-point Laplacian): a
  sharpness ratio, larger = sharper, independent of contrast. Not the spectral ratio.
* **texture spectrum**: slope of ``log10`` radially averaged power against ``log10`` frequency between
  ``4 / L`` and ``0.25`` cycles/px (``L`` = side of the centred square crop, at most 512 px, Hann window).
* **nuclei** (instance masks): density per 10^4 px and scale-free per squared median diameter, area
  fraction, median area, equivalent diameter ``2 sqrt(A / pi)``, solidity and eccentricity
  (``skimage.measure.regionprops``; nuclei cut by the border included); background and nucleus grey levels.
* **glomerulus and lumina** (PAS with glomerulus mask): glomerulus equivalent diameter and fraction of
  the image; *bright* (``|OD| < 0.3``) pixel fraction inside and outside the glomerulus and the median
  equivalent diameter of bright connected regions outside it relative to the glomerulus diameter.
  Without tubule labels this is what can be measured honestly: the bright regions outside a glomerulus
  are tubular lumina *and* whitespace, tears and the Bowman's space of neighbours; no tubule count or
  tubule size is claimed. ``hematoxylin_rich_fraction`` (tissue pixels with hematoxylin concentration
  ``> 0.8``) is a label-free proxy of nucleus density where no nucleus mask exists.

Scale: the real sets differ several-fold in pixel size (glomerulus crops are resized to 224 px whatever the
glomerulus' size; nuclei span 17-110 px). :func:`measure_phantom` therefore renders the phantom at the real
set's scale (its median glomerulus fill or nucleus diameter, and image side), so scale-dependent features
(blur, spectrum, lumen size) compare like with like.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.color import rgb2hsv

from histolib import __version__
from histolib.errors import DataError
from histolib.ops.stain import od_to_concentrations, rgb_to_od, stain_matrix
from histolib.ops.stain_estimation import macenko_stain_matrix, stain_vector_angle

KINDS = ("pas", "he", "fluorescence")
MASK_KIND = {"pas": "binary", "he": "instances", "fluorescence": "instances"}
SCHEMA = 1
TISSUE_OD = 0.15      # Macenko's beta: |OD| above it is tissue
BRIGHT_OD = 0.3       # |OD| below it is lumen-like (phantom lumen ~0.19, interstitium ~0.5)
SATURATION = 0.1      # HSV saturation threshold of paper 000's texture mask
H_RICH = 0.8          # hematoxylin concentration of "nucleus-like" pixels (phantom nucleus material: 1.6)
SPECTRUM_BAND = (4.0, 0.25)   # (cycles per crop, cycles per px)
SPECTRUM_CROP = 512

_NUCLEUS = ["nuclei_per_1e4_px", "nuclei_per_d2", "nucleus_fraction", "nucleus_area_px", "nucleus_diameter_px",
            "nucleus_solidity", "nucleus_eccentricity"]
_STAIN = [f"{s}_{c}" for s in ("hematoxylin_od", "second_od") for c in "rgb"]
FEATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (definition, kinds it is measured for)
    **{n: (f"Macenko stain vector, {n.split('_')[0]} stain, {n[-1].upper()} OD component (unit vector)",
           ("pas", "he")) for n in _STAIN},
    "hematoxylin_angle_deg": ("angle of the hematoxylin vector to the study's reference (degrees)", ("pas", "he")),
    "second_angle_deg": ("angle of the eosin / PAS-magenta vector to the study's reference (degrees)", ("pas", "he")),
    "stain_angle_deg": ("angle between the two estimated stain vectors (degrees)", ("pas", "he")),
    "hematoxylin_conc_p50": ("median hematoxylin concentration over tissue (ln OD units)", ("pas", "he")),
    "hematoxylin_conc_p99": ("99th-percentile hematoxylin concentration over tissue", ("pas", "he")),
    "second_conc_p50": ("median eosin / PAS concentration over tissue", ("pas", "he")),
    "second_conc_p99": ("99th-percentile eosin / PAS concentration over tissue", ("pas", "he")),
    "hematoxylin_rich_fraction": (f"tissue pixels with hematoxylin concentration > {H_RICH}", ("pas", "he")),
    "tissue_fraction": (f"pixels with |OD| > {TISSUE_OD}", ("pas", "he")),
    "tissue_hue": ("circular mean HSV hue of pixels with S > 0.1", ("pas", "he")),
    "tissue_saturation": ("mean HSV saturation of pixels with S > 0.1", ("pas", "he")),
    "tissue_value": ("mean HSV value of pixels with S > 0.1", ("pas", "he")),
    "tissue_od_mean": ("mean OD over RGB of pixels with S > 0.1", ("pas", "he")),
    "saturated_fraction": (f"pixels with HSV S > {SATURATION}", KINDS),
    "saturated_fraction_inside": (f"pixels with S > {SATURATION} inside the glomerulus mask", ("pas",)),
    "saturated_fraction_outside": (f"pixels with S > {SATURATION} outside the glomerulus mask", ("pas",)),
    "sharpness": ("var(Laplacian(grey)) / var(grey): higher is sharper (blur)", KINDS),
    "spectrum_slope": ("slope of log power vs log frequency, 4/L to 0.25 cycles/px (texture)", KINDS),
    "glomerulus_diameter_px": ("equivalent diameter of the glomerulus mask, px", ("pas",)),
    "glomerulus_fraction": ("glomerulus mask area / image area", ("pas",)),
    "bright_fraction_inside": (f"|OD| < {BRIGHT_OD} inside the glomerulus (urinary space, capillary lumina)",
                               ("pas",)),
    "bright_fraction_outside": (f"|OD| < {BRIGHT_OD} outside the glomerulus (tubular lumina, whitespace)",
                                ("pas",)),
    "bright_region_diameter_rel": ("median equivalent diameter of bright regions (>= 9 px) outside the "
                                   "glomerulus / glomerulus diameter", ("pas",)),
    "background_intensity": ("grey level (RGB mean) outside nuclei", ("he", "fluorescence")),
    "nucleus_intensity": ("grey level inside nuclei", ("he", "fluorescence")),
    "contrast": ("nucleus - background grey level", ("he", "fluorescence")),
    "nuclei_per_1e4_px": ("nuclei per 10^4 px as stored", ("he", "fluorescence")),
    "nuclei_per_d2": ("nuclei x median diameter^2 / image area (scale-free density)", ("he", "fluorescence")),
    "nucleus_fraction": ("area fraction covered by nuclei", ("he", "fluorescence")),
    "nucleus_area_px": ("median nucleus area, px", ("he", "fluorescence")),
    "nucleus_diameter_px": ("median equivalent nucleus diameter 2 sqrt(A / pi), px", ("he", "fluorescence")),
    "nucleus_solidity": ("median solidity (area / convex area)", ("he", "fluorescence")),
    "nucleus_eccentricity": ("median eccentricity of the moment ellipse", ("he", "fluorescence")),
}


def features_of(kind: str) -> list[str]:
    """The feature names measured for ``kind`` (``pas``, ``he`` or ``fluorescence``), in :data:`FEATURES` order."""
    _check_kind(kind)
    return [k for k, (_, kinds) in FEATURES.items() if kind in kinds]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DataError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _nan(names) -> dict[str, float]:
    return {k: float("nan") for k in names}


def grey(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 grey level: the mean of R, G and B (0-255)."""
    return np.asarray(image, dtype=np.float64).mean(-1)


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB image is grey stored as RGB (R = G = B everywhere)."""
    im = np.asarray(image)
    return bool((im[..., 0] == im[..., 1]).all() and (im[..., 0] == im[..., 2]).all())


# --------------------------------------------------------------------------------------------
# Per-image features
# --------------------------------------------------------------------------------------------

def tissue_colour(image: np.ndarray, white: float = 0.1, hsv: np.ndarray | None = None) -> dict[str, float]:
    """Mean colour of tissue (HSV saturation above ``white``; the whole image when none is).

    Returns:
        ``hue`` (circular mean, 0-1), ``saturation``, ``value`` (means), ``od_mean`` (mean OD over RGB) and
        ``tissue_fraction`` (fraction of pixels above ``white``). Also used by notebook 00's
        ``colour_statistics``. ``hsv`` may pass ``rgb2hsv(image)`` when already computed.
    """
    im = np.asarray(image)
    hsv = rgb2hsv(im) if hsv is None else hsv
    tissue = hsv[..., 1] > white
    frac = float(tissue.mean())
    if not tissue.any():
        tissue = np.ones_like(tissue)
    ang = hsv[..., 0][tissue] * 2 * np.pi  # hue is circular: average it on the circle
    return {"hue": float(np.angle(np.mean(np.exp(1j * ang))) / (2 * np.pi) % 1.0),
            "saturation": float(hsv[..., 1][tissue].mean()),
            "value": float(hsv[..., 2][tissue].mean()),
            "od_mean": float(rgb_to_od(im)[tissue].mean()),
            "tissue_fraction": frac}


def stain_features(image: np.ndarray, stain: str) -> dict[str, float]:
    """Macenko stain vectors, their angles to ``stain``'s reference matrix, and concentration percentiles.

    A blank or single-colour image (no stain plane: :func:`macenko_stain_vectors` raises) gives NaN for
    every stain feature, so one empty crop does not stop a folder.
    """
    names = [*_STAIN, "hematoxylin_angle_deg", "second_angle_deg", "stain_angle_deg", "hematoxylin_conc_p50",
             "hematoxylin_conc_p99", "second_conc_p50", "second_conc_p99", "hematoxylin_rich_fraction"]
    im = np.asarray(image)
    od = rgb_to_od(im)
    tissue = np.sqrt((od * od).sum(-1)) > TISSUE_OD
    out = {"tissue_fraction": float(tissue.mean())}
    try:
        m = macenko_stain_matrix(im, beta=TISSUE_OD)
    except ValueError:
        return {**out, **_nan(names)}
    ref = stain_matrix(stain)
    out.update({n: float(v) for n, v in zip(_STAIN, m[:2].ravel(), strict=True)})
    out["hematoxylin_angle_deg"] = stain_vector_angle(m[0], ref[0])
    out["second_angle_deg"] = stain_vector_angle(m[1], ref[1])
    out["stain_angle_deg"] = stain_vector_angle(m[0], m[1])
    c = od_to_concentrations(od[tissue], m)
    for k, name in enumerate(("hematoxylin", "second")):
        out[f"{name}_conc_p50"], out[f"{name}_conc_p99"] = (float(v) for v in np.percentile(c[:, k], [50, 99]))
    out["hematoxylin_rich_fraction"] = float((c[:, 0] > H_RICH).mean())
    return out


def saturation_features(image: np.ndarray, region: np.ndarray | None = None, hsv: np.ndarray | None = None
                        ) -> dict[str, float]:
    """Fraction of pixels with HSV saturation ``> 0.1``: whole image, and inside / outside ``region``.

    Args:
        image: ``(H, W, 3)`` uint8.
        region: optional ``(H, W)`` mask (e.g. the glomerulus); without it, or when a side of it is empty,
            the inside / outside fractions are NaN.
        hsv: ``rgb2hsv(image)`` when already computed.
    """
    s = (rgb2hsv(np.asarray(image)) if hsv is None else hsv)[..., 1] > SATURATION
    out = {"saturated_fraction": float(s.mean()), **_nan(["saturated_fraction_inside", "saturated_fraction_outside"])}
    if region is not None:
        r = np.asarray(region) > 0
        if r.any():
            out["saturated_fraction_inside"] = float(s[r].mean())
        if (~r).any():
            out["saturated_fraction_outside"] = float(s[~r].mean())
    return out


def radial_power_spectrum(image: np.ndarray, crop: int = SPECTRUM_CROP) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the grey level of a centred square crop (Hann window).

    Returns:
        ``(frequencies, power)``: 1-D arrays over integer radii ``1 .. L/2`` of the crop's FFT, frequencies
        in cycles/px.
    """
    g = grey(image) if np.asarray(image).ndim == 3 else np.asarray(image, np.float64)
    L = min(g.shape[0], g.shape[1], int(crop))
    if L < 16:
        raise ValueError(f"image must be at least 16 px on each side for a spectrum, got {g.shape}")
    y0, x0 = (g.shape[0] - L) // 2, (g.shape[1] - L) // 2
    g = g[y0:y0 + L, x0:x0 + L]
    w = np.hanning(L)
    f = np.fft.fftshift(np.fft.fft2((g - g.mean()) * np.outer(w, w)))
    p = np.abs(f) ** 2
    yy, xx = np.indices(p.shape)
    r = np.rint(np.hypot(yy - L // 2, xx - L // 2)).astype(int)
    power = np.bincount(r.ravel(), p.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    k = np.arange(1, L // 2)
    return k / L, power[k]


def sharpness_features(image: np.ndarray) -> dict[str, float]:
    """``sharpness`` = ``var(Laplacian(grey)) / var(grey)``; ``spectrum_slope`` of the texture spectrum."""
    g = grey(image)
    v = g.var()
    out = {"sharpness": float(ndimage.laplace(g).var() / v) if v > 1e-9 else float("nan"),
           "spectrum_slope": float("nan")}
    if v > 1e-9 and min(g.shape) >= 16:
        f, p = radial_power_spectrum(image)
        band = (f >= SPECTRUM_BAND[0] / min(min(g.shape), SPECTRUM_CROP)) & (f <= SPECTRUM_BAND[1]) & (p > 0)
        if band.sum() >= 3:
            out["spectrum_slope"] = float(np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0])
    return out


def intensity_features(image: np.ndarray, instances: np.ndarray, hsv: np.ndarray | None = None) -> dict[str, float]:
    """Grey levels of nuclei and background, and mean HSV saturation of the whole image.

    Returns:
        ``background_intensity`` and ``nucleus_intensity`` (grey = RGB mean, NaN where a side is empty),
        ``contrast`` (their difference) and ``saturation``. Also used by notebook 00's ``nuclei_statistics``.
        ``hsv`` may pass ``rgb2hsv(image)`` when already computed.
    """
    im, fg = np.asarray(image), np.asarray(instances) > 0
    g = grey(im)
    bg_v = float(g[~fg].mean()) if (~fg).any() else float("nan")
    fg_v = float(g[fg].mean()) if fg.any() else float("nan")
    return {"background_intensity": bg_v, "nucleus_intensity": fg_v, "contrast": fg_v - bg_v,
            "saturation": float((rgb2hsv(im) if hsv is None else hsv)[..., 1].mean())}


def nucleus_features(instances: np.ndarray) -> dict[str, float]:
    """Density, size and shape of the nuclei of an instance map (``regionprops``; NaN without nuclei)."""
    from skimage.measure import regionprops

    from histolib.data.nuclei_scale import equivalent_diameters

    m = np.asarray(instances)
    out = _nan(_NUCLEUS)
    d = equivalent_diameters([m])
    out["nuclei_per_1e4_px"] = d.size / m.size * 1e4
    out["nucleus_fraction"] = float((m > 0).mean())
    if d.size:
        props = regionprops(m.astype(np.int32))
        out["nucleus_diameter_px"] = float(np.median(d))
        out["nucleus_area_px"] = float(np.median([p.area for p in props]))
        out["nuclei_per_d2"] = d.size * float(np.median(d)) ** 2 / m.size
        out["nucleus_solidity"] = float(np.median([p.solidity for p in props]))
        out["nucleus_eccentricity"] = float(np.median([p.eccentricity for p in props]))
    return out


def glomerulus_features(image: np.ndarray, glomerulus: np.ndarray | None) -> dict[str, float]:
    """Glomerulus size and the bright (lumen-like) regions inside and outside it (module docstring)."""
    names = ["glomerulus_diameter_px", "glomerulus_fraction", "bright_fraction_inside", "bright_fraction_outside",
             "bright_region_diameter_rel"]
    out = _nan(names)
    if glomerulus is None:
        return out
    g = np.asarray(glomerulus) > 0
    od = rgb_to_od(np.asarray(image))
    bright = np.sqrt((od * od).sum(-1)) < BRIGHT_OD
    out["glomerulus_fraction"] = float(g.mean())
    diam = float(np.sqrt(4 * g.sum() / np.pi))
    if g.any():
        out["glomerulus_diameter_px"] = diam
        out["bright_fraction_inside"] = float(bright[g].mean())
    if (~g).any():
        out["bright_fraction_outside"] = float(bright[~g].mean())
        lab, n = ndimage.label(bright & ~g)
        if n and diam > 0:
            area = np.bincount(lab.ravel())[1:]
            area = area[area >= 9]
            if area.size:
                out["bright_region_diameter_rel"] = float(np.median(2 * np.sqrt(area / np.pi)) / diam)
    return out


def image_features(image: np.ndarray, mask: np.ndarray | None, kind: str) -> dict[str, float]:
    """Every feature of :func:`features_of` ``(kind)`` for one image and its mask (or ``None``).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grey stored as RGB for fluorescence).
        mask: ``pas``: binary glomerulus mask; ``he`` / ``fluorescence``: nucleus instance map; ``None``
            leaves the mask features NaN.
        kind: ``pas``, ``he`` or ``fluorescence``.

    Returns:
        ``{feature: float}`` with exactly the keys of :func:`features_of` ``(kind)`` (NaN where undefined).
    """
    _check_kind(kind)
    im = np.asarray(image)
    if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
        raise DataError(f"image must be (H, W, 3) uint8, got {im.shape} {im.dtype}")
    if mask is not None and np.asarray(mask).shape != im.shape[:2]:
        raise DataError(f"mask must have the image's shape {im.shape[:2]}, got {np.asarray(mask).shape}")
    out: dict[str, float] = {}
    hsv = rgb2hsv(im)
    if kind in ("pas", "he"):
        out.update(stain_features(im, kind))
        out.update({f"tissue_{k}": v for k, v in tissue_colour(im, hsv=hsv).items() if k != "tissue_fraction"})
    out.update(saturation_features(im, mask if kind == "pas" else None, hsv=hsv))
    out.update(sharpness_features(im))
    if kind == "pas":
        out.update(glomerulus_features(im, mask))
    else:
        if mask is None:
            out.update(_nan(["background_intensity", "nucleus_intensity", "contrast", *_NUCLEUS]))
        else:
            out.update(nucleus_features(mask))
            out.update({k: v for k, v in intensity_features(im, mask, hsv=hsv).items() if k != "saturation"})
    return {k: float(out[k]) for k in features_of(kind)}


# --------------------------------------------------------------------------------------------
# Folders, distributions, the calibration file
# --------------------------------------------------------------------------------------------

def summarize_features(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{feature: {median, p5, p95, n}}`` over the rows of a per-image table (NaNs left out)."""
    out = {}
    for col in table.columns:
        v = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            p5, med, p95 = np.percentile(v, [5, 50, 95])
            out[col] = {"median": float(med), "p5": float(p5), "p95": float(p95), "n": int(v.size)}
        else:
            out[col] = {"median": float("nan"), "p5": float("nan"), "p95": float("nan"), "n": 0}
    return out


@dataclass
class Measurement:
    """Features of a set of images.

    Attributes:
        kind: ``pas``, ``he`` or ``fluorescence``.
        per_image: one row per image (index: file name), one column per feature.
        summary: :func:`summarize_features` of ``per_image``.
        source: what was measured (folder name, or ``phantom (...)``).
        n_available: images in the folder before subsampling.
        sampling: how the measured images were chosen.
        skipped: ``(file, reason)`` of images that could not be measured.
    """

    kind: str
    per_image: pd.DataFrame
    summary: dict
    source: str
    n_available: int
    sampling: str
    skipped: list

    def to_dict(self) -> dict:
        """Summary numbers only (never pixels or per-image rows): the calibration file's content."""
        return {"schema": SCHEMA, "source": self.source, "kind": self.kind, "n_images": len(self.per_image),
                "n_available": self.n_available, "sampling": self.sampling,
                "skipped": [list(s) for s in self.skipped],
                "features": self.summary, "definitions": {k: FEATURES[k][0] for k in self.summary},
                "derived": derived_parameters(self.summary, self.kind)}


def _image_files(folder: Path) -> list[Path]:
    from histolib.data.folder import IMAGE_SUFFIXES

    folder = Path(folder)
    images = folder / "images"
    if not images.is_dir():
        what = "does not exist" if not folder.exists() else "has no images/ subfolder"
        raise DataError(f"{folder}: {what}; expected the study's plain layout images/*.png with optional "
                        f"masks/*.png of the same names")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: images/ holds no image ({', '.join(IMAGE_SUFFIXES)} files)")
    return files


def detect_kind(folder: str | os.PathLike) -> str:
    """Guess ``kind`` from the first image and mask: grey-as-RGB -> ``fluorescence``; else a mask with ids
    other than 0/1/255 -> ``he`` (nucleus instances); else ``pas`` (glomerulus mask, or no mask)."""
    from histolib.data.folder import read_mask, read_rgb

    first = _image_files(Path(folder))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grey-as-RGB conversion
        if is_grey(read_rgb(first)):
            return "fluorescence"
        mpath = Path(folder) / "masks" / first.name
        if mpath.is_file() and set(np.unique(read_mask(mpath, "instances")).tolist()) - {0, 1, 255}:
            return "he"
    return "pas"


def measure_folder(folder: str | os.PathLike, kind: str | None = None, limit: int | None = None, seed: int = 0,
                   progress: bool = True) -> Measurement:
    """Features of every image of a folder in the plain layout (at most ``limit``, a seeded random subset).

    Args:
        folder: holds ``images/`` and optionally ``masks/`` (same file names; see the module docstring).
        kind: ``pas``, ``he``, ``fluorescence``; ``None`` guesses it (:func:`detect_kind`).
        limit: measure at most this many images: ``numpy.random.default_rng(seed).choice`` of the sorted file
            names without replacement, measured in name order (``None``: all).
        seed: seed of that subsample.
        progress: a tqdm bar over the images.

    Returns:
        :class:`Measurement`; images that cannot be read are skipped and listed (never silently).

    Raises:
        DataError: the folder is missing, has no ``images/``, holds no image, no image could be measured, or
            grey images are given as ``pas``/``he`` (the message names the folder).
    """
    from tqdm.auto import tqdm

    from histolib.data.folder import read_mask, read_rgb

    folder = Path(folder)
    kind = detect_kind(folder) if kind is None else _check_kind(kind)
    files = _image_files(folder)
    n_available = len(files)
    sampling = f"all {n_available} images"
    if limit is not None and limit < n_available:
        pick = np.sort(np.random.default_rng(seed).choice(n_available, int(limit), replace=False))
        files = [files[i] for i in pick]
        sampling = (f"{limit} of {n_available} images: numpy.random.default_rng({seed}).choice of the sorted "
                    f"names without replacement")
    rows, names, skipped, grey_images = [], [], [], 0
    for path in tqdm(files, desc=f"calibrate {folder.name} ({kind})", disable=not progress):
        mpath = folder / "masks" / path.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # grey-as-RGB conversion is expected for fluorescence
                image = read_rgb(path)
            mask = read_mask(mpath, MASK_KIND[kind]) if mpath.is_file() else None
            if kind != "fluorescence" and is_grey(image):
                grey_images += 1
            rows.append(image_features(image, mask, kind))
            names.append(path.name)
        except DataError as e:
            skipped.append((path.name, str(e)))
    if grey_images == len(files):
        raise DataError(f"{folder}: every image is grey (R = G = B) but kind is {kind!r}; use kind 'fluorescence'")
    if not rows:
        raise DataError(f"{folder}: no image could be measured ({len(skipped)} skipped; first: {skipped[0][1]})")
    table = pd.DataFrame(rows, index=pd.Index(names, name="file"))
    return Measurement(kind, table, summarize_features(table), folder.name, n_available, sampling, skipped)


def derived_parameters(summary: dict, kind: str) -> dict:
    """Phantom parameters read off a summary: the median stain matrix and the scale.

    Returns:
        ``stain_vectors``: ``[[hematoxylin RGB OD], [second stain RGB OD]]`` (per-image medians of each
        component, renormalised) for ``pas``/``he``; ``glomerulus_fill`` (median glomerulus diameter / image
        side, from the median diameter and fraction) for ``pas``; ``nucleus_diameter_px`` for nuclei kinds.
        Keys whose features are missing are left out.
    """
    med = {k: v["median"] for k, v in summary.items() if v.get("n", 0)}
    out: dict = {}
    if all(n in med for n in _STAIN):
        v = np.array([[med[f"{s}_{c}"] for c in "rgb"] for s in ("hematoxylin_od", "second_od")])
        out["stain_vectors"] = (v / np.linalg.norm(v, axis=1, keepdims=True)).round(4).tolist()
    if kind == "pas" and "glomerulus_diameter_px" in med and "glomerulus_fraction" in med:
        side = med["glomerulus_diameter_px"] / np.sqrt(4 * med["glomerulus_fraction"] / np.pi)
        out["glomerulus_fill"] = round(float(med["glomerulus_diameter_px"] / side), 4)
        out["image_side_px"] = round(float(side), 1)
    if "nucleus_diameter_px" in med:
        out["nucleus_diameter_px"] = round(float(med["nucleus_diameter_px"]), 3)
    return out


def provenance() -> dict:
    """histolib version, git commit of the code (``unknown`` outside a checkout) and the UTC date."""
    from histolib.repro import _git_commit

    return {"histolib_version": __version__, "git_commit": _git_commit(Path(__file__).resolve().parents[1]),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_calibration(measurement: Measurement, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a measurement's summary (:meth:`Measurement.to_dict` + :func:`provenance`) as JSON; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**measurement.to_dict(), **provenance(), **(extra or {})}
    out.write_text(json.dumps(record, indent=1, allow_nan=True) + "\n")
    return out


def read_calibration(path: str | os.PathLike) -> dict:
    """A calibration JSON written by :func:`write_calibration` (DataError naming the file if unreadable)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable calibration file ({e})") from e
    if not isinstance(record, dict) or "features" not in record or record.get("kind") not in KINDS:
        raise DataError(f"{path}: not a calibration file (needs 'kind' in {KINDS} and 'features')")
    return record


PHANTOM_FEATURES = ("hematoxylin_angle_deg", "second_angle_deg", "hematoxylin_conc_p50", "second_conc_p50",
                    "sharpness")


def phantom_calibration(calibration: str | os.PathLike | dict, spread: float = 1.25, structure: bool = True):
    """The phantom's calibrated mode from a calibration JSON (or the dict :func:`read_calibration` returns).

    Reads the real per-image distributions the phantom samples per slide (:data:`PHANTOM_FEATURES`: stain
    vector angles, median stain concentrations, sharpness; each as ``(p5, median, p95)``) and the median
    stain vectors (``derived.stain_vectors``). Bright-field kinds only.

    Returns:
        :class:`histolib.data.phantom.PhantomCalibration` (``spread``: domain randomisation width, see there).

    Raises:
        DataError: unreadable file, a fluorescence calibration, or one without stain vectors (named).
    """
    from histolib.data.phantom import PhantomCalibration

    record = calibration if isinstance(calibration, dict) else read_calibration(calibration)
    name = record.get("source", str(calibration) if not isinstance(calibration, dict) else "")
    if record.get("kind") not in ("pas", "he"):
        raise DataError(f"{name}: the phantom can be calibrated on a bright-field set (pas or he), not "
                        f"{record.get('kind')!r}")
    vectors = (record.get("derived") or {}).get("stain_vectors")
    if not vectors or len(vectors) != 2:
        raise DataError(f"{name}: calibration has no derived.stain_vectors; re-run histolib calibrate-phantom")
    q = {}
    for k in PHANTOM_FEATURES:
        f = record["features"].get(k)
        if f and all(np.isfinite([f["p5"], f["median"], f["p95"]])):
            q[k] = (float(f["p5"]), float(f["median"]), float(f["p95"]))
    return PhantomCalibration(stain=record["kind"], quantiles=q, stain_vectors=tuple(map(tuple, vectors)),
                              spread=float(spread), structure=bool(structure), source=name)


# --------------------------------------------------------------------------------------------
# The phantom, measured the same way
# --------------------------------------------------------------------------------------------

def phantom_images(kind: str, n: int, scale: dict | None = None, seed: int = 0, calibration=None):
    """``n`` phantom images of ``kind`` with their masks, at a real set's scale.

    Args:
        kind: ``pas`` (glomerulus patches, every 5th sclerosed; mask = the central glomerulus), ``he`` or
            ``fluorescence`` (nuclei fields; mask = nucleus instances). Rendering defaults are untouched.
        n: number of images.
        scale: :func:`derived_parameters` of the real set: ``image_side_px`` and ``glomerulus_fill`` (pas;
            default 224 px and 0.6) or ``nucleus_diameter_px`` (nuclei; default 14, clipped to [2, 128];
            field side ``clip(16 d, 256, 512)``).
        seed: item ``i`` uses seed ``seed * 100_003 + i``.
        calibration: ``None`` (the default phantom) or a :class:`histolib.data.phantom.PhantomCalibration`
            (:func:`phantom_calibration`): the calibrated mode; ``pas`` and ``he`` glomerulus patches only.

    Returns:
        ``(images, masks)``: lists of ``(S, S, 3)`` uint8 and ``(S, S)`` masks.
    """
    from histolib.data import phantom

    _check_kind(kind)
    if calibration is not None and kind == "fluorescence":
        raise DataError("the calibrated phantom mode applies to bright-field glomerulus patches, not fluorescence")
    scale = scale or {}
    images, masks = [], []
    for i in range(int(n)):
        s = int(seed) * 100_003 + i
        if kind == "pas":
            side = int(round(scale.get("image_side_px", 224)))
            f = float(np.clip(scale.get("glomerulus_fill", 0.6), 0.1, 1.0))
            t = phantom.glomerulus_patch(s, size=side, stain="pas", sclerosed=i % 5 == 0, fill=(f, f),
                                         calibration=calibration)
            images.append(t.image)
            masks.append((t.glomeruli == 1).astype(np.uint8))
        else:
            d = float(np.clip(scale.get("nucleus_diameter_px", 14.0), 2.0, 128.0))
            side = int(np.clip(16 * d, 256, 512))
            t = phantom.nuclei_field(s, size=side, style=kind, nucleus_diameter=d)
            images.append(t.image)
            masks.append(t.nuclei.astype(np.int32))
    return images, masks


def measure_images(images, masks, kind: str, source: str, progress: bool = False) -> Measurement:
    """:class:`Measurement` of in-memory images (e.g. :func:`phantom_images`)."""
    from tqdm.auto import tqdm

    rows = [image_features(im, m, kind) for im, m in tqdm(list(zip(images, masks, strict=True)),
                                                           desc=f"measure {source}", disable=not progress)]
    table = pd.DataFrame(rows, index=pd.Index([f"{i:04d}" for i in range(len(rows))], name="item"))
    return Measurement(kind, table, summarize_features(table), source, len(rows), f"all {len(rows)} images", [])


def measure_phantom(kind: str, n: int, scale: dict | None = None, seed: int = 0, progress: bool = False,
                    calibration=None) -> Measurement:
    """The phantom measured like a real folder, at the real set's scale (:func:`phantom_images`); with
    ``calibration`` its calibrated mode."""
    images, masks = phantom_images(kind, n, scale, seed, calibration)
    desc = ", ".join(f"{k} {v}" for k, v in (scale or {}).items() if k != "stain_vectors")
    mode = f"; calibrated on {calibration.source}" if calibration is not None else ""
    return measure_images(images, masks, kind, f"phantom ({kind}{', ' + desc if desc else ''}; seed {seed}{mode})",
                          progress)


def calibrate(folder: str | os.PathLike, kind: str | None = None, out: str | os.PathLike | None = None,
              limit: int | None = None, seed: int = 0, phantom_out: str | os.PathLike | None = None,
              n_phantom: int = 32, progress: bool = True, phantom_calibration_json: str | os.PathLike | None = None
              ) -> dict[str, Path]:
    """Measure a real folder and write its calibration JSON; optionally the phantom's at the same scale.

    Args:
        folder: the real folder (plain layout), or a calibration JSON already written for it: then the real
            set is not measured again (nothing is written for it) and only the phantom is measured, at the
            scale the JSON records.
        kind: ``pas``, ``he``, ``fluorescence`` or ``None`` (guessed).
        out: the JSON to write (default ``calibration/<folder name>.json`` under the study root).
        limit, seed: subsample of :func:`measure_folder`.
        phantom_out: when given, also measure ``n_phantom`` phantom images at the real scale and write them.
        progress: tqdm bars.
        phantom_calibration_json: measure the phantom's calibrated mode, calibrated on this JSON
            (:func:`phantom_calibration`), instead of the default phantom.

    Returns:
        ``{"real": path}`` (unless ``folder`` is a JSON) and, with ``phantom_out``, ``{"phantom": path}``.
    """
    from histolib.paths import project_root

    folder = Path(folder)
    cal = phantom_calibration(phantom_calibration_json) if phantom_calibration_json else None
    if folder.is_file() and folder.suffix == ".json":  # an existing calibration: the phantom only
        record = read_calibration(folder)
        real_kind, scale, name, paths = record["kind"], record.get("derived") or {}, record.get("source", ""), {}
    else:
        m = measure_folder(folder, kind, limit, seed, progress)
        out = Path(out) if out else project_root() / "calibration" / f"{folder.name}.json"
        paths = {"real": write_calibration(m, out, {"subsample_seed": seed})}
        real_kind, scale, name = m.kind, derived_parameters(m.summary, m.kind), folder.name
    if phantom_out:
        ph = measure_phantom(real_kind, n_phantom, scale, seed, progress, calibration=cal)
        extra = {"calibrated_against": name, "scale": {k: v for k, v in scale.items() if k != "stain_vectors"}}
        if cal is not None:
            extra["phantom_mode"] = {"calibration": str(phantom_calibration_json), "spread": cal.spread,
                                     "structure": cal.structure}
        paths["phantom"] = write_calibration(ph, phantom_out, extra)
    return paths


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _summary_of(x) -> tuple[dict, str]:
    if isinstance(x, Measurement):
        return x.summary, x.kind
    if isinstance(x, dict) and "features" in x:
        return x["features"], x.get("kind", "")
    return x, ""


def report(phantom_features, real_features, name: str = "") -> tuple[pd.DataFrame, str]:
    """Phantom against real, feature by feature: is the phantom inside the real 5th-95th percentile range?

    Args:
        phantom_features, real_features: :class:`Measurement`, calibration dicts (:func:`read_calibration`)
            or bare ``{feature: {median, p5, p95, n}}`` summaries.
        name: a label for the real set (a column when given).

    Returns:
        ``(table, markdown)``: one row per feature measured on both (definition order), with ``phantom``
        (its median), ``real median``, ``real p5``, ``real p95``, ``real n`` and ``inside`` (``yes`` / ``no``
        / ``n/a`` when undefined on either side), and the same as a markdown table.
    """
    ph, _ = _summary_of(phantom_features)
    real, _ = _summary_of(real_features)
    rows = []
    for k in [k for k in FEATURES if k in ph and k in real] + [k for k in real if k in ph and k not in FEATURES]:
        p, r = ph[k]["median"], real[k]
        ok = np.isfinite([p, r["median"], r["p5"], r["p95"]]).all()
        rows.append({**({"real set": name} if name else {}), "feature": k, "phantom": p,
                     "real median": r["median"], "real p5": r["p5"], "real p95": r["p95"], "real n": r["n"],
                     "inside": ("yes" if r["p5"] <= p <= r["p95"] else "no") if ok else "n/a"})
    table = pd.DataFrame(rows)
    return table, report_markdown(table) if rows else "(no common feature)"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and np.isfinite(v) else ("" if isinstance(v, float) else str(v))


def report_markdown(table: pd.DataFrame) -> str:
    """A :func:`report` table as markdown: ``real median [p5, p95]`` in one column, 4 significant digits."""
    from histolib import viz

    rows = [{**({"real set": r["real set"]} if "real set" in r else {}), "feature": r["feature"],
             "phantom": _fmt(r["phantom"]),
             "real median [p5, p95]": f"{_fmt(r['real median'])} [{_fmt(r['real p5'])}, {_fmt(r['real p95'])}]",
             "n": r["real n"], "inside": r["inside"]} for r in table.to_dict("records")]
    return viz.markdown_table(rows)


def report_real_sets(real_root: str | os.PathLike, n_images: int, n_phantom: int, seed: int = 0,
                     progress: bool = False) -> tuple[pd.DataFrame, str, dict]:
    """:func:`report` for every real set under ``real_root`` against the phantom measured at its scale.

    Each subfolder with ``images/`` is measured (:func:`measure_folder`, kind guessed by :func:`detect_kind`,
    at most ``n_images``, seeded subset) and the phantom of that kind is rendered at the set's scale
    (:func:`measure_phantom`, ``n_phantom`` images).

    Returns:
        ``(table, markdown, metrics)``: the rows of every set (``real set`` column first), the markdown
        (one table, then the features outside the real spread), and per set ``{kind, n_real, n_phantom,
        n_features, n_inside, outside: {feature: {phantom, real_median, real_p5, real_p95}}, derived}``.
        All empty when ``real_root`` holds no set (the caller skips its section).
    """
    real_root = Path(real_root)
    folders = sorted(p for p in real_root.iterdir() if (p / "images").is_dir()) if real_root.is_dir() else []
    tables, metrics = [], {}
    for folder in folders:
        real = measure_folder(folder, None, n_images, seed, progress)
        scale = derived_parameters(real.summary, real.kind)
        ph = measure_phantom(real.kind, n_phantom, scale, seed)
        table, _ = report(ph, real, folder.name)
        tables.append(table)
        out = table[table["inside"] == "no"]
        metrics[folder.name] = {
            "kind": real.kind, "n_real": len(real.per_image), "n_phantom": n_phantom, "n_features": len(table),
            "n_inside": int((table["inside"] == "yes").sum()),
            "outside": {r["feature"]: {"phantom": r["phantom"], "real_median": r["real median"],
                                       "real_p5": r["real p5"], "real_p95": r["real p95"]}
                        for r in out.to_dict("records")},
            "derived": scale}
    if not tables:
        return pd.DataFrame(), "", {}
    table = pd.concat(tables, ignore_index=True)
    md = report_markdown(table)
    lines = [f"- `{name}` ({m['kind']}): {m['n_inside']} of {m['n_features']} features inside the real 5th-95th "
             f"percentile range; outside: {', '.join(m['outside']) or 'none'}" for name, m in metrics.items()]
    return table, md + "\n\n" + "\n".join(lines), metrics
