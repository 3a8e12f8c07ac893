"""Procedural kidney-biopsy phantom with complete ground truth (DESIGN.md section 3).

Every image is rendered in a stain model: the generator paints two stain-concentration maps
(hematoxylin and PAS magenta, or hematoxylin and eosin), blurs them with the optics, and turns
them into RGB with the Beer-Lambert law ``I = i0 * exp(-C @ M)`` (:mod:`histolib.ops.stain`),
using a stain matrix ``M`` and stain amounts jittered once per tile ("slide").

Geometry (all lengths scale with the glomerulus diameter ``D``):

* **Tubulointerstitium** -- a jittered-grid Voronoi (Worley) partition, optionally stretched
  along one direction (obliquely cut tubules). Each cell holds one tubule: a rounded polygon
  with a PAS-positive basement membrane, an epithelium (proximal: tall, granular, with a brush
  border; distal and collecting: lower, paler) carrying a ring of nuclei, and a lumen that may be
  collapsed. Cells between tubules are interstitium with sparse fibroblast and lymphocyte nuclei.
* **Glomerulus** -- an elliptical, slightly irregular disc: Bowman's capsule (thin PAS-positive
  line), a pale urinary space, an eccentric lobulated tuft whose capillary network is a Worley
  pattern (pale lumina ringed by basement membrane inside magenta mesangium) densely packed with
  nuclei, and parietal nuclei flattened along the capsule. A *globally sclerosed* glomerulus has
  a homogeneous, strongly PAS-positive, lumen-poor and nucleus-poor tuft with concentric fibrils,
  a thickened lamellated capsule, and an obliterated or shrunken urinary space (then filled with
  pale collagen). Sclerosed glomeruli are drawn 0.7-0.95 times smaller (they shrink).
* **Arteriole / artery** -- concentric lumen, endothelium, internal elastic lamina, media of
  smooth muscle with circumferentially elongated nuclei, and adventitia.
* **Whitespace** -- a tissue edge (noisy line) and thin tears.

Ground truth: ``compartments`` (0 background/whitespace, 1 tubulointerstitium, 2 glomerulus,
3 arteriole, 4 artery; the lumina of tubules belong to 1, the urinary space to 2, a vessel's
lumen to its vessel), ``glomeruli`` instance ids (the whole glomerulus including Bowman's
capsule; ``glomeruli > 0`` exactly where ``compartments == 2``), ``glomerulus_class`` and a
``nuclei`` instance map holding every nucleus in the image. Ids are consecutive from 1 in each map.

Every edge is anti-aliased analytically (coverage from the signed distance). Very small outputs
(shorter side <= 48 px) are in addition rendered at twice the size and area-averaged in
intensity; their label maps are subsampled (nearest). Everything is drawn in
local bounding boxes or with vectorised per-pixel formulas, never one full-image pass per object.

Determinism: every random number comes from ``np.random.default_rng(seed)``; the same arguments
give byte-identical arrays on the same numpy version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from histolib.errors import ParamError
from histolib.ops.stain import concentrations_to_intensity, jitter_stain_matrix, stain_matrix

__all__ = [
    "COMPARTMENTS", "GLOMERULUS_CLASSES", "PhantomTile", "PhantomCalibration", "render_tile", "glomerulus_patch",
    "nuclei_field", "sample_quantiles",
]

COMPARTMENTS = ("background", "tubulointerstitium", "glomerulus", "arteriole", "artery")
GLOMERULUS_CLASSES = ("normal", "sclerosed")
_BG, _TI, _GLOM, _ARTERIOLE, _ARTERY = range(5)


@dataclass
class PhantomTile:
    """One rendered phantom image with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        compartments: ``(H, W)`` uint8, indices into :data:`COMPARTMENTS`.
        glomeruli: ``(H, W)`` uint16 glomerulus instance ids (whole glomerulus incl. Bowman's
            capsule), 0 = none, ids consecutive from 1.
        glomerulus_class: instance id -> "normal" | "sclerosed" (one entry per id present).
        nuclei: ``(H, W)`` uint16 nucleus instance ids, 0 = none, ids consecutive from 1.
        stain: "pas" | "he" (and "fluorescence" for :func:`nuclei_field` with that style).
        slide: the per-slide parameters drawn in calibrated mode (``stain_matrix`` ``(2, 3)``, stain
            ``gains``, ``blur_px``); empty for the default phantom.
    """

    image: np.ndarray
    compartments: np.ndarray
    glomeruli: np.ndarray
    glomerulus_class: dict[int, str]
    nuclei: np.ndarray
    stain: str
    slide: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PhantomCalibration:
    """The calibrated ("realistic") phantom mode: per-slide distributions measured on real slides.

    Built from a calibration JSON by :func:`histolib.calibration.phantom_calibration` (the one reader);
    passing ``None`` instead anywhere renders today's default phantom bit for bit.

    Attributes:
        stain: the stain the real set shows ("pas" or "he"); must equal the rendered stain.
        quantiles: feature -> ``(p5, median, p95)`` of the real per-image distribution; the keys read are
            ``hematoxylin_angle_deg``, ``second_angle_deg``, ``hematoxylin_conc_p50``, ``second_conc_p50``
            and ``sharpness`` (absent keys fall back to the default phantom's draw of that quantity).
        stain_vectors: median real ``(hematoxylin, second)`` OD unit vectors, ``(2, 3)``.
        spread: domain randomisation: every per-slide quantity is drawn from a split normal whose 5th,
            50th and 95th percentiles are the real ones when ``spread == 1``; ``spread > 1`` widens it
            (z-scores are multiplied by ``spread``, then clipped to +-3), covering the real range with a
            margin. Default 1.25.
        structure: also draw the realistic structures (irregular crowded tubules, dense nuclei, capillaries
            and red cells in a fibrous interstitium, glomerular tufts with white lumina and urinary space).
        source: name of the real set (for records).
    """

    stain: str
    quantiles: dict
    stain_vectors: tuple
    spread: float = 1.25
    structure: bool = True
    source: str = ""


# --------------------------------------------------------------------------------------------
# Stain amounts of each material: (hematoxylin, second stain) concentrations in natural-log OD
# units along the unit stain vectors. PAS values calibrated so that the tissue of glomerulus
# patches matches real PAS glomerulus crops in mean HSV / OD (numbers in the module's report).
_MATERIALS = {
    "pas": {
        "background": (0.035, 0.045),
        "lumen": (0.07, 0.13),
        "interstitium": (0.17, 0.38),
        "prox": (0.23, 0.62),
        "distal": (0.23, 0.45),
        "collecting": (0.19, 0.32),
        "tbm": (0.28, 1.55),
        "brush": (0.22, 1.00),
        "urinary": (0.05, 0.09),
        "mesangium": (0.40, 0.86),
        "gbm": (0.32, 1.32),
        "caplumen": (0.08, 0.16),
        "rbc": (0.06, 0.55),
        "sclerotic": (0.36, 1.30),
        "collagen": (0.18, 0.55),
        "capsule": (0.30, 1.45),
        "muscle": (0.36, 0.62),
        "elastic": (0.30, 1.45),
        "adventitia": (0.24, 0.62),
        "nucleus": (1.6, 0.3),
    },
    "he": {
        "background": (0.02, 0.03),
        "lumen": (0.03, 0.07),
        "interstitium": (0.08, 0.45),
        "prox": (0.10, 0.85),
        "distal": (0.10, 0.65),
        "collecting": (0.08, 0.45),
        "tbm": (0.08, 0.75),
        "brush": (0.08, 0.80),
        "urinary": (0.02, 0.05),
        "mesangium": (0.25, 0.75),
        "gbm": (0.15, 0.90),
        "caplumen": (0.03, 0.08),
        "rbc": (0.02, 1.40),
        "sclerotic": (0.12, 0.95),
        "collagen": (0.05, 0.55),
        "capsule": (0.10, 0.85),
        "muscle": (0.10, 0.95),
        "elastic": (0.10, 0.85),
        "adventitia": (0.08, 0.60),
        "nucleus": (1.30, 0.30),
    },
}


# Calibrated mode (PhantomCalibration with structure=True): real lumina, urinary space and capillary
# lumina are white (HSV S < 0.1 even at the slide's darkest stain), so these materials carry almost no
# stain; the default's pinkish lumina (S ~0.06-0.10, above 0.1 after the stain gain) are why the
# saturation texture mask marked ~95 % of the default phantom's glomerulus pixels at 64 px.
# Mesangium and tubular cytoplasm are lighter and pinker, as in the real crops (mean glomerulus HSV S ~0.33).
_MATERIALS_REAL = {
    "pas": {"lumen": (0.02, 0.03), "urinary": (0.012, 0.018), "caplumen": (0.02, 0.03),
            "mesangium": (0.30, 0.66), "interstitium": (0.12, 0.30), "prox": (0.20, 0.58),
            "distal": (0.20, 0.44), "collecting": (0.17, 0.34), "capwall": (0.22, 0.70)},
    "he": {"lumen": (0.01, 0.02), "urinary": (0.008, 0.012), "caplumen": (0.01, 0.02), "capwall": (0.10, 0.80)},
}
# Calibrated mode: per-slide amounts are (sampled concentration / real median) times these base factors,
# set so that the calibrated phantom's median tissue concentrations approach the real medians
# (calibration/phantom/glomeruli_crops_calibrated.json against calibration/glomeruli_crops.json: with
# factors 1 the medians were 0.28 / 0.73 against the real 0.23 / 0.48; H&E not measured yet: 1).
_CAL_BASE_GAIN = {"pas": (0.8, 0.66), "he": (1.0, 1.0)}
# Calibrated mode: the optical blur is the default's draw times this and the per-slide focus ratio (median
# sharpness at the real crops' scale: 0.25 with 1, 0.70 with 0.7, against the real 0.41).
_CAL_BLUR_BASE = 0.85
# copula correlation of the two stain amounts: section thickness scales both, staining time each one
_THICKNESS_CORR = 0.5


def sample_quantiles(rng: np.random.Generator, q, spread: float = 1.0, z: float | None = None) -> float:
    """One draw from the split normal with 5th, 50th and 95th percentiles ``q = (p5, median, p95)``.

    ``x = median + z / 1.645 * (p95 - median)`` for ``z >= 0`` and ``median + z / 1.645 * (median - p5)``
    below, with ``z ~ N(0, spread^2)`` clipped to ``[-3, 3]`` (``z`` may be passed, e.g. correlated draws).
    ``spread = 1`` reproduces the three percentiles; larger values randomise beyond them.
    """
    p5, m, p95 = (float(v) for v in q)
    if z is None:
        z = rng.normal(0.0, 1.0)
    z = float(np.clip(z * spread, -3.0, 3.0))
    return m + z / 1.645 * ((p95 - m) if z >= 0 else (m - p5))


def _rotate_towards_random(v: np.ndarray, angle_deg: float, rng) -> np.ndarray:
    """Unit vector at ``angle_deg`` from unit ``v`` in a random direction, kept in the positive octant."""
    d = rng.normal(0.0, 1.0, 3)
    d -= d @ v * v
    d /= max(np.linalg.norm(d), 1e-12)
    a = np.deg2rad(angle_deg)
    w = np.abs(np.cos(a) * v + np.sin(a) * d)
    return w / np.linalg.norm(w)


def _slide_parameters(rng: np.random.Generator, cal: PhantomCalibration, stain: str) -> dict:
    """Per-slide stain matrix, stain gains and blur ratio drawn from the real distribution (calibrated mode).

    Stain vectors: the real median vectors, each turned in a random direction by an angle from a half
    normal whose 90th percentile is the real 5th-95th percentile width of that stain's angle to the
    reference (``*_angle_deg``; times ``spread``); two vectors closer than 8 degrees fall back to the
    medians. Amounts: the real distributions of the median tissue concentrations (``*_conc_p50``) through
    a Gaussian copula with correlation ``_THICKNESS_CORR`` (section thickness scales both stains); the gain is ``draw / real median`` times
    ``_CAL_BASE_GAIN``. Focus: a draw ``s`` of the real ``sharpness`` gives the blur ratio
    ``sqrt(median / s)`` (clipped to [0.5, 4]) applied to the default optical blur.
    """
    q, sp = cal.quantiles, cal.spread
    vec = np.asarray(cal.stain_vectors, np.float64)
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    M = vec.copy()
    for k, key in enumerate(("hematoxylin_angle_deg", "second_angle_deg")):
        if key in q:
            p5, _, p95 = q[key]
            # the angle to the reference is a magnitude; draw it around the real median's own deviation
            ang = max(0.0, sample_quantiles(rng, (0.0, 0.0, p95 - p5), sp, z=abs(rng.normal())))
            M[k] = _rotate_towards_random(vec[k], ang, rng)
    if np.rad2deg(np.arccos(np.clip(M[0] @ M[1], -1, 1))) < 8.0:  # keep the two stains separable
        M = vec
    zt = rng.normal()
    zs = rng.normal(size=2)
    r = np.sqrt(_THICKNESS_CORR)
    gains = []
    for k, key in enumerate(("hematoxylin_conc_p50", "second_conc_p50")):
        if key in q:
            g = sample_quantiles(rng, q[key], sp, z=r * zt + np.sqrt(1 - r * r) * zs[k]) / q[key][1]
        else:
            g = float(np.exp(rng.normal(0, 0.2)))
        gains.append(max(0.2, g) * _CAL_BASE_GAIN[stain][k])
    ratio = 1.0
    if "sharpness" in q:
        s = sample_quantiles(rng, q["sharpness"], sp)
        ratio = float(np.clip(np.sqrt(q["sharpness"][1] / max(s, 1e-3)), 0.5, 4.0))
    return {"stain_matrix": M, "gains": tuple(gains), "blur_ratio": ratio}


# --------------------------------------------------------------------------------------------
# Argument validation


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_stain(stain, allowed=("pas", "he"), name="stain") -> str:
    if stain not in allowed:
        raise ParamError(f"{name} must be one of {list(allowed)}, got {stain!r}")
    return stain


def _check_size(size, name="size", lo=16, hi=8192) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be an int or a (height, width) pair, got {size!r}") from None
    if not ok or not (lo <= h <= hi and lo <= w <= hi):
        raise ParamError(f"{name} must be integers in [{lo}, {hi}], got {size!r}")
    return h, w


def _check_calibration(cal, stain):
    if cal is None:
        return None
    if not isinstance(cal, PhantomCalibration):
        raise ParamError(f"calibration must be None or a PhantomCalibration "
                         f"(histolib.calibration.phantom_calibration), got {type(cal).__name__}")
    if cal.stain != stain:
        raise ParamError(f"calibration is of a {cal.stain!r} set ({cal.source or 'unnamed'}) but stain is {stain!r}")
    return cal


def _check_float(value, name, lo, hi, lo_open=False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        left = "(" if lo_open else "["
        raise ParamError(f"{name} must be in {left}{lo}, {hi}], got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# Noise and cell patterns

_VALUE_NOISE_STD = 1.0  # set by _calibrate_noise_std below
_DELTA = np.zeros((9, 9))
_DELTA[4, 4] = 1.0
# 1 / std of unit white noise after the lattice smoothing in _smoothed_lattice
_LATTICE_GAIN = float(1.0 / np.sqrt((gaussian_filter(_DELTA, 0.75, mode="wrap", truncate=2.5) ** 2).sum()))


def _smoothed_lattice(rng, gh, gw) -> np.ndarray:
    """iid normal lattice smoothed with a small Gaussian (hides the lattice axes), unit std."""
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    return gaussian_filter(g, 0.75, mode="wrap", truncate=2.5) * np.float32(_LATTICE_GAIN)


def _interp_lattice(g, y, x) -> np.ndarray:
    """Sample lattice ``g`` at float coordinates (lattice units), smoothstep-bilinear, wrapping."""
    gh, gw = g.shape
    iy, ix = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    fy, fx = (y - iy).astype(np.float32), (x - ix).astype(np.float32)
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    iy, ix = iy % gh, ix % gw
    iy1, ix1 = (iy + 1) % gh, (ix + 1) % gw
    top = g[iy, ix] * (1 - fx) + g[iy, ix1] * fx
    bot = g[iy1, ix] * (1 - fx) + g[iy1, ix1] * fx
    return (top * (1 - fy) + bot * fy) * np.float32(1.0 / _VALUE_NOISE_STD)


def _calibrate_noise_std() -> float:
    # std of the interpolated smoothed lattice, measured once on a fixed private stream
    r = np.random.default_rng(20240531)
    g = _smoothed_lattice(r, 128, 128)
    y, x = r.uniform(0, 127, 40000), r.uniform(0, 127, 40000)
    global _VALUE_NOISE_STD
    _VALUE_NOISE_STD = 1.0
    return float(_interp_lattice(g, y, x).std())


_VALUE_NOISE_STD = _calibrate_noise_std()


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """``(H, W)`` float32 smooth noise, zero mean, ~unit std, features ~``scale`` px (value noise)."""
    h, w = shape
    if scale <= 1.0:
        return rng.standard_normal((h, w), dtype=np.float32)
    gh, gw = int(h / scale) + 3, int(w / scale) + 3
    g = _smoothed_lattice(rng, gh, gw)
    y = np.arange(h, dtype=np.float32) / np.float32(scale) + np.float32(rng.random())
    x = np.arange(w, dtype=np.float32) / np.float32(scale) + np.float32(rng.random())
    iy, ix = y.astype(np.intp), x.astype(np.intp)
    fy, fx = y - iy, x - ix
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    rows = g[iy] * (1 - fy)[:, None] + g[iy + 1] * fy[:, None]
    out = rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx
    out *= np.float32(1.0 / _VALUE_NOISE_STD)
    return out


def _polar_fibres(rng, r, theta, radial_px, tangential_px, r_max) -> np.ndarray:
    """Concentric fibrillar noise: value noise on (radius, arc length), short across the radius
    (``radial_px``) and long along the circumference (``tangential_px``); seamless in theta."""
    n_t = max(4, int(round(2 * np.pi * r_max / tangential_px)))
    n_r = int(r_max / radial_px) + 4
    g = _smoothed_lattice(rng, n_r, n_t)
    return _interp_lattice(g, r / np.float32(radial_px), (theta + np.float32(np.pi)) * np.float32(n_t / (2 * np.pi)))


def _worley(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cell: float, jitter: float = 0.9):
    """Voronoi partition of jittered-grid seeds evaluated at points ``(yy, xx)``.

    Returns ``(d1, edge, idx, n_cells)``: distance to the nearest seed, distance to the nearest
    Voronoi edge (the perpendicular bisector with the closest competing seed among the 3x3
    neighbouring grid cells), and the flat index of the nearest seed. Seeds stay inside their grid
    cell, so the 3x3 neighbourhood always contains the nearest one.
    """
    y0, x0 = float(yy.min()), float(xx.min())
    gy = ((yy - y0) / cell).astype(np.int32) + 1
    gx = ((xx - x0) / cell).astype(np.int32) + 1
    ny, nx = int(gy.max()) + 2, int(gx.max()) + 2
    jy = (np.arange(ny)[:, None] - 0.5 + jitter * (rng.random((ny, nx)) - 0.5)) * cell + y0
    jx = (np.arange(nx)[None, :] - 0.5 + jitter * (rng.random((ny, nx)) - 0.5)) * cell + x0
    cy, cx = jy.ravel().astype(np.float32), jx.ravel().astype(np.float32)
    base = gy * nx + gx
    ids, d2s, cys, cxs = [], [], [], []
    d1sq = idx = None
    for o in [dy * nx + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)]:
        k = base + o
        ky, kx = cy.take(k), cx.take(k)  # take: ~3x faster than fancy indexing
        d2 = (yy - ky) ** 2 + (xx - kx) ** 2
        if d1sq is None:
            d1sq, idx = d2.copy(), k.copy()
        else:
            better = d2 < d1sq
            np.copyto(d1sq, d2, where=better)
            np.copyto(idx, k, where=better)
        ids.append(k), d2s.append(d2), cys.append(ky), cxs.append(kx)
    c1y, c1x = cy.take(idx), cx.take(idx)
    edge = np.full(yy.shape, np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, d2, ky, kx in zip(ids, d2s, cys, cxs, strict=True):
            sep2 = (ky - c1y) ** 2 + (kx - c1x) ** 2
            e = (d2 - d1sq) / (2 * np.sqrt(sep2))
            np.minimum(edge, np.where(k != idx, e, np.inf), out=edge)
    return np.sqrt(d1sq), edge, idx, ny * nx


def _upsample2(a: np.ndarray, shape) -> np.ndarray:
    """Bilinear x2 upsampling of samples taken at even pixels (``a = full[::2, ::2]``)."""
    h, w = shape
    pad = np.pad(a, ((0, 1), (0, 1)), mode="edge")
    out = np.empty((pad.shape[0] * 2 - 1, pad.shape[1] * 2 - 1), a.dtype)
    out[0::2, 0::2] = pad
    out[1::2, 0::2] = (pad[:-1] + pad[1:]) * 0.5
    out[:, 1::2] = (out[:, :-1:2] + out[:, 2::2]) * 0.5
    return out[:h, :w]


def _worley_fast(rng, yy, xx, cell, jitter=0.9):
    """:func:`_worley`, evaluated on every other pixel and bilinearly upsampled when the cells are
    large enough (>= 5 px): distances are continuous and piecewise smooth, so the error is
    sub-pixel away from the seeds, and it costs a quarter. The nearest-seed index is upsampled by
    nearest neighbour."""
    if cell < 5 or min(yy.shape) < 4:
        return _worley(rng, yy, xx, cell, jitter)
    d1, edge, idx, n = _worley(rng, yy[::2, ::2], xx[::2, ::2], cell, jitter)
    edge = np.minimum(edge, np.float32(4 * cell))  # no inf into the interpolation
    full = yy.shape
    idx = np.repeat(np.repeat(idx, 2, 0), 2, 1)[: full[0], : full[1]]
    return _upsample2(d1, full), _upsample2(edge, full), idx, n


def _greedy_hardcore(y, x, r, sep, rng) -> np.ndarray:
    """Indices of a greedy hard-core subset: no two kept points closer than ``sep * (r_i + r_j)``.

    Points are visited in random order and kept when no kept point conflicts (random sequential
    adsorption), which packs more densely than Matern thinning.
    """
    n = len(y)
    if n < 2:
        return np.arange(n)
    order = rng.permutation(n)
    pts = np.stack([y, x], 1)[order]
    rr = r[order]
    pairs = cKDTree(pts).query_pairs(float(2 * rr.max() * sep), output_type="ndarray")
    if len(pairs) == 0:
        return np.sort(order)
    d = np.hypot(*(pts[pairs[:, 0]] - pts[pairs[:, 1]]).T)
    pairs = pairs[d < sep * (rr[pairs[:, 0]] + rr[pairs[:, 1]])]
    if len(pairs) == 0:
        return np.sort(order)
    lo, hi = pairs.min(1), pairs.max(1)  # hi conflicts with the earlier-visited lo
    s = np.argsort(hi, kind="stable")
    lo, hi = lo[s], hi[s]
    starts = np.searchsorted(hi, np.arange(n + 1))
    keep = np.ones(n, bool)
    for i in np.unique(hi).tolist():
        for j in lo[starts[i] : starts[i + 1]].tolist():
            if keep[j]:
                keep[i] = False
                break
    return np.sort(order[keep])


def _ridge(t: np.ndarray, centre: float, half: float) -> np.ndarray:
    """Anti-aliased band ``|t - centre| <= half`` (t in px): 1 inside, linear 1-px falloff."""
    return np.clip(half + 0.5 - np.abs(t - centre), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Scene


class _Nuclei:
    """Growing list of nucleus specifications (centre, semi-axes, angle, darkness, irregularity)."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def add(self, y, x, ra, rb, ang, dark, irr, layer):
        y = np.atleast_1d(np.asarray(y, np.float64))
        n = len(y)
        if n == 0:
            return
        cols = [y, x, ra, rb, ang, dark, irr, layer]
        self.parts.append(np.stack([np.broadcast_to(np.asarray(c, np.float64), (n,)) for c in cols], 1))

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 8))


