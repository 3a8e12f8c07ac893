"""HSV texture masks and 4-class structure label maps (seed 000, Sec. II-B "Label maps enrichment").

The paper separates non-textured areas (lumina of vessels, urinary space, slide background: the
near-white, unsaturated colour of the microscope light) from textured, stained tissue by
thresholding the HSV saturation at the absolute value 0.1, then combines this texture mask with the
binary glomerulus mask into a 4-class "structure label map":

    label = 2 * glomerulus + textured            (classes in :data:`STRUCTURE_CLASSES`)

so bit 0 is "textured" and bit 1 is "inside the glomerulus"; ``label // 2`` recovers the
glomerulus mask. The paper does not state its class order; this one keeps the binary mask
readable from the label map.

Saturation is the HSV one of ``skimage.color.rgb2hsv``: ``S = (max - min) / max`` over the RGB
channels, 0 where ``max == 0``. It is scale-free, so uint8 ``[0, 255]`` and float ``[0, 1]`` RGB give
the same ``S``. The threshold is strict: a pixel is textured iff ``S > threshold``.

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from histolib.errors import ParamError  # a leaf module: ops stays free of the rest of histolib

__all__ = ["STRUCTURE_CLASSES", "saturation", "texture_mask", "structure_label_map"]

STRUCTURE_CLASSES = (
    "outside, non-textured",     # 0: white outside the glomerulus (background, neighbours' lumina)
    "outside, textured",         # 1: stained tissue outside the glomerulus (tubulointerstitium)
    "glomerulus, non-textured",  # 2: white inside the glomerulus (capillary lumina, urinary space)
    "glomerulus, textured",      # 3: stained glomerular tissue (tuft, capsule, nuclei)
)


def _check_rgb(image, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ParamError(f"{name} must be RGB (H, W, 3) or a batch (N, H, W, 3), got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ParamError(f"{name} must hold integer or float RGB values, got dtype {image.dtype}")
    if np.issubdtype(image.dtype, np.signedinteger) or np.issubdtype(image.dtype, np.floating):
        if image.size and image.min() < 0:
            raise ParamError(f"{name} must be non-negative RGB (uint8 [0, 255] or float [0, 1]), "
                             f"got minimum {image.min()}")
    return image


def saturation(image: np.ndarray) -> np.ndarray:
    """HSV saturation ``S = (max_c - min_c) / max_c`` (0 where ``max_c == 0``), as skimage's rgb2hsv.

    Args:
        image: ``(H, W, 3)`` or ``(N, H, W, 3)`` non-negative RGB (uint8, or float in ``[0, 1]``).

    Returns:
        ``(H, W)`` or ``(N, H, W)`` float32 in ``[0, 1]``; an empty batch gives an empty array.
    """
    rgb = _check_rgb(image).astype(np.float32)
    high, low = rgb.max(-1), rgb.min(-1)
    return np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)


def texture_mask(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """``True`` where the tissue is stained: HSV saturation strictly above ``threshold``.

    Args:
        image: ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB (uint8, or float in ``[0, 1]``).
        threshold: on ``S`` in ``[0, 1]`` (seed 000: 0.1); ``S == threshold`` is not textured.

    Returns:
        ``(H, W)`` or ``(N, H, W)`` bool.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ParamError(f"threshold must lie in [0, 1] (saturation scale), got {threshold}")
    return saturation(image) > threshold


def structure_label_map(image: np.ndarray, mask: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """4-class structure label map ``2 * glomerulus + textured`` (seed 000, Sec. II-B, Fig. 6b).

    Args:
        image: ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB (uint8, or float in ``[0, 1]``).
        mask: binary glomerulus mask of shape ``(H, W)`` or ``(N, H, W)`` matching ``image``: bool,
            0/1 or 0/255.
        threshold: saturation threshold of :func:`texture_mask` (seed 000: 0.1).

    Returns:
        ``uint8`` map of ``mask``'s shape with values in ``0..3`` named by :data:`STRUCTURE_CLASSES`.

    Raises:
        ParamError: ``image`` is not RGB, ``mask`` shape differs from the image's, or ``mask``
            holds values other than {0, 1} or {0, 255}.
    """
    image = _check_rgb(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:-1]:
        raise ParamError(f"mask shape {mask.shape} does not match image shape {image.shape[:-1]} "
                         "(mask must be (H, W) or (N, H, W) like the image without its channels)")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            raise ParamError(f"mask must be binary (bool, 0/1 or 0/255), got values {values[:8].tolist()}")
    return (2 * (mask > 0) + texture_mask(image, threshold)).astype(np.uint8)
