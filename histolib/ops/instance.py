"""HoVer-Net target maps and marker-controlled watershed post-processing (Graham et al. 2019).

Targets: the nuclear-pixel map ``NP`` (foreground) and the horizontal/vertical map ``HV``: for
every pixel of nucleus ``k``, its ``x`` (resp. ``y``) offset from the nucleus centroid, divided
by the largest offset on the same side, so values run from -1 at the left (top) edge to +1 at
the right (bottom) edge of each nucleus, with 0 at its centre and on background.

Post-processing (HoVer-Net's ``__proc_np_hv``): threshold ``NP`` at 0.5 and drop components
under 10 px; min-max normalise each HV channel; Sobel derivatives (21 x 21, OpenCV's kernel)
``d/dx`` of H and ``d/dy`` of V, each min-max normalised and inverted (``1 - .``) so nucleus
boundaries are large; ``E = max`` of the two, zeroed off the foreground; markers are the
foreground minus ``E >= 0.4``, hole-filled, opened with OpenCV's 5 x 5 ellipse, labelled, and
cleared of components under 10 px; the energy ``-(GaussianBlur3x3((1 - E) * fg))`` is flooded
from the markers within the foreground by watershed.

OpenCV is replaced by SciPy with the same kernels and borders (reflect-101 = ``mode="mirror"``).
The HV targets use the exact centroid (HoVer-Net rounds it and has a one-pixel offset in its
``arange(1, w + 1)``); the difference is sub-pixel.
"""

from __future__ import annotations

from math import comb

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed


def _check_instances(instances: np.ndarray, name: str = "instances") -> np.ndarray:
    inst = np.asarray(instances)
    if inst.ndim != 2 or not (np.issubdtype(inst.dtype, np.integer) or inst.dtype == bool):
        raise ValueError(f"{name} must be a 2-D integer instance map, got {inst.dtype} {inst.shape}")
    return inst.astype(np.int64)


def hv_maps(instances: np.ndarray) -> np.ndarray:
    """HoVer-Net's horizontal and vertical distance maps.

    For pixel ``(y, x)`` of nucleus ``k`` with centroid ``(cy_k, cx_k)``:
    ``h = (x - cx_k) / max_{x' in k, x' > cx_k}(x' - cx_k)`` for ``x > cx_k`` and
    ``(x - cx_k) / max_{x' in k, x' < cx_k}(cx_k - x')`` for ``x < cx_k`` (so ``h`` is in
    ``[-1, 1]``), likewise ``v`` with ``y``; 0 on background and where a side is empty.

    Args:
        instances: ``(H, W)`` integer instance map, 0 = background.

    Returns:
        ``(2, H, W)`` float32: channel 0 = horizontal (``h``), 1 = vertical (``v``).
    """
    inst = _check_instances(instances)
    out = np.zeros((2,) + inst.shape, np.float32)
    ys, xs = np.nonzero(inst)
    if ys.size == 0:
        return out
    ids, lab = np.unique(inst[ys, xs], return_inverse=True)
    n = ids.size
    count = np.bincount(lab, minlength=n)
    for ch, coord in enumerate((xs, ys)):
        centre = np.bincount(lab, weights=coord, minlength=n) / count
        d = coord - centre[lab]
        neg = np.zeros(n)
        pos = np.zeros(n)
        np.maximum.at(neg, lab, -d)
        np.maximum.at(pos, lab, d)
        scale = np.where(d < 0, neg[lab], pos[lab])
        out[ch, ys, xs] = np.where(scale > 0, d / np.where(scale > 0, scale, 1.0), 0.0)
    return out


def _sobel_kernels(ksize: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's separable Sobel pair for ``ksize`` (odd >= 3): smoothing = binomial row of
    order ``ksize - 1``; derivative = binomial of order ``ksize - 2`` convolved with ``[-1, 0, 1]``."""
    smooth = np.array([comb(ksize - 1, i) for i in range(ksize)], np.float64)
    base = np.array([comb(ksize - 2, i) for i in range(ksize - 1)], np.float64)
    deriv = np.convolve(base, [-1.0, 1.0])  # ksize 3: [-1, 0, 1], correlated: f(x+1) - f(x-1)
    return smooth, deriv


def sobel(image: np.ndarray, axis: int, ksize: int = 21) -> np.ndarray:
    """OpenCV ``Sobel(image, CV_64F, dx, dy, ksize)``: derivative along ``axis`` (1 = x, 0 = y),
    smoothing along the other, reflect-101 borders."""
    smooth, deriv = _sobel_kernels(ksize)
    out = ndimage.correlate1d(np.asarray(image, np.float64), deriv, axis=axis, mode="mirror")
    return ndimage.correlate1d(out, smooth, axis=1 - axis, mode="mirror")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


_ELLIPSE_5 = np.array([[0, 0, 1, 0, 0],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [0, 0, 1, 0, 0]], bool)  # cv2.getStructuringElement(MORPH_ELLIPSE, (5, 5))


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero every labelled component with fewer than ``min_size`` pixels (labels unchanged)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def _ellipse(size: int) -> np.ndarray:
    """OpenCV's ``getStructuringElement(MORPH_ELLIPSE, (size, size))`` for odd ``size``."""
    if size == 5:
        return _ELLIPSE_5
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy / max(r, 0.5)) ** 2 + (xx / max(r, 0.5)) ** 2 <= 1.0


