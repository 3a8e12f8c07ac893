"""Sclerosed-glomerulus crops for inpainting (He et al., Sci. Rep. 2024, seed 003, Fig. 3 and Eqs. 1-2, 6-7).

* :func:`minimum_enclosing_circle`: the smallest circle holding a set of points (Welzl's algorithm on
  the convex hull), and :func:`mask_circle` for the pixels of a binary mask;
* :func:`crop_origin`, :func:`centred_crop`: a square window centred on a point, reflect-padded at the
  image border (so a glomerulus at the border is still centred);
* :func:`object_crops`: one crop per connected object of a class in a label map (the paper's
  "minimum peripheral circle ... centre of the cropped rectangle");
* :func:`gap_input` (Eqs. 1-2), :func:`local_region` (Eqs. 6-7), :func:`paste`: the inpainting
  network's input, the local discriminator's input and the paste-back of a result;
* :func:`free_centres`, :func:`sample_centre`: where a new object of a given radius fits.

Coordinates are ``(row, column)`` of pixel centres: pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

__all__ = ["Circle", "minimum_enclosing_circle", "mask_circle", "crop_origin", "centred_crop", "ObjectCrop",
           "object_crops", "gap_input", "local_region", "paste", "free_centres", "sample_centre"]


@dataclass(frozen=True)
class Circle:
    """A circle: centre ``(cy, cx)`` in pixel coordinates and ``radius`` in px."""

    cy: float
    cx: float
    radius: float

    def contains(self, y: float, x: float, eps: float = 1e-7) -> bool:
        return (y - self.cy) ** 2 + (x - self.cx) ** 2 <= (self.radius + eps) ** 2


def _circle2(a, b) -> Circle:
    cy, cx = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    return Circle(cy, cx, math.hypot(a[0] - cy, a[1] - cx))


def _circle3(a, b, c) -> Circle:
    """The circle through three points; for (nearly) collinear points, the circle of the farthest pair."""
    ay, ax = a
    by, bx = b[0] - ay, b[1] - ax
    cy, cx = c[0] - ay, c[1] - ax
    d = 2 * (bx * cy - by * cx)
    if abs(d) < 1e-12:
        pairs = [(a, b), (a, c), (b, c)]
        return max((_circle2(p, q) for p, q in pairs), key=lambda k: k.radius)
    b2, c2 = bx * bx + by * by, cx * cx + cy * cy
    ux = (cy * b2 - by * c2) / d
    uy = (bx * c2 - cx * b2) / d
    return Circle(ay + uy, ax + ux, math.hypot(ux, uy))


def minimum_enclosing_circle(points) -> Circle:
    """The smallest circle containing every point (Welzl 1991, iterative move-to-front form).

    Only the convex-hull vertices can lie on the circle, so the hull is taken first (scipy); the
    randomised incremental algorithm then runs in expected linear time on the hull. The circle is
    unique, so the (fixed-seed) shuffle changes only the running time.

    Args:
        points: ``(N, 2)`` array of ``(row, column)``, ``N >= 1``.

    Returns:
        :class:`Circle`; one point gives radius 0.

    Raises:
        ValueError: no points, or not an ``(N, 2)`` array.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array, got shape {pts.shape}")
    if len(pts) == 0:
        raise ValueError("minimum_enclosing_circle needs at least one point")
    pts = np.unique(pts, axis=0)
    if len(pts) > 3:
        try:
            from scipy.spatial import ConvexHull

            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # noqa: BLE001 - collinear or degenerate input: all points are kept
            pass
    pts = pts[np.random.default_rng(0).permutation(len(pts))]
    c = Circle(float(pts[0][0]), float(pts[0][1]), 0.0)
    for i in range(1, len(pts)):
        p = pts[i]
        if c.contains(*p):
            continue
        c = Circle(float(p[0]), float(p[1]), 0.0)
        for j in range(i):
            q = pts[j]
            if c.contains(*q):
                continue
            c = _circle2(p, q)
            for k in range(j):
                r = pts[k]
                if not c.contains(*r):
                    c = _circle3(p, q, r)
    return Circle(float(c.cy), float(c.cx), float(c.radius))


def mask_circle(mask) -> Circle:
    """:func:`minimum_enclosing_circle` of the pixel centres of a non-empty ``(H, W)`` mask.

    Raises:
        ValueError: the mask is empty.
    """
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        raise ValueError("mask_circle got an empty mask")
    return minimum_enclosing_circle(np.stack([ys, xs], axis=1))


def crop_origin(cy: float, cx: float, size: int) -> tuple[int, int]:
    """Top-left pixel of the ``size`` x ``size`` window centred on ``(cy, cx)``: the centre's pixel
    (rounded half up) lands on index ``size // 2`` of the window."""
    return int(math.floor(cy + 0.5)) - size // 2, int(math.floor(cx + 0.5)) - size // 2


def centred_crop(array, cy: float, cx: float, size: int, mode: str = "reflect") -> np.ndarray:
    """The ``size`` x ``size`` window of ``array`` (``(H, W)`` or ``(H, W, C)``) centred on ``(cy, cx)``
    (:func:`crop_origin`); parts outside the image are filled by ``np.pad`` ``mode`` (``reflect``
    for images, ``constant`` for masks)."""
    a = np.asarray(array)
    y0, x0 = crop_origin(cy, cx, size)
    pad = [(size, size), (size, size)] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a, pad, mode=mode) if mode != "constant" else np.pad(a, pad)
    return np.ascontiguousarray(padded[y0 + size:y0 + 2 * size, x0 + size:x0 + 2 * size])