class _Scene:
    """Stain-concentration canvas plus label maps at render resolution (hi-res px)."""

    def __init__(self, rng, shape, stain, d_glom, d_nuc, ss, cal: PhantomCalibration | None = None):
        self.rng = rng
        self.shape = shape
        self.stain = stain
        self.cal = cal
        self.real = cal is not None and cal.structure  # draw the realistic structures
        self.mat = {**_MATERIALS[stain], **_MATERIALS_REAL[stain]} if self.real else _MATERIALS[stain]
        self.D = d_glom
        self.nd = d_nuc
        self.ss = ss
        self.h = np.zeros(shape, np.float32)
        self.p = np.zeros(shape, np.float32)
        self.comp = np.full(shape, _TI, np.uint8)
        self.glom = np.zeros(shape, np.uint16)
        self.layer = np.ones(shape, np.uint16)  # which structure owns a pixel (filters nuclei)
        self.n_layers = 1
        self.classes: dict[int, str] = {}
        self.nuclei = _Nuclei()
        self.fine = _value_noise(rng, shape, 1.0 * ss)
        self.med = _value_noise(rng, shape, max(1.5, 0.7 * d_nuc))
        self.low = _value_noise(rng, shape, max(2.0, 0.3 * d_glom))

    def new_layer(self) -> int:
        self.n_layers += 1
        return self.n_layers

    def paint(self, sl, alpha, mat, gain=1.0, gain_p=None):
        """Over-composite material ``mat`` with opacity ``alpha`` into bbox ``sl``."""
        mh, mp = self.mat[mat]
        gp = gain if gain_p is None else gain_p
        h, p = self.h[sl], self.p[sl]
        h += alpha * (np.float32(mh) * gain - h)
        p += alpha * (np.float32(mp) * gp - p)

    def bbox(self, cy, cx, r):
        H, W = self.shape
        y0, y1 = max(0, int(np.floor(cy - r))), min(H, int(np.ceil(cy + r)) + 1)
        x0, x1 = max(0, int(np.floor(cx - r))), min(W, int(np.ceil(cx + r)) + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        return (slice(y0, y1), slice(x0, x1))


def _local_polar(sl, cy, cx, ell, ang):
    """Area-preserving elliptical frame: returns (dy, dx, u, v, r, theta) for bbox ``sl``."""
    yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
    q = np.float32(np.sqrt(ell))
    u = (xx * c + yy * s) / q
    v = (-xx * s + yy * c) * q
    return yy, xx, u, v, np.hypot(u, v), np.arctan2(v, u)


def _from_local(u, v, cy, cx, ell, ang):
    """Inverse of :func:`_local_polar` for points: circle-space (u, v) -> image (y, x)."""
    q = np.sqrt(ell)
    uu, vv = u * q, v / q
    c, s = np.cos(ang), np.sin(ang)
    return cy + uu * s + vv * c, cx + uu * c - vv * s


def _harmonics(rng, kmax, amp):
    ks = np.arange(2, kmax + 1)
    a = amp * rng.uniform(0.3, 1.0, len(ks)) / ks**0.5
    ph = rng.uniform(0, 2 * np.pi, len(ks))
    return ks, a, ph


def _rho(theta, hk):
    ks, a, ph = hk
    out = np.ones_like(theta)
    for k, ak, pk in zip(ks, a, ph, strict=True):
        out += np.float32(ak) * np.cos(np.float32(k) * theta + np.float32(pk))
    return out


def _rho_norm(hk) -> float:
    """sqrt(mean(rho^2)) so that R0 = R / rho_norm gives a shape of area pi R^2."""
    th = np.linspace(0, 2 * np.pi, 512, endpoint=False)
    return float(np.sqrt(np.mean(_rho(th, hk) ** 2)))


def _sample_points(rng, sl, n):
    ys = rng.uniform(sl[0].start, sl[0].stop - 1e-3, n)
    xs = rng.uniform(sl[1].start, sl[1].stop - 1e-3, n)
    return ys, xs


# --------------------------------------------------------------------------------------------
# Tubulointerstitium


def _draw_tubulointerstitium(sc: _Scene):
    """Tubules in a Voronoi partition with interstitium between them (every pixel is compartment 1).

    Calibrated mode (``sc.real``) in addition: the partition is domain-warped (irregular, non-convex
    tubules), tubules fill their cells (crowded, thin interstitium), the epithelium's thickness varies
    along the wall and a third of the lumina are collapsed, epithelial nuclei are about 2.5 times denser,
    and the pale, fibrous interstitium holds peritubular capillaries with red cells (:func:`_draw_capillaries`).
    """
    rng, (H, W), D, nd = sc.rng, sc.shape, sc.D, sc.nd
    real = sc.real
    cell = D * rng.uniform(0.26, 0.34)
    stretch = rng.uniform(1.0, 1.5) if rng.random() < 0.6 else 1.0
    ang = rng.uniform(0, np.pi)
    yy = np.arange(H, dtype=np.float32)[:, None]
    xx = np.arange(W, dtype=np.float32)[None, :]
    c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
    u = (xx * c + yy * s) / np.float32(stretch)
    v = -xx * s + yy * c
    u, v = np.broadcast_arrays(u, v)
    if real:  # irregular, non-convex tubules: warp the coordinates the Voronoi cells are built on
        amp = np.float32(cell * rng.uniform(0.18, 0.3))
        v = v + _value_noise(rng, (H, W), 0.55 * cell) * amp
        u = u + _value_noise(rng, (H, W), 0.55 * cell) * amp
    d1, edge, idx, ncell = _worley_fast(rng, v, u, cell)

    kind = rng.choice(4, size=ncell, p=[0.55, 0.27, 0.10, 0.08])  # prox, distal, collecting, none
    rad = (cell * (rng.uniform(0.6, 0.85, ncell) if real else rng.uniform(0.40, 0.60, ncell))).astype(np.float32)
    rad[kind == 3] = -1.0
    ep = rad * np.where(kind == 0, rng.uniform(0.45, 0.85, ncell), rng.uniform(0.28, 0.5, ncell))
    if real:
        ep = np.where(rng.random(ncell) < 0.33, rad * 1.2, ep)  # collapsed lumen
    ep = ep.astype(np.float32)
    cgain = rng.uniform(0.85, 1.15, ncell).astype(np.float32)
    if real:  # crowded: a thin interstitium, wider in places
        half_gap = np.float32(0.012 * cell + 0.3 * sc.ss) * np.clip(1 + 1.2 * sc.low, 0.4, None)
    else:
        half_gap = np.float32(0.03 * cell + 0.4 * sc.ss) * (1 + 0.5 * sc.low)
    t = np.minimum(edge - half_gap, rad.take(idx) - d1)  # depth inside the tubule, px
    sc.t_tubule = t

    m = sc.mat
    tex = 1 + 0.25 * sc.med + 0.15 * sc.fine
    sc.h[:] = m["interstitium"][0] * tex
    if real:  # pale, fibrous: streaks along a random direction
        fa = rng.uniform(0, np.pi)
        along = (xx * np.float32(np.cos(fa)) + yy * np.float32(np.sin(fa))) / np.float32(3.0 * nd)
        across = (-xx * np.float32(np.sin(fa)) + yy * np.float32(np.cos(fa))) / np.float32(0.3 * nd)
        lat = _smoothed_lattice(rng, 64, 256)
        streak = _interp_lattice(lat, across + np.float32(rng.uniform(0, 64)), along + np.float32(rng.uniform(0, 256)))
        sc.p[:] = m["interstitium"][1] * np.clip(1 + 0.45 * streak + 0.2 * sc.med + 0.15 * sc.fine, 0.2, None)
    else:
        sc.p[:] = m["interstitium"][1] * (1 + 0.3 * sc.med + 0.2 * sc.fine)

    names = ("prox", "distal", "collecting", "interstitium")
    th = np.array([m[k][0] for k in names], np.float32)[kind] * cgain
    tp = np.array([m[k][1] for k in names], np.float32)[kind] * cgain
    k_idx = kind.take(idx)
    gran = 1 + 0.12 * sc.fine + 0.12 * sc.med
    tub = np.clip(t + 0.5, 0, 1)
    sc.h += tub * (th.take(idx) * gran - sc.h)
    sc.p += tub * (tp.take(idx) * gran - sc.p)

    ep_px = ep.take(idx)
    if real:  # wall thickness varies along the tubule
        wall = np.clip(1 + 0.5 * _value_noise(rng, (H, W), 0.3 * cell), 0.35, None)
        tl = t - ep_px * wall
    else:
        tl = t - ep_px * (1 + 0.35 * sc.med)
    lum = np.clip(tl + 0.5, 0, 1) * (k_idx != 3)
    bb = max(0.8 * sc.ss, 0.012 * D)
    brush = _ridge(tl, -bb / 2, bb / 2) * (k_idx == 0) * (1 + 0.3 * sc.fine).clip(0, None)
    sc.paint(np.s_[:, :], np.clip(brush, 0, 1) * 0.8, "brush")
    sc.paint(np.s_[:, :], lum, "lumen")
    bw = max(0.55 * sc.ss, 0.0075 * D)
    tbm = _ridge(t, bw / 2, bw / 2) * (k_idx != 3)
    sc.paint(np.s_[:, :], tbm, "tbm", gain=1.0)

    # epithelial nuclei: a ring in the epithelium band (calibrated: the whole epithelium, crowded)
    n_c = int(H * W / nd**2 * (3.5 if real else 1.4))
    ys, xs = _sample_points(rng, (slice(0, H), slice(0, W)), n_c)
    iy, ix = ys.astype(np.intp), xs.astype(np.intp)
    tt, ee, kk = t[iy, ix], ep_px[iy, ix], k_idx[iy, ix]
    if real:
        ok = (kk != 3) & (tt > bw + 0.4 * nd) & (tl[iy, ix] < -0.3 * nd)
    else:
        ok = (kk != 3) & (tt > bw + 0.42 * nd) & (tt < np.maximum(ee - 0.15 * nd, bw + 0.5 * nd))
    ys, xs = ys[ok], xs[ok]
    n = len(ys)
    ra = nd / 2 * (rng.uniform(0.75, 1.2, n) if real else rng.uniform(0.85, 1.12, n))
    rb = ra * rng.uniform(0.72, 1.0, n)
    keep = _greedy_hardcore(ys, xs, ra, 0.85 if real else 1.05, rng)
    n = len(keep)
    sc.nuclei.add(ys[keep], xs[keep], ra[keep], rb[keep], rng.uniform(0, np.pi, n),
                  rng.uniform(0.65, 1.1, n) if real else rng.uniform(0.8, 1.05, n), rng.uniform(0.0, 0.08, n), 1)

    # interstitial nuclei: fibroblasts (elongated), lymphocytes (small, round, dark)
    n_c = int(H * W / nd**2 * (0.6 if real else 0.35))
    ys, xs = _sample_points(rng, (slice(0, H), slice(0, W)), n_c)
    ok = t[ys.astype(np.intp), xs.astype(np.intp)] < -0.2 * nd
    ys, xs = ys[ok], xs[ok]
    n = len(ys)
    lymph = rng.random(n) < 0.35
    ra = np.where(lymph, nd * rng.uniform(0.32, 0.42, n), nd * rng.uniform(0.5, 0.75, n))
    rb = np.where(lymph, ra * rng.uniform(0.85, 1.0, n), nd * rng.uniform(0.17, 0.26, n))
    keep = _greedy_hardcore(ys, xs, ra, 1.1, rng)
    sc.nuclei.add(ys[keep], xs[keep], ra[keep], rb[keep], rng.uniform(0, np.pi, len(keep)),
                  np.where(lymph[keep], 1.35, 1.1), 0.05, 1)
    if real:
        _draw_capillaries(sc, t, cell)


def _draw_capillaries(sc: _Scene, t: np.ndarray, cell: float) -> np.ndarray:
    """Peritubular capillaries in the interstitium (calibrated mode): small elliptical lumina with a thin
    PAS-positive wall, most filled with red cells, some with a flattened endothelial nucleus.

    About one candidate per tubule cell (``cell`` px); centres lie where the interstitium is at least
    ``0.25 nd`` from a tubule (``t < -0.25 nd``); a capillary squeezed between tubules may overlap their edge. Compartments are untouched (everything
    here is tubulointerstitium, label 1); red cells are not nuclei.

    Returns:
        ``(n, 6)`` rows ``(y, x, ra, rb, angle, filled)`` of the capillaries drawn (lumen semi-axes in px).
    """
    rng, (H, W), nd, ss = sc.rng, sc.shape, sc.nd, sc.ss
    n_c = int(H * W / cell**2 * 1.2)
    ys, xs = _sample_points(rng, (slice(0, H), slice(0, W)), n_c)
    ok = t[ys.astype(np.intp), xs.astype(np.intp)] < -0.25 * nd
    ys, xs = ys[ok], xs[ok]
    ra = nd * rng.uniform(0.45, 0.9, len(ys))
    keep = _greedy_hardcore(ys, xs, ra, 1.3, rng)
    ys, xs, ra = ys[keep], xs[keep], ra[keep]
    n = len(ys)
    rb = ra * rng.uniform(0.45, 0.9, n)
    angs = rng.uniform(0, np.pi, n)
    full = rng.random(n) < 0.7
    wall_w = max(0.4 * ss, 0.08 * nd)
    for k in range(n):
        sl = sc.bbox(ys[k], xs[k], ra[k] + wall_w + 1)
        if sl is None:
            continue
        _, _, uu, vv, _, _ = _local_polar(sl, ys[k], xs[k], 1.0, angs[k])
        # signed distance (approximate, px) inside the ellipse
        q = np.hypot(uu / np.float32(ra[k]), vv / np.float32(rb[k]))
        d = (1 - q) * np.float32(rb[k])
        sc.paint(sl, np.clip(d + wall_w + 0.5, 0, 1), "capwall")
        inner = np.clip(d + 0.5, 0, 1)
        sc.paint(sl, inner, "caplumen")
        if full[k]:
            sc.paint(sl, inner * np.clip(0.7 + 0.5 * sc.med[sl], 0, 1), "rbc", gain=1 + 0.2 * sc.fine[sl])
    endo = rng.random(n) < 0.3
    if endo.any():
        a = rng.uniform(0, 2 * np.pi, n)
        py = ys + rb * np.sin(a) * np.cos(angs) + ra * np.cos(a) * np.sin(angs)
        px = xs + ra * np.cos(a) * np.cos(angs) - rb * np.sin(a) * np.sin(angs)
        tang = np.arctan2(py - ys, px - xs) + np.pi / 2
        sc.nuclei.add(py[endo], px[endo], nd * 0.45, nd * 0.18, tang[endo], 1.1, 0.03, 1)
    return np.stack([ys, xs, ra, rb, angs, full.astype(np.float64)], 1)


# --------------------------------------------------------------------------------------------
# Glomerulus


def _draw_glomerulus(sc: _Scene, cy, cx, diam, sclerosed: bool, gid: int):
    rng, nd, ss = sc.rng, sc.nd, sc.ss
    ell = 1.0 + rng.uniform(0.0, 0.25)
    ang = rng.uniform(0, np.pi)
    hk = _harmonics(rng, 4, 0.06)
    R0 = diam / 2 / _rho_norm(hk)
    ring_w = R0 * rng.uniform(0.05, 0.12) * (1.6 if sclerosed else 1.0)
    reach = R0 * (1 + hk[1].sum()) * np.sqrt(ell) + ring_w + 2
    sl = sc.bbox(cy, cx, reach)
    if sl is None:
        return
    layer = sc.new_layer()
    yy, xx, u, v, r, th = _local_polar(sl, cy, cx, ell, ang)
    rho = R0 * _rho(th, hk)
    d_o = rho - r  # px inside the outer capsule boundary (approximately)
    alpha = np.clip(d_o + 0.5, 0, 1)
    inside = d_o >= 0

    # periglomerular interstitium ring (only on tubulointerstitium)
    ring = np.clip(d_o + ring_w + 0.5, 0, 1) * (1 - alpha) * (sc.comp[sl] == _TI)
    peri = "collagen" if sclerosed else "interstitium"
    fib = _polar_fibres(rng, r, th, max(1.2 * ss, 0.022 * R0), max(4.0 * ss, 0.3 * R0), reach * 1.5)
    sc.paint(sl, ring, peri, gain=1 + 0.2 * sc.med[sl] + (0.25 if sclerosed else 0.1) * fib)
    sc.layer[sl][ring > 0.5] = layer  # tubular nuclei under the ring disappear

    # capsule thickness and tuft geometry
    if sclerosed:
        cw = R0 * rng.uniform(0.04, 0.11) + ss
        obliterated = rng.random() < 0.6
        rt = rng.uniform(0.98, 1.04) if obliterated else rng.uniform(0.68, 0.9)
        lob_amp, n_lob = rng.uniform(0.02, 0.1), rng.integers(3, 6)
    else:
        cw = max(1.2 * ss, R0 * rng.uniform(0.018, 0.03))
        rt = rng.uniform(0.9, 1.0) if sc.real else rng.uniform(0.8, 0.97)  # calibrated: narrower urinary space
        lob_amp, n_lob = rng.uniform(0.03, 0.1) if sc.real else rng.uniform(0.08, 0.22), rng.integers(4, 8)
    off_r = R0 * rng.uniform(0.02, 0.15)
    off_a = rng.uniform(0, 2 * np.pi)
    oy, ox = off_r * np.sin(off_a), off_r * np.cos(off_a)
    Rt = (R0 - cw) * rt
    ut, vt = u - np.float32(ox), v - np.float32(oy)
    rt_ = np.hypot(ut, vt)
    tht = np.arctan2(vt, ut)
    phi = rng.uniform(0, 2 * np.pi)
    hk_t = _harmonics(rng, 5, 0.09 if sclerosed else 0.05)
    # lobes: rounded bulges separated by narrow clefts (|cos|^6 dips) between n_lob lobules
    clefts = np.abs(np.cos(np.float32(n_lob / 2) * tht + np.float32(phi))) ** 6
    rho_t = Rt * (_rho(tht, hk_t) - np.float32(lob_amp) * clefts)
    d_cap_in = d_o - np.float32(cw)  # px inside the capsule's inner edge
    d_t = np.minimum(rho_t - rt_, d_cap_in + (1.0 if sclerosed else -0.8 * ss))
    tuft = np.clip(d_t + 0.5, 0, 1) * inside

    # urinary space
    sp = "collagen" if sclerosed and not obliterated else "urinary"
    g_sp = (1 + 0.25 * sc.med[sl]) if sp == "collagen" else (1 + (0.1 if sc.real else 0.3) * sc.fine[sl])
    if sp == "collagen":
        g_sp = g_sp * np.float32(rng.uniform(0.5, 0.9)) + 0.25 * fib
    sc.paint(sl, alpha, sp, gain=np.clip(g_sp, 0, None))

    # tuft interior: capillary network
    cc = R0 * (rng.uniform(0.08, 0.12) if sc.real else rng.uniform(0.12, 0.18))  # calibrated: smaller loops
    # domain-warped Worley cells: capillary loops become irregular, elongated, partly confluent
    wshape = u.shape
    wy = _value_noise(rng, wshape, 0.8 * cc) * np.float32(0.3 * cc)
    wx = _value_noise(rng, wshape, 0.8 * cc) * np.float32(0.3 * cc)
    d1, edge, cidx, ncell = _worley_fast(rng, v + wy, u + wx, cc, jitter=0.95)
    if sclerosed:
        lr = np.where(rng.random(ncell) < 0.06, cc * rng.uniform(0.08, 0.2, ncell), -1.0).astype(np.float32)
        fib_t = _polar_fibres(rng, rt_, tht, max(1.2 * ss, 0.025 * R0), max(4.0 * ss, 0.25 * R0), reach * 1.5)
        gain = (1 + 0.12 * fib_t + 0.1 * sc.med[sl] + 0.06 * sc.fine[sl] + 0.08 * sc.low[sl]) * np.float32(
            rng.uniform(0.7, 1.2))
        sc.paint(sl, tuft, "sclerotic", gain=gain)
        wr = _ridge(edge, 0.0, 0.5 * ss) * 0.35 * tuft  # faint wrinkled remnants of basement membrane
        sc.paint(sl, wr, "gbm")
    else:
        lr = (cc * rng.uniform(0.25, 0.5, ncell)).astype(np.float32)
        lr[rng.random(ncell) < 0.15] = -1.0  # mesangial areas without an open loop
        gain = 1 + 0.18 * sc.med[sl] + 0.12 * sc.fine[sl]
        sc.paint(sl, tuft, "mesangium", gain=gain)
        lr_px = lr.take(cidx)
        lrp = lr_px * (1 + 0.25 * sc.med[sl])
        lum_d = lrp - d1
        gw = max(0.45 * ss, 0.012 * R0)
        sc.paint(sl, _ridge(lum_d, -gw, gw) * tuft, "gbm")
        lum = np.clip(lum_d + 0.5, 0, 1) * tuft
        rbc = (rng.random(ncell) < (0.35 if sc.real else 0.25)).take(cidx)
        sc.paint(sl, lum, "caplumen", gain=1 + (0.1 if sc.real else 0.3) * sc.fine[sl])
        sc.paint(sl, lum * rbc * np.clip(0.5 + 0.5 * sc.med[sl], 0, 1), "rbc")

    # Bowman's capsule
    cap = np.clip(np.minimum(d_o, np.float32(cw) - d_o) + 0.5, 0, 1)
    g_cap = 1 + 0.15 * sc.fine[sl]
    if sclerosed:
        g_cap = g_cap + 0.25 * fib
    sc.paint(sl, cap, "capsule", gain=g_cap)

    lab = alpha >= 0.5
    sc.comp[sl][lab] = _GLOM
    sc.glom[sl][lab] = gid
    sc.layer[sl][lab] = layer
    sc.classes[gid] = "sclerosed" if sclerosed else "normal"

    # nuclei of the tuft (in matrix, not in open lumina)
    area_t = np.pi * Rt**2
    n_c = int(area_t / nd**2 * (0.45 if sclerosed else 2.6))
    ys, xs = _sample_points(rng, sl, n_c)
    ly, lx = ys.astype(np.intp) - sl[0].start, xs.astype(np.intp) - sl[1].start
    ok = d_t[ly, lx] > 0.35 * nd
    if not sclerosed:
        ok &= lr[cidx[ly, lx]] - d1[ly, lx] < 0.15 * nd
    ys, xs = ys[ok], xs[ok]
    n = len(ys)
    ra = nd / 2 * rng.uniform(0.8, 1.2, n)
    rb = ra * rng.uniform(0.5, 0.95, n)
    keep = _greedy_hardcore(ys, xs, ra, 0.8 if not sclerosed else 1.2, rng)
    n = len(keep)
    sc.nuclei.add(ys[keep], xs[keep], ra[keep], rb[keep], rng.uniform(0, np.pi, n),
                  rng.uniform(0.7, 1.15, n) if sc.real else rng.uniform(0.9, 1.2, n), rng.uniform(0.03, 0.2, n),
                  layer)

    # parietal epithelial nuclei, flattened along the inner surface of the capsule
    circ = 2 * np.pi * R0
    n = int(circ / (nd * rng.uniform(2.5, 4.5)) * (0.4 if sclerosed else 1.0))
    if n > 0:
        a = rng.uniform(0, 2 * np.pi, n)
        rr = R0 * _rho(a.astype(np.float32), hk) - cw - nd * 0.2
        py, px = _from_local(rr * np.cos(a), rr * np.sin(a), cy, cx, ell, ang)
        tang = np.arctan2(py - cy, px - cx) + np.pi / 2
        sc.nuclei.add(py, px, nd * rng.uniform(0.5, 0.7, n), nd * rng.uniform(0.18, 0.26, n), tang,
                      1.15, 0.03, layer)


# --------------------------------------------------------------------------------------------
# Vessels


def _draw_vessel(sc: _Scene, cy, cx, radius, artery: bool):
    rng, nd, ss = sc.rng, sc.nd, sc.ss
    ell = 1.0 + (rng.uniform(0, 0.7) if rng.random() < 0.5 else rng.uniform(0, 0.15))
    ang = rng.uniform(0, np.pi)
    hk = _harmonics(rng, 3, 0.04)
    R0 = radius / _rho_norm(hk)
    reach = R0 * 1.1 * np.sqrt(ell) + 2
    sl = sc.bbox(cy, cx, reach)
    if sl is None:
        return
    layer = sc.new_layer()
    yy, xx, u, v, r, th = _local_polar(sl, cy, cx, ell, ang)
    rho = R0 * _rho(th, hk)
    d_o = rho - r
    alpha = np.clip(d_o + 0.5, 0, 1)
    lum_frac = rng.uniform(0.35, 0.5) if artery else rng.uniform(0.3, 0.5)
    adv = R0 * (rng.uniform(0.1, 0.16) if artery else rng.uniform(0.08, 0.14))
    n_crinkle = rng.integers(10, 22)
    crinkle_phase = np.float32(rng.uniform(0, 2 * np.pi))
    crinkle = 1 + np.float32(0.04 if artery else 0.02) * np.sin(np.float32(n_crinkle) * th + crinkle_phase)
    r_lum = R0 * lum_frac * crinkle
    d_l = r_lum - r  # px inside the lumen
    wall_depth = (rho - r_lum)  # wall thickness at this angle

    m_tex = 1 + 0.15 * np.sin(r * np.float32(2 * np.pi / max(2.5 * ss, 0.9 * nd))) + 0.15 * sc.med[sl]
    sc.paint(sl, alpha, "adventitia", gain=1 + 0.25 * sc.med[sl])
    media = np.clip(d_o - np.float32(adv) + 0.5, 0, 1)
    sc.paint(sl, media, "muscle", gain=m_tex)
    iel = _ridge(d_l, -max(0.5 * ss, 0.012 * R0), max(0.5 * ss, 0.012 * R0) * (1.6 if artery else 1.0))
    sc.paint(sl, iel, "elastic")
    lum = np.clip(d_l - max(0.8 * ss, 0.01 * R0) + 0.5, 0, 1)
    sc.paint(sl, lum, "lumen", gain=1 + 0.3 * sc.fine[sl])
    blood = np.clip(sc.low[sl] * 1.5 - 0.5, 0, 1) * lum * (rng.random() < 0.5)
    sc.paint(sl, blood, "rbc", gain=0.8)

    lab = alpha >= 0.5
    sc.comp[sl][lab] = _ARTERY if artery else _ARTERIOLE
    sc.layer[sl][lab] = layer

    # smooth-muscle nuclei, elongated along the circumference
    wall_area = np.pi * R0**2 * (1 - lum_frac**2)
    n_c = int(wall_area / nd**2 * 1.6)
    ys, xs = _sample_points(rng, sl, n_c)
    ly, lx = ys.astype(np.intp) - sl[0].start, xs.astype(np.intp) - sl[1].start
    depth_in_media = d_o[ly, lx] - adv
    ok = (depth_in_media > 0.25 * nd) & (d_l[ly, lx] < -0.35 * nd) & (wall_depth[ly, lx] > 0)
    ys, xs = ys[ok], xs[ok]
    n = len(ys)
    ra = nd * rng.uniform(0.6, 0.95, n)
    rb = nd * rng.uniform(0.16, 0.24, n)
    tang = np.arctan2(ys - cy, xs - cx) + np.pi / 2 + rng.normal(0, 0.15, n)
    keep = _greedy_hardcore(ys, xs, (ra + rb) / 2, 0.9, rng)
    sc.nuclei.add(ys[keep], xs[keep], ra[keep], rb[keep], tang[keep], 1.1, 0.04, layer)
    # endothelial nuclei bulging into the lumen
    n = max(2, int(2 * np.pi * R0 * lum_frac / (nd * 3.0)))
    a = rng.uniform(0, 2 * np.pi, n)
    rr = R0 * lum_frac - 0.2 * nd
    py, px = _from_local(rr * np.cos(a), rr * np.sin(a), cy, cx, ell, ang)
    sc.nuclei.add(py, px, nd * 0.5, nd * 0.2, np.arctan2(py - cy, px - cx) + np.pi / 2, 1.15, 0.03, layer)


# --------------------------------------------------------------------------------------------
# Whitespace


def _draw_tissue_edge(sc: _Scene, objects):
    """Background beyond a noisy straight tissue edge, kept clear of ``objects`` [(y, x, r)]."""
    rng, (H, W) = sc.rng, sc.shape
    a = rng.uniform(0, 2 * np.pi)
    ny, nx = np.sin(a), np.cos(a)
    cy, cx = H / 2, W / 2
    half = abs(ny) * H / 2 + abs(nx) * W / 2  # projection half-extent of the tile
    off = rng.uniform(0.45, 0.9) * half
    amp = sc.D * rng.uniform(0.04, 0.12)
    for oy, ox, orad in objects:
        off = max(off, (oy - cy) * ny + (ox - cx) * nx + orad * 1.15 + 2 * amp)
    if off > half + amp:
        return
    yy = np.arange(H, dtype=np.float32)[:, None]
    xx = np.arange(W, dtype=np.float32)[None, :]
    s = (yy - cy) * np.float32(ny) + (xx - cx) * np.float32(nx) - np.float32(off) + np.float32(amp) * sc.low
    _apply_whitespace(sc, np.s_[:, :], np.clip(s + 0.5, 0, 1))


def _draw_tear(sc: _Scene, objects):
    rng, (H, W), D = sc.rng, sc.shape, sc.D
    length = D * rng.uniform(0.3, 1.0)
    width = max(1.5 * sc.ss, D * rng.uniform(0.02, 0.08))
    for _ in range(8):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        if all(np.hypot(cy - oy, cx - ox) > orad + length / 2 + 2 for oy, ox, orad in objects):
            break
    else:
        return
    ang = rng.uniform(0, np.pi)
    sl = sc.bbox(cy, cx, length / 2 + width)
    if sl is None:
        return
    yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
    along = xx * c + yy * s
    across = -xx * s + yy * c + np.float32(0.15 * length) * np.sin(along * np.float32(np.pi / length))
    prof = np.float32(width / 2) * np.sqrt(np.clip(1 - (2 * along / np.float32(length)) ** 2, 0, 1))
    prof = prof * (1 + 0.4 * sc.med[sl])
    _apply_whitespace(sc, sl, np.clip(prof - np.abs(across) + 0.5, 0, 1))


def _apply_whitespace(sc: _Scene, sl, alpha):
    sc.paint(sl, alpha, "background", gain=1 + 0.5 * sc.fine[sl])
    lab = alpha >= 0.5
    sc.comp[sl][lab] = _BG
    sc.layer[sl][lab] = 0


# --------------------------------------------------------------------------------------------
# Nuclei rendering and finishing


def _render_nuclei(sc: _Scene, spec: np.ndarray, p_frac: float = 0.5, tex: float = 0.2,
                   rim_weight: np.ndarray | None = None):
    """Rasterise nuclei (vectorised per size group); overlaps go to the nucleus whose interior is
    deeper at that pixel, which splits touching nuclei along a natural line. ``rim_weight``: per
    nucleus, how much darker its membrane is than its interior (default 0.22 for every nucleus)."""
    H, W = sc.shape
    labels = np.zeros(H * W, np.int32)
    if len(spec) == 0:
        return labels.reshape(H, W)
    rng = sc.rng
    y, x, ra, rb, ang, dark, irr = (spec[:, i] for i in range(7))
    n = len(y)
    ph = rng.uniform(0, 2 * np.pi, (n, 3))
    amps = rng.uniform(0.3, 1.0, (n, 3)) * irr[:, None]
    half = np.ceil(ra * (1 + 1.6 * irr) + 1).astype(np.intp)
    flat_all, depth_all, owner_all = [], [], []
    for b in np.unique(half):
        sel = np.nonzero(half == b)[0]
        o = np.arange(-b, b + 1)
        py = np.round(y[sel]).astype(np.intp)[:, None, None] + o[None, :, None]
        px = np.round(x[sel]).astype(np.intp)[:, None, None] + o[None, None, :]
        dy = (py - y[sel][:, None, None]).astype(np.float32)
        dx = (px - x[sel][:, None, None]).astype(np.float32)
        c = np.cos(ang[sel]).astype(np.float32)[:, None, None]
        s = np.sin(ang[sel]).astype(np.float32)[:, None, None]
        uu = (dx * c + dy * s) / ra[sel].astype(np.float32)[:, None, None]
        vv = (-dx * s + dy * c) / rb[sel].astype(np.float32)[:, None, None]
        rr = np.hypot(uu, vv)
        tt = np.arctan2(vv, uu)
        bnd = np.ones_like(rr)
        for k in range(3):
            bnd += amps[sel, k].astype(np.float32)[:, None, None] * np.cos(
                np.float32(k + 2) * tt + ph[sel, k].astype(np.float32)[:, None, None])
        depth = 1 - rr / bnd
        valid = (depth > -0.5 / np.maximum(rb[sel], 1)[:, None, None]) & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        valid = np.broadcast_to(valid, depth.shape)
        flat = np.broadcast_to(py * W + px, depth.shape)[valid]
        flat_all.append(flat)
        depth_all.append(depth[valid])
        owner_all.append(np.broadcast_to(sel[:, None, None], depth.shape)[valid])
    flat = np.concatenate(flat_all)
    depth = np.concatenate(depth_all)
    owner = np.concatenate(owner_all)
    order = np.lexsort((depth, flat))
    flat, depth, owner = flat[order], depth[order], owner[order]
    last = np.ones(len(flat), bool)
    last[:-1] = flat[1:] != flat[:-1]
    flat, depth, owner = flat[last], depth[last], owner[last]
    # anti-aliased coverage: depth * semi-minor axis ~ px to the boundary
    cov = np.clip(depth * rb[owner] + 0.5, 0, 1).astype(np.float32)
    rim = np.clip(1 - depth * rb[owner] / (0.9 * sc.ss + 0.08 * sc.nd), 0, 1)
    rim_term = 0.22 * rim if rim_weight is None else rim_weight[owner] * rim
    hn = sc.mat["nucleus"][0] * dark[owner] * (0.82 + rim_term + tex * sc.fine.ravel()[flat]
                                              + 0.1 * sc.med.ravel()[flat])
    hv, pv = sc.h.ravel(), sc.p.ravel()  # views
    hv[flat] += cov * (hn.astype(np.float32) - hv[flat])
    pv[flat] += cov * (np.float32(sc.mat["nucleus"][1]) - pv[flat]) * np.float32(p_frac)
    labels[flat[cov >= 0.5]] = owner[cov >= 0.5] + 1
    return labels.reshape(H, W)


# Nuclei fields: half-width of the per-field log nucleus size, the spread of the per-image median nucleus
# diameters of the real sets as stored (10th-90th percentile: MoNuSeg 17-30 px, exp(+-0.3); BBBC038
# fluorescence 13-29 px, exp(+-0.4))
_FIELD_SIZE_LOG = {"he": 0.3, "fluorescence": 0.4}
# Cytoplasm of cell-rich regions, (hematoxylin, eosin) ranges of each kind: eosinophilic (pink),
# amphophilic to basophilic (purple: as dark in grey as a pale nucleus, the phantom-trained model's main
# false positive before they were drawn), clear (vacuolated or fixation-retracted, near white).
_HE_CYTOPLASM = {"eosinophilic": ((0.08, 0.22), (0.5, 1.1)),
                 "basophilic": ((0.25, 0.8), (0.25, 0.6)),
                 "clear": ((0.02, 0.08), (0.03, 0.15))}


def _he_cell_sheets(rng: np.random.Generator, n: int, nd: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-rich regions of an H&E field and the nuclei of their sheets.

    A share ``U(0, 1) ** 0.6`` of the field (most fields, as in MoNuSeg's tumour and epithelium images)
    is cell-rich: the top of a smooth noise field with features ~3 nucleus diameters. Its nuclei sit on
    a jittered hexagonal lattice with spacing 1.6-2.6 diameters (one draw per field), so that their
    cells tile the region as epithelium does.

    Returns:
        ``(region (n, n) bool, centres (K, 2) float)`` in render px.
    """
    share = rng.uniform(0.0, 1.0) ** 0.6
    field = _value_noise(rng, (n, n), 3.0 * nd)
    if share <= 0.02:
        return np.zeros((n, n), bool), np.zeros((0, 2))
    region = field > np.quantile(field, 1.0 - share)
    step = nd * rng.uniform(1.6, 2.6)
    rows = np.arange(-0.5, n / (step * 0.866) + 1) * step * 0.866
    cols = np.arange(-0.5, n / step + 1) * step
    gy, gx = np.meshgrid(rows, cols, indexing="ij")
    gx = gx + (np.arange(len(rows)) % 2)[:, None] * step / 2
    c = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, 0.18 * step, (gy.size, 2))
    iy = np.clip(np.round(c[:, 0]).astype(np.intp), 0, n - 1)
    ix = np.clip(np.round(c[:, 1]).astype(np.intp), 0, n - 1)
    return region, c[region[iy, ix]]


def _he_tissue(sc: _Scene, centres: np.ndarray, radii: np.ndarray, fibre_ang: float,
               region: np.ndarray) -> np.ndarray:
    """Paint an H&E field's tissue around its nuclei into ``sc.h`` / ``sc.p``; return the whitespace opacity.

    Real H&E nucleus images (MoNuSeg's seven organs) hold much besides nuclei that is as dark as one in
    grey: stroma whose eosin runs from pale to dense red collagen, fibres that bend, thin wispy strands;
    cell-rich regions (epithelium, infiltrates) where every nucleus sits in a cell of eosinophilic, purple or clear
    cytoplasm with membranes between cells; red blood cells; lumina and fixation gaps. Each field draws
    its own mix: the share of cell-rich area, the cytoplasm kinds' weights, the eosin density, the fibre
    contrast and waviness, red-cell clusters.

    Args:
        sc: the scene (render px; ``sc.nd`` the nominal nucleus diameter).
        centres: ``(K, 2)`` nucleus centres (y, x), render px.
        radii: ``(K,)`` their mean radii, px.
        fibre_ang: the stroma fibres' direction, radians (elongated nuclei follow it).
        region: ``(H, W)`` bool, the cell-rich regions (:func:`_he_cell_sheets`).

    Returns:
        ``(H, W)`` float32 whitespace opacity in [0, 1] (>= 0.5 is background in the compartments).
    """
    rng, nd = sc.rng, sc.nd
    N = sc.shape[0]
    yy = np.arange(N, dtype=np.float32)[:, None]
    xx = np.arange(N, dtype=np.float32)[None, :]
    # stroma: noise stretched along the fibre direction (long 4 nd, thin 0.25 nd), bent by a smooth field
    c, s = np.float32(np.cos(fibre_ang)), np.float32(np.sin(fibre_ang))
    along = (xx * c + yy * s) / np.float32(4.0 * nd)
    across = (-xx * s + yy * c) / np.float32(0.25 * nd) + sc.low * np.float32(rng.uniform(0.0, 6.0))
    streak = _interp_lattice(_smoothed_lattice(rng, 64, 512), across + np.float32(rng.uniform(0, 64)),
                             along + np.float32(rng.uniform(0, 64)))
    streak = streak * np.clip(0.6 + 0.6 * sc.low, 0, None)  # fibrous in places, smooth elsewhere
    # eosin from faint (bluish-grey images) to dense red, hematoxylin from clean to purple-washed
    h_bg, p_bg = rng.uniform(0.05, 0.35), float(np.exp(rng.uniform(np.log(0.15), np.log(1.2))))
    fib = rng.uniform(0.2, 0.7)
    sc.h[:] = np.maximum(h_bg * (1 + 0.3 * sc.med + 0.3 * sc.fine), 0.0)
    sc.p[:] = np.maximum(p_bg * (1 + fib * streak + 0.25 * sc.med + 0.25 * sc.fine), 0.0)
    # wispy fibres: thin wavy strands (the zero contours of a smooth noise field, ~1.5 nd apart), pink to
    # purple; in grey they are as dark as a nucleus but a pixel or two wide
    wisp = np.exp(-np.square(_value_noise(rng, (N, N), 1.5 * nd) / np.float32(rng.uniform(0.08, 0.2))))
    wisp *= np.clip(0.5 + 0.5 * _value_noise(rng, (N, N), 4.0 * nd), 0, 1) * np.float32(rng.uniform(0.0, 1.0))
    sc.h += wisp * np.float32(rng.uniform(0.0, 0.35))
    sc.p += wisp * np.float32(rng.uniform(0.2, 0.8))

    # cell-rich regions: each nucleus's Voronoi cell out to a cell radius, per-cell cytoplasm, membranes
    k = len(centres)
    kinds = list(_HE_CYTOPLASM)
    weights = rng.dirichlet(np.full(len(kinds), 0.7))
    cell_r = radii * rng.uniform(1.6, 3.2)
    membrane = rng.uniform(0.0, 1.0)
    if k >= 2 and region.any():
        grid = np.stack(np.nonzero(region), 1).astype(np.float32)
        dist, idx = cKDTree(centres).query(grid, k=2)
        inside = dist[:, 0] < cell_r[idx[:, 0]]
        kind = rng.choice(len(kinds), size=k, p=weights)
        hc = np.empty(k, np.float32)
        pc = np.empty(k, np.float32)
        for j, name in enumerate(kinds):
            (h0, h1), (p0, p1) = _HE_CYTOPLASM[name]
            sel = kind == j
            hc[sel] = rng.uniform(h0, h1, sel.sum())
            pc[sel] = rng.uniform(p0, p1, sel.sum())
        yi, xi = grid[inside, 0].astype(np.intp), grid[inside, 1].astype(np.intp)
        owner = idx[inside, 0]
        tex = np.maximum(1 + 0.2 * sc.fine[yi, xi] + 0.2 * sc.med[yi, xi], 0.0)
        sc.h[yi, xi] = hc[owner] * tex
        sc.p[yi, xi] = pc[owner] * tex
        # membranes: within ~0.6 px of the bisector with the next nucleus (or the cell's rim)
        edge = np.minimum((dist[inside, 1] - dist[inside, 0]) / 2, cell_r[owner] - dist[inside, 0])
        w = np.clip(1.0 - edge / np.float32(0.6 * sc.ss + 0.04 * nd), 0, 1).astype(np.float32) * membrane
        sc.h[yi, xi] += w * 0.12
        sc.p[yi, xi] += w * 0.45

    # red blood cells: clusters strung along a capillary, in the stroma only
    for _ in range(rng.poisson(rng.uniform(0.0, 2.5))):
        m = int(rng.integers(3, 16))
        y0, x0 = rng.uniform(0, N, 2)
        a = rng.uniform(0, np.pi)
        t = np.cumsum(rng.uniform(0.5, 0.9, m)) * 0.8 * nd
        ry = y0 + t * np.sin(a) + rng.normal(0, 0.25 * nd, m)
        rx = x0 + t * np.cos(a) + rng.normal(0, 0.25 * nd, m)
        r = 0.38 * nd * rng.uniform(0.85, 1.15)
        for cy, cx in zip(ry, rx):
            sl = sc.bbox(cy, cx, r + 1)
            if sl is None:
                continue
            dd = np.hypot(*_local_polar(sl, cy, cx, 1.0, 0.0)[:2])
            cov = np.clip(r - dd + 0.5, 0, 1) * (~region[sl])
            sc.paint(sl, cov, "rbc", gain=1.0, gain_p=np.float32(1 - 0.3 * np.exp(-(dd / (0.5 * r)) ** 2)))

    gaps = np.clip((sc.low - rng.uniform(1.1, 2.4)) * 2.0, 0, 1)
    sc.paint(np.s_[:, :], gaps, "background", gain=1 + 0.5 * sc.fine)
    return gaps


def _he_nucleoli(sc: _Scene, centres: np.ndarray, radii: np.ndarray, labels: np.ndarray) -> None:
    """A dark nucleolus in each vesicular nucleus (a Gaussian spot of hematoxylin, sd 0.12 of the
    nucleus diameter, off-centre by up to 0.3 radii), inside the nucleus's own pixels only."""
    if len(centres) == 0:
        return
    rng = sc.rng
    off = rng.uniform(0, 0.3, len(centres)) * radii
    a = rng.uniform(0, 2 * np.pi, len(centres))
    y = np.clip(np.round(centres[:, 0] + off * np.sin(a)), 0, sc.shape[0] - 1).astype(np.intp)
    x = np.clip(np.round(centres[:, 1] + off * np.cos(a)), 0, sc.shape[1] - 1).astype(np.intp)
    spots = np.zeros(sc.shape, np.float32)
    np.add.at(spots, (y, x), 1.0)
    sd = max(0.5, 0.12 * sc.nd)
    spots = gaussian_filter(spots, sd, truncate=3.0) * np.float32(2 * np.pi * sd * sd * 0.9)
    sc.h += spots * (labels > 0)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel positive ids to 1..K in order of their old id; returns uint16."""
    present = np.bincount(labels.ravel())
    present[0] = 0
    lut = np.cumsum(present > 0).astype(np.uint16)
    lut[0] = 0
    if lut[-1] > np.iinfo(np.uint16).max:
        raise ParamError("more than 65535 instances; use a smaller size")
    return lut[labels]


def _finish(sc: _Scene, rng, out_shape, jitter, ss, i0=255.0, blur=(0.45, 0.85)) -> PhantomTile:
    H, W = sc.shape
    spec = sc.nuclei.array()
    if len(spec):
        iy = np.clip(spec[:, 0].round().astype(np.intp), 0, H - 1)
        ix = np.clip(spec[:, 1].round().astype(np.intp), 0, W - 1)
        inside = (spec[:, 0] > -0.5) & (spec[:, 0] < H - 0.5) & (spec[:, 1] > -0.5) & (spec[:, 1] < W - 0.5)
        near = (spec[:, 0] > -spec[:, 2]) & (spec[:, 0] < H + spec[:, 2]) & (spec[:, 1] > -spec[:, 2]) & (
            spec[:, 1] < W + spec[:, 2])
        owned = sc.layer[iy, ix] == spec[:, 7].astype(np.uint16)
        spec = spec[(inside & owned) | (~inside & near & (spec[:, 7] == 1))]
    nuc = _render_nuclei(sc, spec)

    slide = {}
    if sc.cal is None:
        sig = rng.uniform(*blur) * ss
    else:  # calibrated mode: stain, amounts and focus drawn from the real distribution
        slide = _slide_parameters(rng, sc.cal, sc.stain)
        sig = rng.uniform(*blur) * ss * slide["blur_ratio"] * _CAL_BLUR_BASE
    h = gaussian_filter(sc.h, sig, truncate=3.0)
    p = gaussian_filter(sc.p, sig, truncate=3.0)
    if sc.cal is None:
        # per-slide stain amounts: section thickness scales both stains, staining time each one;
        # log-sds chosen so that the spread of mean tissue OD across patches approaches the spread
        # across real PAS crops from different slides (~30 % relative)
        thick = np.exp(rng.normal(0, 0.18 * jitter))
        gh = thick * np.exp(rng.normal(0, 0.15 * jitter))
        gp = thick * np.exp(rng.normal(0, 0.15 * jitter))
        M = stain_matrix(sc.stain)[:2]
        if jitter > 0:
            M = jitter_stain_matrix(stain_matrix(sc.stain), rng, sigma=0.05 * jitter)[:2]
    else:
        M, (gh, gp) = slide["stain_matrix"], slide["gains"]
        slide = {"stain_matrix": M.tolist(), "gains": [float(gh), float(gp)], "blur_px": float(sig / ss)}
    conc = np.stack([h * np.float32(gh), p * np.float32(gp)], -1)
    img = concentrations_to_intensity(conc, M, i0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(1.2)
    comp, glom = sc.comp, sc.glom
    if ss > 1:
        oh, ow = out_shape
        img = img[: oh * ss, : ow * ss].reshape(oh, ss, ow, ss, 3).mean((1, 3))
        o = ss // 2
        comp, glom, nuc = comp[o::ss, o::ss], glom[o::ss, o::ss], nuc[o::ss, o::ss]
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    glom_c = _consecutive(glom)
    classes = {}
    for old in sorted(sc.classes):
        hit = glom == old
        if hit.any():
            classes[int(glom_c[hit][0])] = sc.classes[old]
    return PhantomTile(
        image=np.ascontiguousarray(image),
        compartments=np.ascontiguousarray(comp, dtype=np.uint8),
        glomeruli=np.ascontiguousarray(glom_c),
        glomerulus_class=classes,
        nuclei=np.ascontiguousarray(_consecutive(nuc)),
        stain=sc.stain,
        slide=slide,
    )


def _supersample(shape) -> int:
    # x2 supersampling only for very small outputs: every drawn edge is already anti-aliased
    # analytically (coverage = clip(signed distance + 0.5, 0, 1)), and at 64 px supersampling
    # would double the cost of the builder's most frequent call for no visible gain.
    return 2 if min(shape) <= 48 else 1


# --------------------------------------------------------------------------------------------
# Public API


def render_tile(
    seed: int,
    size: tuple[int, int] = (512, 512),
    stain: str = "pas",
    glomerulus_diameter: float = 180.0,
    n_glomeruli: int | None = None,
    sclerosed_fraction: float = 0.25,
    nucleus_diameter: float = 9.0,
    stain_jitter: float = 1.0,
    calibration: PhantomCalibration | None = None,
) -> PhantomTile:
    """A kidney-biopsy tissue tile: tubulointerstitium, glomeruli, vessels and whitespace.

    Args:
        seed: non-negative int; determines everything.
        size: ``(H, W)`` in px (or one int), each in [16, 8192].
        stain: "pas" or "he".
        glomerulus_diameter: mean equivalent diameter of a normal glomerulus in px, in [8, 4096];
            each glomerulus varies by +-15 %, sclerosed ones are 0.7-0.95 times smaller.
        n_glomeruli: number of glomeruli to place (centres inside the tile, parts may be cut by
            the border), in [0, 64]; ``None`` draws uniformly from ``1..k`` where ``k = clip(area /
            (1.6 D)^2, 1, 3)``. Placement is non-overlapping and gives up on a glomerulus that does
            not fit after 200 tries, so fewer may appear in a crowded tile.
        sclerosed_fraction: probability that a glomerulus is globally sclerosed, in [0, 1].
        nucleus_diameter: mean nucleus diameter in px, in [1, 256].
        stain_jitter: scale of per-slide colour variation (stain vector angles and amounts);
            0 renders the reference stain exactly, in [0, 5].
        calibration: ``None`` (the default phantom, unchanged) or a :class:`PhantomCalibration`
            (:func:`histolib.calibration.phantom_calibration`): per-slide stain, amounts and focus drawn
            from the real distribution instead of ``stain_jitter``, and with ``structure`` the realistic
            structures. Its ``stain`` must equal ``stain``.

    Returns:
        :class:`PhantomTile` of shape ``(H, W)``; glomerulus ids follow placement order.

    Raises:
        ParamError: an argument is out of range (the message names it), or the tile would hold
            more than 65535 nuclei (uint16 ids): use a smaller size or larger nuclei.
    """
    seed = _check_seed(seed)
    shape = _check_size(size)
    stain = _check_stain(stain)
    D = _check_float(glomerulus_diameter, "glomerulus_diameter", 8.0, 4096.0)
    if n_glomeruli is not None and (
        isinstance(n_glomeruli, bool) or not isinstance(n_glomeruli, (int, np.integer)) or not 0 <= n_glomeruli <= 64
    ):
        raise ParamError(f"n_glomeruli must be None or an integer in [0, 64], got {n_glomeruli!r}")
    fs = _check_float(sclerosed_fraction, "sclerosed_fraction", 0.0, 1.0)
    nd = _check_float(nucleus_diameter, "nucleus_diameter", 1.0, 256.0)
    jit = _check_float(stain_jitter, "stain_jitter", 0.0, 5.0)
    cal = _check_calibration(calibration, stain)

    rng = np.random.default_rng(seed)
    ss = _supersample(shape)
    H, W = shape[0] * ss, shape[1] * ss
    Ds, nds = D * ss, nd * ss
    sc = _Scene(rng, (H, W), stain, Ds, nds, ss, cal)

    if n_glomeruli is None:
        kmax = int(np.clip(H * W / (1.6 * Ds) ** 2, 1, 3))
        n_glomeruli = int(rng.integers(1, kmax + 1))
    gloms = []  # (y, x, r, sclerosed, diameter)
    for _ in range(n_glomeruli):
        scl = bool(rng.random() < fs)
        d = Ds * rng.uniform(0.85, 1.15) * (rng.uniform(0.7, 0.95) if scl else 1.0)
        for _try in range(200):
            y, x = rng.uniform(0, H), rng.uniform(0, W)
            if all(np.hypot(y - g[0], x - g[1]) > (d / 2 + g[2]) * 1.15 + 0.05 * Ds for g in gloms):
                gloms.append((y, x, d / 2 * 1.12, scl, d))
                break
    vessels = []  # (y, x, r, artery)
    n_art = int(rng.random() < 0.3)
    n_arl = int(rng.integers(0, 3))
    for artery in [True] * n_art + [False] * n_arl:
        rv = Ds * (rng.uniform(0.3, 0.6) if artery else rng.uniform(0.09, 0.16))
        for _try in range(60):
            y, x = rng.uniform(0, H), rng.uniform(0, W)
            if all(np.hypot(y - o[0], x - o[1]) > (rv * 1.6 + o[2]) * 1.1 for o in gloms + vessels):
                vessels.append((y, x, rv * 1.6, artery))
                break

    _draw_tubulointerstitium(sc)
    objects = [(g[0], g[1], g[2] * 1.1) for g in gloms] + [(v[0], v[1], v[2]) for v in vessels]
    if rng.random() < 0.35:
        _draw_tissue_edge(sc, objects)
    for _ in range(int(rng.poisson(0.8 * H * W / (2.5 * Ds) ** 2))):
        _draw_tear(sc, objects)
    for y, x, r, artery in vessels:
        _draw_vessel(sc, y, x, r / 1.6, artery)
    for gid, (y, x, _r, scl, d) in enumerate(gloms, start=1):
        _draw_glomerulus(sc, y, x, d, scl, gid)
    return _finish(sc, rng, shape, jit, ss)


def glomerulus_patch(
    seed: int,
    size: int = 256,
    stain: str = "pas",
    sclerosed: bool | None = False,
    fill: tuple[float, float] = (0.45, 0.75),
    stain_jitter: float = 1.0,
    calibration: PhantomCalibration | None = None,
) -> PhantomTile:
    """A square patch centred on one complete glomerulus, for glomerulus segmentation/classification.

    The central glomerulus (instance id 1) has an equivalent diameter (of its whole area incl.
    Bowman's capsule) drawn uniformly from ``fill * size`` and its centre within +-4 % of the
    patch centre (less when ``fill`` is large); the nucleus diameter is ``D / 20`` and tubules
    scale with ``D``. The surround is tubulointerstitium, with a chance of a neighbouring
    glomerulus (35 %, sclerosed with probability 0.25) or an arteriole/artery (40 %) cut by the
    patch border, of a tissue edge (15 %) and of tears.

    Args:
        seed: non-negative int; determines everything.
        size: side in px, in [16, 4096]; sizes <= 48 are supersampled x2.
        stain: "pas" or "he".
        sclerosed: class of the central glomerulus; ``None`` draws it (probability 0.5).
        fill: ``(lo, hi)`` range of the glomerulus diameter as a fraction of ``size``,
            ``0.1 <= lo <= hi <= 1.0``; above ~0.85 the irregular outline may touch the border
            (the centre offset shrinks to keep the glomerulus inside as far as possible).
        stain_jitter: scale of per-slide colour variation, in [0, 5].
        calibration: ``None`` (the default phantom, unchanged) or a :class:`PhantomCalibration`
            (:func:`histolib.calibration.phantom_calibration`): per-slide stain, amounts and focus drawn
            from the real distribution instead of ``stain_jitter``, and with ``structure`` the realistic
            structures. Its ``stain`` must equal ``stain``.

    Returns:
        :class:`PhantomTile` of shape ``(size, size)``; ``glomerulus_class[1]`` is the centre's.

    Raises:
        ParamError: an argument is out of range (the message names it).
    """
    seed = _check_seed(seed)
    n = _check_size(size, lo=16, hi=4096)[0]
    if isinstance(size, (tuple, list)) and len(set(size)) != 1:
        raise ParamError(f"size must be a single int (square patch), got {size!r}")
    stain = _check_stain(stain)
    if sclerosed is not None and not isinstance(sclerosed, (bool, np.bool_)):
        raise ParamError(f"sclerosed must be True, False or None, got {sclerosed!r}")
    try:
        lo, hi = (float(v) for v in fill)
    except (TypeError, ValueError):
        raise ParamError(f"fill must be a (lo, hi) pair of fractions, got {fill!r}") from None
    if not (0.1 <= lo <= hi <= 1.0):
        raise ParamError(f"fill must satisfy 0.1 <= lo <= hi <= 1.0, got {fill!r}")
    jit = _check_float(stain_jitter, "stain_jitter", 0.0, 5.0)
    cal = _check_calibration(calibration, stain)

    rng = np.random.default_rng(seed)
    if sclerosed is None:
        sclerosed = bool(rng.random() < 0.5)
    ss = _supersample((n, n))
    N = n * ss
    f = rng.uniform(lo, hi)
    D = f * N
    # real glomeruli hold smaller, more numerous nuclei (~D / 28 in the real crops)
    nd = D / (26.0 if cal is not None and cal.structure else 20.0)
    sc = _Scene(rng, (N, N), stain, D, nd, ss, cal)
    off = min(0.04, max(0.0, (1.0 - 1.12 * f) / 2))  # 1.12: outline bulges beyond the mean radius
    cy = N / 2 + rng.uniform(-off, off) * N
    cx = N / 2 + rng.uniform(-off, off) * N
    objects = [(cy, cx, D / 2 * 1.2)]

    extra_glom = None
    if rng.random() < 0.35:
        d2 = D * rng.uniform(0.8, 1.15)
        a = rng.uniform(0, 2 * np.pi)
        dist = max(D / 2 + d2 / 2 + 0.12 * D, rng.uniform(0.5, 0.75) * N + d2 * 0.15)
        extra_glom = (cy + dist * np.sin(a), cx + dist * np.cos(a), d2, bool(rng.random() < 0.25))
        objects.append((extra_glom[0], extra_glom[1], d2 / 2 * 1.2))
    vessel = None
    if rng.random() < 0.4:
        artery = rng.random() < 0.3
        rv = D * (rng.uniform(0.25, 0.4) if artery else rng.uniform(0.1, 0.17))
        for _try in range(30):
            a = rng.uniform(0, 2 * np.pi)
            dist = D / 2 + rv + rng.uniform(0.05, 0.35) * D
            vy, vx = cy + dist * np.sin(a), cx + dist * np.cos(a)
            if all(np.hypot(vy - o[0], vx - o[1]) > o[2] + rv * 1.1 for o in objects):
                vessel = (vy, vx, rv, artery)
                objects.append((vy, vx, rv * 1.1))
                break

    _draw_tubulointerstitium(sc)
    if rng.random() < 0.15:
        _draw_tissue_edge(sc, objects)
    for _ in range(int(rng.poisson(0.3))):
        _draw_tear(sc, objects)
    if vessel is not None:
        _draw_vessel(sc, *vessel)
    _draw_glomerulus(sc, cy, cx, D, bool(sclerosed), 1)
    if extra_glom is not None:
        _draw_glomerulus(sc, extra_glom[0], extra_glom[1], extra_glom[2], extra_glom[3], 2)
    return _finish(sc, rng, (n, n), jit, ss)


def nuclei_field(
    seed: int,
    size: int = 256,
    style: str = "he",
    density: float | None = None,
    nucleus_diameter: float = 14.0,
) -> PhantomTile:
    """A nuclei-dense field with a nucleus instance map, for nuclei instance segmentation (paper 004).

    Nuclei are placed partly in clusters (Thomas process: parents uniform, children Gaussian around
    them with sd 1.5 nucleus diameters) and partly uniformly, then thinned so that centres are at
    least ~0.7 radii-sums apart: many nuclei touch and some look overlapping (the deeper interior
    wins each contested pixel). Each field draws its own nucleus size between ``exp(-a)`` and ``exp(a)``
    times ``nucleus_diameter`` (``a`` 0.3 for H&E, 0.4 for fluorescence: the spread between images of
    the real sets; area factor uniform, so that the median over all nuclei of many fields stays at
    ``nucleus_diameter``), and within a field diameters are lognormal (log-sd 0.22); shapes are ellipses (aspect
    1-1.5 mostly, 15 % elongated up to 4) with a random 2nd-4th-harmonic boundary perturbation,
    strong for a third of them (irregular blobs).

    H&E fields also draw the tissue around the nuclei (:func:`_he_tissue`): cell-rich sheets whose
    nuclei sit in cells of eosinophilic, purple or clear cytoplasm with membranes
    (:func:`_he_cell_sheets`), stroma from pale to dense red with bent fibres and thin wispy strands,
    red blood cells and whitespace; per field, the share of pale vesicular nuclei (dark membrane,
    open chromatin, a nucleolus) and the hematoxylin gain. None of these is labelled a nucleus.

    Args:
        seed: non-negative int; determines everything.
        size: side in px, in [16, 4096].
        style: "he" (H&E tissue as above; stain vectors jittered per field) or "fluorescence" (dark
            background, bright DAPI/Hoechst-like nuclei, grey stored as ``(H, W, 3)`` uint8 like
            BBBC038's files; background and brightness log-uniform, from barely visible to saturated).
        density: fraction of the area covered by scattered nuclei before thinning, in [0.01, 0.8]
            (H&E cell sheets add theirs); ``None`` draws it from U(0.06, 0.25) (H&E) or log-uniform
            on [0.02, 0.3] (fluorescence: some BBBC038 images hold a handful of nuclei).
        nucleus_diameter: median nucleus diameter in px over fields, in [2, 128].

    Returns:
        :class:`PhantomTile`; ``compartments`` is 1 (tissue) with 0 in H&E whitespace gaps,
        ``glomeruli`` is all zero and ``glomerulus_class`` empty; ``stain`` is "he" or
        "fluorescence".

    Raises:
        ParamError: an argument is out of range (the message names it).
    """
    seed = _check_seed(seed)
    n = _check_size(size, lo=16, hi=4096)[0]
    if isinstance(size, (tuple, list)) and len(set(size)) != 1:
        raise ParamError(f"size must be a single int (square field), got {size!r}")
    style = _check_stain(style, ("he", "fluorescence"), name="style")
    if density is not None:
        density = _check_float(density, "density", 0.01, 0.8)
    nd0 = _check_float(nucleus_diameter, "nucleus_diameter", 2.0, 128.0)

    rng = np.random.default_rng(seed)
    if density is None:  # fluorescence fields (BBBC038) are sparser than H&E tissue, some nearly empty
        density = float(np.exp(rng.uniform(np.log(0.02), np.log(0.3))) if style == "fluorescence"
                        else rng.uniform(0.06, 0.25))  # H&E: cell sheets add their nuclei (_he_cell_sheets)
    ss = _supersample((n, n))
    N, nd = n * ss, nd0 * ss
    sc = _Scene(rng, (N, N), "he", 8 * nd, nd, ss)
    # one field = one image: its nuclei share a size (real images differ by ~1.8x (MoNuSeg's organs) to
    # ~2.2x (BBBC038's cell lines) in median nucleus diameter within a set brought to one scale). The
    # nucleus *area* factor is uniform on [exp(-2a), exp(2a)]: a field of smaller nuclei holds more of
    # them (count ~ 1 / area), so this keeps the median over all nuclei, which sets a real set's scale
    # (histolib.data.nuclei_scale), at ``nucleus_diameter``
    a = _FIELD_SIZE_LOG[style]
    nd = nd * float(np.sqrt(rng.uniform(np.exp(-2 * a), np.exp(2 * a))))

    # point pattern: clustered + uniform
    n_nuc = int(density * N * N / (np.pi / 4 * nd**2) * 1.3)
    n_cl = int(n_nuc * rng.uniform(0.4, 0.8))
    n_par = max(1, n_cl // 8)
    par = rng.uniform(-nd, N + nd, (n_par, 2))
    kids = par[rng.integers(0, n_par, n_cl)] + rng.normal(0, 1.5 * nd, (n_cl, 2))
    pts = np.concatenate([kids, rng.uniform(-nd / 2, N + nd / 2, (n_nuc - n_cl, 2))])
    region = None
    if style == "he":
        region, sheet = _he_cell_sheets(rng, N, nd)
        pts = np.concatenate([pts, sheet])
    m = len(pts)
    d = nd * np.exp(rng.normal(0, 0.22, m))
    aspect = np.where(rng.random(m) < 0.15, rng.uniform(1.5, 4.0, m), rng.uniform(1.0, 1.5, m))
    ra = d / 2 * np.sqrt(aspect)
    rb = d / 2 / np.sqrt(aspect)
    irr = np.where(rng.random(m) < 0.33, rng.uniform(0.12, 0.3, m), rng.uniform(0.0, 0.1, m))
    keep = _greedy_hardcore(pts[:, 0], pts[:, 1], np.sqrt(ra * rb), 0.7, rng)
    pts, ra, rb, irr = pts[keep], ra[keep], rb[keep], irr[keep]
    k = len(keep)
    radii = np.sqrt(ra * rb)
    if style == "he":
        # per image: the share of pale vesicular nuclei and how dark hematoxylin stains them
        vesicular = rng.random(k) < rng.uniform(0.1, 0.6)
        gain = float(np.exp(rng.uniform(-0.1, 0.45)))
        dark = gain * np.where(vesicular, rng.uniform(0.45, 0.75, k), rng.uniform(0.85, 1.3, k))
    else:
        vesicular = rng.random(k) < 0.4
        dark = np.where(vesicular, rng.uniform(0.45, 0.7, k), rng.uniform(0.8, 1.25, k))
    # elongated (fibroblast-like) nuclei follow the stroma fibres; the rest are oriented at random
    fibre_ang = rng.uniform(0, np.pi)
    nuc_ang = np.where(ra / rb > 2.2, fibre_ang + rng.normal(0, 0.25, k), rng.uniform(0, np.pi, k))
    sc.nuclei.add(pts[:, 0], pts[:, 1], ra, rb, nuc_ang, dark, irr, 1)

    comp = np.ones((N, N), np.uint8)
    if style == "he":
        gaps = _he_tissue(sc, pts, radii, fibre_ang, region)
        comp[gaps >= 0.5] = _BG
        # vesicular nuclei: open chromatin inside a dark membrane (a ring at the cpu scale)
        rim_w = np.where(vesicular, rng.uniform(0.5, 1.3, k), 0.22)
        labels = _render_nuclei(sc, sc.nuclei.array(), p_frac=0.6, tex=0.45, rim_weight=rim_w)
        _he_nucleoli(sc, pts[vesicular], radii[vesicular], labels)
        # focus: MoNuSeg brought to the profile's nucleus size is sharp (var(Laplacian) / var(grey) 0.85
        # [0.28, 2.2] on 128-px tiles); 0.35-0.8 px gives 0.93 [0.27, 4.8] (0.6-1.5 px gave 0.11)
        sig = rng.uniform(0.35, 0.8) * ss
        h = gaussian_filter(sc.h, sig, truncate=3.0) * np.float32(np.exp(rng.normal(0, 0.12)))
        p = gaussian_filter(sc.p, sig, truncate=3.0) * np.float32(np.exp(rng.normal(0, 0.15)))
        M = jitter_stain_matrix(stain_matrix("he"), rng, sigma=0.06)[:2]
        img = concentrations_to_intensity(np.stack([h, p], -1), M)
        img += rng.normal(0, 1.2, img.shape).astype(np.float32)
        stain = "he"
    else:
        sc.h[:] = 0.0
        sc.p[:] = 0.0
        # Calibrated against BBBC038 fluorescence (grey stored as RGB; at 9 px nuclei: background ~6,
        # nuclei ~50 on average but from faint to saturated between images, 3-20 % of pixels nuclei).
        labels = _render_nuclei(sc, sc.nuclei.array(), p_frac=0.0, tex=0.2)
        sig = rng.uniform(0.6, 1.1) * ss
        sgl = gaussian_filter(sc.h, sig, truncate=3.0)
        # background and brightness log-uniform: BBBC038's backgrounds run from ~2 to ~14 grey levels and its
        # images from barely visible to saturated nuclei
        bg = np.float32(np.exp(rng.uniform(np.log(1.5), np.log(16.0)))) * (1 + 0.3 * sc.low)
        gain = np.float32(np.exp(rng.uniform(np.log(15.0), np.log(200.0))))
        grey = bg + gain * sgl + rng.normal(0, 1.5, (N, N)).astype(np.float32)
        img = np.repeat(grey[..., None], 3, axis=2)  # grey stored as RGB, as the BBBC files
        stain = "fluorescence"
    if ss > 1:
        img = img.reshape(n, ss, n, ss, 3).mean((1, 3))
        o = ss // 2
        comp, labels = comp[o::ss, o::ss], labels[o::ss, o::ss]
    return PhantomTile(
        image=np.clip(np.rint(img), 0, 255).astype(np.uint8),
        compartments=np.ascontiguousarray(comp),
        glomeruli=np.zeros((n, n), np.uint16),
        glomerulus_class={},
        nuclei=np.ascontiguousarray(_consecutive(labels)),
        stain=stain,
    )
