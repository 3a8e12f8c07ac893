"""Stain vectors estimated from an image: Macenko's method, and angles between stain vectors.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009. With
the Beer-Lambert model of :mod:`histolib.ops.stain` (``OD = C @ M``, natural logarithm), the optical
density of every stained pixel is a non-negative mix of the two stain vectors, so tissue OD lies in the
plane they span, inside the wedge between them:

1. ``OD = -ln(max(I, 1) / i0)`` per pixel and channel; keep the *tissue* pixels whose OD norm ``|OD|``
   exceeds ``beta`` (near-white background and unstained pixels carry no direction). Common implementations
   require ``OD > beta`` in *every* channel instead; that drops nearly pure eosin or PAS pixels (their red OD
   is small) and pulls the second vector towards hematoxylin by several degrees, so the norm is used here.
2. The plane: the two leading right singular vectors ``e1, e2`` of the tissue OD matrix ``X`` (``(n, 3)``;
   the *uncentred* second moment ``X^T X / n``, because the stain plane passes through the origin),
   ``e1`` signed to point into positive OD.
3. Each pixel's angle in that plane ``phi = atan2(X e2, X e1)``; the robust extremes
   ``phi_lo, phi_hi`` are its ``alpha``-th and ``(100 - alpha)``-th percentiles (not the min / max,
   which single outliers decide).
4. The stain vectors ``v = cos(phi) e1 + sin(phi) e2`` at both extremes, normalised, signed so their
   components sum to ``>= 0``.
5. **Order rule (hematoxylin first)**: hematoxylin absorbs red light far more than eosin or PAS magenta
   (red OD component 0.56-0.65 of a unit hematoxylin vector, 0.07-0.22 for eosin and PAS magenta), so
   the vector with the larger *red* component is returned first. This is the rule of Macenko's reference
   implementation (``if vMin[0] > vMax[0]``).

Concentrations then follow from :func:`histolib.ops.stain.od_to_concentrations` with the 3x3 matrix of
:func:`macenko_stain_matrix` (the two vectors plus their residual direction).

Blank or one-colour images have no stain plane: fewer than ``min_pixels`` tissue pixels, or two extreme
vectors closer than ``min_angle_deg``, raise ``ValueError`` naming ``rgb`` (never a silent default).

Pure numpy; imports nothing from histolib except :mod:`histolib.ops.stain` (same layer).
"""

from __future__ import annotations

import numpy as np

from histolib.ops.stain import residual_vector, rgb_to_od

__all__ = ["macenko_stain_vectors", "macenko_stain_matrix", "stain_vector_angle", "tissue_od"]


def _check_range(value, name: str, lo: float, hi: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def tissue_od(rgb: np.ndarray, beta: float = 0.15, i0: float = 255.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Optical densities ``(n, 3)`` float32 of the pixels whose OD norm ``|OD|`` exceeds ``beta``.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        beta: OD threshold (Macenko's 0.15): a pixel is tissue when ``|OD| > beta``.
        i0: incident light intensity (white level), in ``(1, 255]``.
        mask: optional ``(H, W)`` boolean region to take pixels from (e.g. inside a glomerulus).

    Returns:
        ``(n, 3)`` float32, possibly empty (``n = 0``) for a blank image.
    """
    x = np.asarray(rgb)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {x.shape}")
    beta = _check_range(beta, "beta", 0.0, 5.0)
    od = rgb_to_od(x, i0)
    keep = np.sqrt((od * od).sum(-1)) > beta
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != keep.shape:
            raise ValueError(f"mask must have shape {keep.shape} to match rgb, got {m.shape}")
        keep &= m
    return od[keep]


def macenko_stain_vectors(
    rgb: np.ndarray,
    beta: float = 0.15,
    alpha: float = 1.0,
    i0: float = 255.0,
    mask: np.ndarray | None = None,
    max_pixels: int = 200_000,
    min_pixels: int = 100,
    min_angle_deg: float = 1.0,
) -> np.ndarray:
    """Two unit stain OD vectors of an image, hematoxylin first (Macenko; module docstring for the method).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB bright-field image (H&E, PAS, ...).
        beta: OD threshold for tissue pixels, in ``[0, 5]``.
        alpha: percentile of the robust extreme angles, in ``[0, 25]`` (``0``: min and max).
        i0: incident light intensity (white level), in ``(1, 255]``.
        mask: optional ``(H, W)`` boolean region the pixels are taken from.
        max_pixels: tissue pixels used at most; above it an evenly strided subset is used (deterministic;
            the result changes by well under a degree on real images).
        min_pixels: fewer tissue pixels than this raise ``ValueError``.
        min_angle_deg: two extreme vectors closer than this (one stain, or a grey image) raise ``ValueError``.

    Returns:
        ``(2, 3)`` float64, unit rows ``[hematoxylin, second stain]`` (eosin for H&E, magenta for PAS),
        non-negative up to rounding.

    Raises:
        ValueError: bad argument (named), or a blank / single-colour image (``rgb`` named, with the counts).
    """
    alpha = _check_range(alpha, "alpha", 0.0, 25.0)
    if int(max_pixels) < 3:
        raise ValueError(f"max_pixels must be >= 3, got {max_pixels}")
    od = tissue_od(rgb, beta, i0, mask).astype(np.float64)
    if len(od) < max(int(min_pixels), 3):
        raise ValueError(f"rgb has {len(od)} tissue pixels (|OD| > beta={beta:g}), fewer than "
                         f"min_pixels={min_pixels}: a blank image has no stain vectors")
    if len(od) > max_pixels:
        od = od[:: -(-len(od) // int(max_pixels))]
    # plane of the two leading singular vectors of the uncentred OD (the stain plane passes through 0)
    _, _, vt = np.linalg.svd(od, full_matrices=False)
    e1, e2 = vt[0], vt[1]
    if e1.sum() < 0:
        e1 = -e1
    phi = np.arctan2(od @ e2, od @ e1)
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v = np.stack([np.cos(lo) * e1 + np.sin(lo) * e2, np.cos(hi) * e1 + np.sin(hi) * e2])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= np.where(v.sum(1, keepdims=True) < 0, -1.0, 1.0)
    angle = stain_vector_angle(v[0], v[1])
    if not angle >= min_angle_deg:
        raise ValueError(f"rgb holds a single colour direction: its two extreme stain vectors are {angle:.2f} "
                         f"degrees apart (< min_angle_deg={min_angle_deg:g}); two stains cannot be separated")
    if v[1, 0] > v[0, 0]:  # hematoxylin first: the larger red OD component
        v = v[::-1]
    return np.ascontiguousarray(v)


def macenko_stain_matrix(rgb: np.ndarray, **kwargs) -> np.ndarray:
    """``(3, 3)`` stain matrix: :func:`macenko_stain_vectors` rows plus their residual direction.

    Ready for :func:`histolib.ops.stain.od_to_concentrations` (concentrations in the same natural-log OD
    units as the phantom's). Keyword arguments go to :func:`macenko_stain_vectors`.
    """
    v = macenko_stain_vectors(rgb, **kwargs)
    return np.stack([v[0], v[1], residual_vector(v[0], v[1])])


def stain_vector_angle(a, b) -> float:
    """Angle in degrees between two OD vectors, ``arccos(a.b / |a||b|)`` in ``[0, 180]``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != (3,) or b.shape != (3,):
        raise ValueError(f"a and b must be (3,) vectors, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("a and b must be non-zero vectors")
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))
