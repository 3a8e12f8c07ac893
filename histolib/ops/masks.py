"""Generated glomerulus masks: clean-up and size scaling (He et al., seed 003, "Process of synthesizing datasets").

The paper's DCGAN produces masks "of different shapes and sizes"; then (Fig. 7):

1. greyscale the generated mask and threshold it (:func:`to_grey`, :func:`clean_mask`);
2. remove isolated regions whose area is below a threshold (:func:`clean_mask`);
3. scale the contours "so that the number of contours of different sizes are evenly distributed"
   (:func:`even_size_targets`, :func:`scale_mask`, :func:`scale_to_even_sizes`).

Our reading of 3: the sizes (equivalent diameters) span ``[lo, hi]`` (the real masks' range); it is cut
into ``n_bins`` equal-width bins and every mask gets a target size so that each bin receives the same
number of masks (round-robin over a random order, uniform inside its bin); each mask is then scaled
about the centre of its minimum enclosing circle and re-centred in its frame. The conclusion of the
paper says the scaling gives "more small sclerosed glomeruli": a uniform size histogram has more small
ones than the real, peaked one.

All functions work on NumPy arrays; masks are ``(H, W)`` arrays, output ``uint8`` in ``{0, 1}``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from histolib.ops.crops import mask_circle

__all__ = ["to_grey", "clean_mask", "equivalent_diameter", "even_size_targets", "scale_mask", "scale_to_even_sizes"]


def to_grey(image) -> np.ndarray:
    """``(H, W)`` stays; ``(H, W, 3)`` (or ``(3, H, W)`` / ``(1, H, W)``) -> ITU-R 601 luma
    ``0.299 R + 0.587 G + 0.114 B`` as float64."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) mask image, got shape {np.shape(image)}")
    return a


def clean_mask(image, threshold: float = 0.5, min_area: int = 0, fill_holes: bool = True) -> np.ndarray:
    """Greyscale, threshold, and remove the regions smaller than ``min_area`` pixels.

    Args:
        image: a generated mask, ``(H, W)`` or ``(H, W, 3)``, values in ``[0, 1]`` (pass
            ``(x + 1) / 2`` for a tanh output).
        threshold: grey level above which a pixel is mask.
        min_area: 8-connected regions with fewer pixels are removed (paper: "isolated regions ...
            smaller than the threshold").
        fill_holes: also fill holes inside the kept regions (our addition: a glomerulus mask has no
            holes, and a hole would leave an unlabelled island inside the inpainted glomerulus).

    Returns:
        ``(H, W)`` uint8 in ``{0, 1}`` (possibly empty).
    """
    m = to_grey(image) > threshold
    if min_area > 0 and m.any():
        comp, n = ndi.label(m, structure=np.ones((3, 3), bool))
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        keep = areas >= min_area
        keep[0] = False
        m = keep[comp]
    if fill_holes:
        m = ndi.binary_fill_holes(m)
    return m.astype(np.uint8)


def equivalent_diameter(mask) -> float:
    """``2 sqrt(area / pi)`` of a mask (0 for an empty one)."""
    return 2.0 * math.sqrt(float(np.count_nonzero(mask)) / math.pi)


def even_size_targets(n: int, lo: float, hi: float, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` target sizes spread evenly over ``n_bins`` equal-width bins of ``[lo, hi]``.

    Masks are dealt to bins round-robin in a random order, so the bin counts differ by at most one;
    each target is uniform within its bin.

    Returns:
        ``(n,)`` float64 sizes in ``[lo, hi]``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not (0 < lo <= hi):
        raise ValueError(f"need 0 < lo <= hi, got lo={lo}, hi={hi}")
    edges = np.linspace(lo, hi, n_bins + 1)
    bins = rng.permutation(np.arange(n) % n_bins)
    return edges[bins] + rng.random(n) * (edges[bins + 1] - edges[bins])


def scale_mask(mask, factor: float, centre: bool = True) -> np.ndarray:
    """Scale a binary mask by ``factor`` about the centre of its minimum enclosing circle (nearest
    neighbour), keeping the frame size; with ``centre`` the circle's centre is moved to the frame's
    centre pixel ``(H // 2, W // 2)``. An empty mask is returned as is.

    Returns:
        ``(H, W)`` uint8 in ``{0, 1}``.
    """
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return m.astype(np.uint8)
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    c = mask_circle(m)
    h, w = m.shape
    oy, ox = (h // 2, w // 2) if centre else (c.cy, c.cx)
    # output pixel p maps to input c + (p - o) / factor
    inv = 1.0 / factor
    offset = np.array([c.cy - oy * inv, c.cx - ox * inv])
    out = ndi.affine_transform(m.astype(np.float32), np.array([inv, inv]), offset=offset, order=0, mode="constant",
                               cval=0.0, output_shape=(h, w))
    return (out > 0.5).astype(np.uint8)


def scale_to_even_sizes(masks, lo: float, hi: float, n_bins: int, rng: np.random.Generator,
                        max_fill: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The paper's contour scaling: each mask scaled to an :func:`even_size_targets` size.

    Args:
        masks: ``(N, S, S)`` non-empty binary masks.
        lo, hi: the size range (equivalent diameters, px); typically the real masks' min and max.
        n_bins: size bins that receive equal counts.
        rng: the draw of the targets.
        max_fill: a mask's enclosing circle is kept within ``max_fill * S`` (the frame must hold it);
            targets above that are capped.

    Returns:
        ``(scaled masks (N, S, S) uint8, achieved equivalent diameters (N,))``.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) == 0:
        raise ValueError(f"masks must be a non-empty (N, S, S) stack, got shape {masks.shape}")
    targets = even_size_targets(len(masks), lo, hi, n_bins, rng)
    out, sizes = np.zeros_like(masks, dtype=np.uint8), np.zeros(len(masks))
    side = min(masks.shape[1:])
    for i, (m, t) in enumerate(zip(masks, targets, strict=True)):
        d = equivalent_diameter(m)
        if d == 0:
            continue
        factor = t / d
        r = mask_circle(m).radius + 0.5
        factor = min(factor, max_fill * side / (2 * r))
        out[i] = scale_mask(m, factor)
        sizes[i] = equivalent_diameter(out[i])
    return out, sizes
