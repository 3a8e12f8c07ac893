"""Image quality inside a region: Table 2 of He et al. (seed 003), "in the area of generated sclerosed glomeruli".

For each pair (original crop ``a``, inpainted composite ``b``) and the generated region ``M``, on
intensities scaled to ``[0, 1]``:

* ``mae = sum_M |a - b| / (3 |M|)``: the mean absolute error over the region's pixels and channels
  (the definition we report as MAE);
* ``mae_aot = sum_M |a - b| / sum_M (a + b)``: the AOT-GAN reference's "MAE" (a relative L1 error),
  reported beside it because the paper's MAE (0.0152) does not say which it is;
* ``psnr = 10 log10(1 / MSE_M)`` dB with ``MSE_M`` the mean squared error over the region;
* ``ssim``: the mean over the region's pixels of scikit-image's SSIM map (RGB channels averaged),
  with the study's pinned settings (:data:`histolib.metrics.image.SSIM_SETTINGS`: 11x11 Gaussian
  window, sigma 1.5, K1 0.01, K2 0.03, population covariance); the window sees the context around
  the region.

Each score is computed per pair and then averaged over pairs.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from histolib.metrics.image import SSIM_SETTINGS

__all__ = ["region_scores", "mean_region_scores"]


def region_scores(a, b, mask) -> dict:
    """The four scores of one pair (module docstring).

    Args:
        a, b: ``(H, W, 3)`` uint8 (original, inpainted); at least 11 x 11.
        mask: ``(H, W)`` binary region, not empty.

    Returns:
        ``{"mae", "mae_aot", "psnr", "ssim"}`` (``psnr`` is inf for identical regions).
    """
    a, b, m = np.asarray(a), np.asarray(b), np.asarray(mask) > 0
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"a and b must be (H, W, 3) uint8 of one shape, got {a.shape} {a.dtype}, {b.shape} {b.dtype}")
    if m.shape != a.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the images {a.shape[:2]}")
    if not m.any():
        raise ValueError("region_scores got an empty region")
    fa, fb = a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0
    ra, rb = fa[m], fb[m]
    diff = np.abs(ra - rb)
    mse = float((diff ** 2).mean())
    denom = float((ra + rb).sum())
    _, smap = structural_similarity(a, b, channel_axis=-1, full=True, **SSIM_SETTINGS)
    return {"mae": float(diff.mean()), "mae_aot": float(diff.sum() / denom) if denom > 0 else math.nan,
            "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else math.inf,
            "ssim": float(smap.mean(axis=-1)[m].mean())}


def mean_region_scores(originals, inpainted, masks) -> dict:
    """:func:`region_scores` averaged over pairs (``n`` pairs; NaN scores when ``n = 0``)."""
    rows = [region_scores(a, b, m) for a, b, m in zip(originals, inpainted, masks, strict=True)]
    keys = ("mae", "mae_aot", "psnr", "ssim")
    if not rows:
        return {**{k: math.nan for k in keys}, "n": 0}
    return {**{k: float(np.mean([r[k] for r in rows])) for k in keys}, "n": len(rows)}
