"""Real nucleus images at the study's scale: a scale from annotated masks, rescaling, tiling.

Real nucleus sets differ several-fold in pixel size (fluorescence nuclei of the 2018 Data Science Bowl
measure about 17 px across, those of the U2OS set about 110 px, MoNuSeg's H&E nuclei about 22 px). Every
real set is brought to the profile's ``data.nucleus_diameter`` before anything is trained or tested:

* :func:`nucleus_scale`: the factor ``f = target / median equivalent diameter`` of the nuclei of some
  masks. The builder measures it on the **training** split only and applies it to every split of that
  source; a second source (a cross-source test set) gets its own factor from a small **calibration
  subset** of its images, which is then kept out of the test (``histolib.studies.nuclei``). No factor is
  ever read from the masks it is tested on.
* :func:`rescale_pair`: image resized with area averaging (bilinear when enlarging), instance map with
  nearest neighbour, ids renumbered ``1..n``.
* :func:`tile_pair`: non-overlapping ``size`` crops; an image smaller than ``size`` along a side is padded
  there (image: its background level, :func:`background_level`; mask: 0) instead of being dropped.

Equivalent diameter of a nucleus of area ``A`` px: ``d = 2 sqrt(A / pi)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from histolib.errors import DataError
from histolib.ops.instance import relabel_sequential


def equivalent_diameters(masks) -> np.ndarray:
    """Equivalent diameter ``2 sqrt(A / pi)`` of every nucleus of some instance maps.

    Args:
        masks: instance maps ``(H, W)`` (int, 0 = background), an array ``(N, H, W)`` or a list of
            maps of different sizes.

    Returns:
        ``(K,)`` float64, one value per nucleus (ids present in a map), in map order; empty if none.
    """
    out = []
    for m in masks:
        m = np.asarray(m)
        counts = np.bincount(m[m > 0].ravel().astype(np.int64))
        out.append(2.0 * np.sqrt(counts[counts > 0] / np.pi))
    return np.concatenate(out) if out else np.zeros(0)


@dataclass(frozen=True)
class NucleusScale:
    """A rescaling factor and what it was measured on.

    Attributes:
        median_diameter: median equivalent nucleus diameter of the measured masks, px.
        target: the diameter the factor maps it to, px (``data.nucleus_diameter``).
        factor: ``target / median_diameter``: image sides are multiplied by it.
        n_nuclei, n_images: nuclei and images measured.
        measured_on: which images the median comes from (e.g. ``"train split"``).
    """

    median_diameter: float
    target: float
    factor: float
    n_nuclei: int
    n_images: int
    measured_on: str

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return (f"x{self.factor:.3f} (median nucleus diameter {self.median_diameter:.1f} px over "
                f"{self.n_nuclei} nuclei of {self.n_images} {self.measured_on} images -> {self.target:g} px)")


def nucleus_scale(masks, target: float, measured_on: str = "training") -> NucleusScale:
    """The factor that brings the median nucleus of ``masks`` to ``target`` px.

    Args:
        masks: instance maps (see :func:`equivalent_diameters`): the training masks, or a calibration
            subset of a second source; never the masks of a test set.
        target: wanted median equivalent diameter, px (> 0).
        measured_on: recorded in the result.

    Raises:
        DataError: the masks hold no nucleus (the factor would be undefined).
    """
    if not target > 0:
        raise DataError(f"nucleus scale: target diameter must be positive, got {target}")
    masks = list(masks)
    d = equivalent_diameters(masks)
    if d.size == 0:
        raise DataError(f"nucleus scale: the {len(masks)} {measured_on} mask(s) hold no nucleus; cannot "
                        "derive a scale from them")
    med = float(np.median(d))
    return NucleusScale(median_diameter=med, target=float(target), factor=float(target) / med,
                        n_nuclei=int(d.size), n_images=len(masks), measured_on=measured_on)


def rescale_pair(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image and its instance map by ``factor`` (sides rounded, at least 1 px).

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` instance ids.
        factor: side multiplier (> 0); 1 returns the inputs unchanged (ids renumbered).

    Returns:
        ``(H', W', 3)`` uint8 (area averaging when shrinking, bilinear when enlarging) and ``(H', W')``
        int32 (nearest neighbour; ids renumbered ``1..n``: nuclei smaller than a pixel may vanish).
    """
    if not (factor > 0 and math.isfinite(factor)):
        raise DataError(f"rescale factor must be a positive number, got {factor}")
    h, w = mask.shape
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(image), relabel_sequential(mask)
    resample = Image.BOX if factor < 1 else Image.BILINEAR
    img = np.asarray(Image.fromarray(np.ascontiguousarray(image, np.uint8)).resize((nw, nh), resample))
    m = np.asarray(Image.fromarray(np.asarray(mask, np.int32)).resize((nw, nh), Image.NEAREST))
    return np.ascontiguousarray(img), relabel_sequential(m)


def background_level(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel median of the unlabelled pixels (all pixels when every pixel is a nucleus): ``(3,)`` uint8."""
    bg = np.asarray(mask) == 0
    px = image[bg] if bg.any() else image.reshape(-1, image.shape[-1])
    return np.median(px, axis=0).round().astype(np.uint8)


def tile_pair(image: np.ndarray, mask: np.ndarray, size: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Non-overlapping ``size`` x ``size`` tiles of an image and its instance map.

    Tiles start at 0 and step by ``size``; a remainder narrower than ``size`` is dropped, except that a
    side shorter than ``size`` gives one tile padded at its end (image with :func:`background_level`, mask
    with 0), so small images are kept rather than lost.

    Returns:
        ``[(y, x, image tile (size, size, 3) uint8, mask tile (size, size) int32 with ids 1..n)]``.
    """
    if size < 1:
        raise DataError(f"tile size must be positive, got {size}")
    h, w = mask.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        level = background_level(image, mask)
        padded = np.empty((h + ph, w + pw, 3), np.uint8)
        padded[:] = level
        padded[:h, :w] = image
        image = padded
        mask = np.pad(np.asarray(mask), ((0, ph), (0, pw)))
        h, w = mask.shape
    out = []
    for y in range(0, h - size + 1, size):
        for x in range(0, w - size + 1, size):
            out.append((y, x, np.ascontiguousarray(image[y:y + size, x:x + size]),
                        relabel_sequential(mask[y:y + size, x:x + size])))
    return out


def scaled_tiles(images, masks, names: list[str], factor: float, size: int) -> dict[str, list]:
    """Rescale every pair by ``factor`` and cut it into ``size`` tiles (:func:`tile_pair`).

    Returns:
        ``{"images", "masks", "names", "source_image", "padded"}``: lists with one entry per tile; tile
        names ``<stem>_y<y>_x<x>.png``; ``padded`` counts the images that needed padding.
    """
    out: dict[str, list] = {"images": [], "masks": [], "names": [], "source_image": [], "padded": []}
    for im, m, name in zip(images, masks, names, strict=True):
        im, m = rescale_pair(np.asarray(im), np.asarray(m), factor)
        if min(m.shape) < size:
            out["padded"].append(name)
        stem = name.rsplit(".", 1)[0]
        for y, x, ti, tm in tile_pair(im, m, size):
            out["images"].append(ti)
            out["masks"].append(tm)
            out["names"].append(f"{stem}_y{y:04d}_x{x:04d}.png")
            out["source_image"].append(name)
    return out