@dataclass
class ObjectCrop:
    """One object's crop: ``image`` ``(S, S, 3)``, its binary ``mask`` ``(S, S)`` (this object only),
    ``labels`` (the label map in the window), the enclosing ``circle`` in image coordinates and the
    window's ``origin``."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    circle: Circle
    origin: tuple[int, int]


def object_crops(image, labels, cls: int, size: int, min_area: int = 1, complete: bool = False) -> list[ObjectCrop]:
    """Fig. 3 of the paper: a crop centred on the minimum enclosing circle of each object of class ``cls``.

    Objects are the 8-connected components of ``labels == cls`` with at least ``min_area`` pixels; with
    ``complete``, objects touching the image border (cut by it) are skipped.

    Args:
        image: ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` class map (e.g. 0 other, 1 normal, 2 sclerosed glomerulus).
        cls: the class whose objects are cropped.
        size: crop side in px.
        min_area: smaller components are skipped.
        complete: skip objects that touch the image border.

    Returns:
        One :class:`ObjectCrop` per object, in label order (row-major first pixel).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in size")
    comp, n = ndi.label(labels == cls, structure=np.ones((3, 3), bool))
    out = []
    for k in range(1, n + 1):
        m = comp == k
        if m.sum() < min_area or (complete and (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())):
            continue
        c = mask_circle(m)
        out.append(ObjectCrop(centred_crop(image, c.cy, c.cx, size, "reflect"),
                              centred_crop(m.astype(np.uint8), c.cy, c.cx, size, "constant"),
                              centred_crop(labels, c.cy, c.cx, size, "constant"), c, crop_origin(c.cy, c.cx, size)))
    return out


def gap_input(x_ori: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-2: ``X_gap = X_ori * (1 - X_mask)``, ``X_input = merge(X_gap, X_mask)``.

    Args:
        x_ori: ``(B, 3, H, W)`` images (the study uses ``[-1, 1]``, so the gap is mid-grey 0).
        x_mask: ``(B, 1, H, W)`` in ``{0, 1}`` (1 = region to generate).

    Returns:
        ``(B, 4, H, W)``.
    """
    if x_mask.dim() != 4 or x_mask.shape[1] != 1 or x_mask.shape[-2:] != x_ori.shape[-2:]:
        raise ValueError(f"x_mask must be (B, 1, H, W) matching x_ori {tuple(x_ori.shape)}, got {tuple(x_mask.shape)}")
    return torch.cat([x_ori * (1 - x_mask), x_mask.to(x_ori.dtype)], dim=1)


def local_region(x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
    """Eqs. 6-7: ``R = X * X_mask + (1 - X_mask)``: the masked region on white (1 is white both in
    ``[0, 1]`` and ``[-1, 1]``). ``x`` ``(B, 3, H, W)``, ``x_mask`` ``(B, 1, H, W)``."""
    return x * x_mask + (1 - x_mask)


def paste(target, patch, mask, origin: tuple[int, int]) -> np.ndarray:
    """Copy ``patch`` into ``target`` where ``mask`` is set, the patch's top-left at ``origin``
    (which may lie outside ``target``: the overlap is pasted). Returns a new array.

    Args:
        target: ``(H, W, ...)``.
        patch: ``(S, S, ...)`` of the same trailing shape and dtype.
        mask: ``(S, S)`` boolean/0-1.
        origin: ``(row, column)`` of the patch's top-left pixel in ``target``.
    """
    out = np.array(target, copy=True)
    patch, mask = np.asarray(patch), np.asarray(mask).astype(bool)
    y0, x0 = origin
    s_h, s_w = mask.shape
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + s_h, out.shape[0]), min(x0 + s_w, out.shape[1])
    if ty0 >= ty1 or tx0 >= tx1:
        return out
    sl_t = (slice(ty0, ty1), slice(tx0, tx1))
    sl_p = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
    m = mask[sl_p]
    region = out[sl_t]
    region[m] = patch[sl_p][m]
    return out


def free_centres(allowed, radius: float) -> np.ndarray:
    """Pixels where a disc of ``radius`` lies entirely inside ``allowed`` (``(H, W)`` bool):
    Euclidean distance to the nearest disallowed pixel (or outside the image) above ``radius``.

    Returns:
        ``(H, W)`` bool.
    """
    allowed = np.asarray(allowed, bool)
    padded = np.pad(allowed, 1)  # the image border counts as disallowed
    dist = ndi.distance_transform_edt(padded)[1:-1, 1:-1]
    return dist > radius


def sample_centre(allowed, radius: float, rng: np.random.Generator) -> tuple[int, int] | None:
    """A uniformly drawn centre from :func:`free_centres`, or ``None`` when the disc fits nowhere."""
    ys, xs = np.nonzero(free_centres(allowed, radius))
    if ys.size == 0:
        return None
    i = int(rng.integers(ys.size))
    return int(ys[i]), int(xs[i])