def hovernet_postprocess(np_prob: np.ndarray, hv: np.ndarray, *, threshold: float = 0.5,
                         edge_threshold: float = 0.4, min_size: int = 10, ksize: int = 21,
                         marker_open: int = 5) -> np.ndarray:
    """Instances from HoVer-Net outputs by marker-controlled watershed (see the module docstring).

    Args:
        np_prob: ``(H, W)`` nuclear-pixel probability in ``[0, 1]``.
        hv: ``(2, H, W)`` predicted horizontal and vertical maps.
        threshold: foreground threshold on ``np_prob`` (0.5).
        edge_threshold: ``E`` above which a pixel is a boundary, not a marker (0.4).
        min_size: smallest component kept, in pixels (10).
        ksize: Sobel kernel size (21).
        marker_open: side of the elliptic opening of the markers (5; 1 or less = none).

    HoVer-Net's sizes (21, 5, 10) suit nuclei of about 20-30 px (40x); for smaller nuclei scale
    them with :func:`postprocess_sizes`, or whole nuclei lose their markers and vanish.

    Returns:
        ``(H, W)`` int32 instance map, ids ``1..n`` (all zeros when nothing is foreground).
    """
    prob = np.asarray(np_prob, np.float64)
    hv = np.asarray(hv, np.float64)
    if prob.ndim != 2 or hv.shape != (2,) + prob.shape:
        raise ValueError(f"np_prob must be (H, W) and hv (2, H, W), got {prob.shape} and {hv.shape}")
    fg_lab, _ = ndimage.label(prob >= threshold)
    fg = remove_small_objects(fg_lab, min_size) > 0
    if not fg.any():
        return np.zeros(prob.shape, np.int32)
    h_dir, v_dir = _minmax(hv[0]), _minmax(hv[1])
    sobel_h = 1.0 - _minmax(sobel(h_dir, axis=1, ksize=ksize))
    sobel_v = 1.0 - _minmax(sobel(v_dir, axis=0, ksize=ksize))
    energy = np.maximum(sobel_h, sobel_v) - (1.0 - fg)
    energy[energy < 0] = 0
    dist = (1.0 - energy) * fg
    # cv2.GaussianBlur(ksize=(3, 3), sigma=0) uses sigma = 0.8 and a 3-tap kernel.
    dist = -ndimage.gaussian_filter(dist, sigma=0.8, truncate=1.0 / 0.8, mode="mirror")
    markers = fg & ~(energy >= edge_threshold)
    markers = ndimage.binary_fill_holes(markers)
    if marker_open > 1:
        se = _ellipse(int(marker_open) // 2 * 2 + 1)
        markers = ndimage.binary_dilation(ndimage.binary_erosion(markers, se, border_value=1), se)
    marker_lab, _ = ndimage.label(markers)
    marker_lab = remove_small_objects(marker_lab, min_size)
    out = watershed(dist, markers=marker_lab, mask=fg)
    return relabel_sequential(out)


def median_nucleus_diameter(instance_maps) -> float:
    """Median equivalent diameter ``2 sqrt(area / pi)`` of all nuclei of some instance maps (NaN if none)."""
    areas = []
    for inst in instance_maps:
        inst = np.asarray(inst)
        counts = np.bincount(inst[inst > 0].ravel().astype(np.int64))
        areas.append(counts[counts > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    return float(2 * np.sqrt(np.median(areas) / np.pi)) if areas.size else float("nan")


def postprocess_sizes(nucleus_diameter: float, reference: float = 27.0) -> dict[str, int]:
    """HoVer-Net's post-processing sizes scaled to the nuclei at hand.

    With ``s = nucleus_diameter / reference``: ``ksize`` = the odd integer at or below ``21 s``
    (at least 3), ``marker_open`` = the odd integer at or below ``5 s`` (1 = no opening),
    ``min_size = max(3, round(10 s^2))``. ``reference = 27`` px makes ``s = 1`` give HoVer-Net's
    own 21 / 5 / 10 (40x nuclei). Measured on the phantom's 9 px nuclei from perfect NP/HV
    targets: AJI 0.33 with HoVer-Net's sizes, 0.97 with the scaled ones (7 / none / 3).
    NaN or non-positive diameters give HoVer-Net's sizes.
    """
    if not np.isfinite(nucleus_diameter) or nucleus_diameter <= 0:
        return {"ksize": 21, "marker_open": 5, "min_size": 10}

    def odd_below(x: float, lo: int) -> int:
        k = int(x)
        k = k if k % 2 else k - 1
        return max(lo, k)

    s = nucleus_diameter / reference
    return {"ksize": odd_below(21 * s, 3), "marker_open": odd_below(5 * s, 1),
            "min_size": max(3, int(round(10 * s * s)))}


def relabel_sequential(instances: np.ndarray) -> np.ndarray:
    """Ids renumbered ``1..n`` in increasing order of the old ids (HoVer-Net's ``remap_label``)."""
    inst = np.asarray(instances)
    ids = np.unique(inst)
    ids = ids[ids != 0]
    lut_keys = np.concatenate([[0], ids])
    return np.searchsorted(lut_keys, inst).astype(np.int32) if ids.size else \
        np.zeros(inst.shape, np.int32)
