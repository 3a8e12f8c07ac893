"""HSV texture masks and 4-class structure label maps (paper 000, section II-B).

Non-textured areas are assumed to show the microscope light (near white, unsaturated); the paper
thresholds the HSV saturation at the absolute value 0.1 and combines the texture mask with the
glomerulus mask into a 4-class "structure label map".
"""

from __future__ import annotations

import numpy as np

STRUCTURE_CLASSES = (
    "background, non-textured",   # 0: outside the glomerulus, white (lumina, urinary space of neighbours)
    "background, textured",       # 1: outside the glomerulus, stained tissue
    "glomerulus, non-textured",   # 2: inside the glomerulus, white (capillary lumina, urinary space)
    "glomerulus, textured",       # 3: inside the glomerulus, stained tissue
)


def saturation(image: np.ndarray) -> np.ndarray:
    """HSV saturation ``S = (max - min) / max`` of RGB in ``[0, 1]`` (0 where ``max == 0``).

    Args:
        image: ``(..., H, W, 3)`` ``uint8`` RGB.

    Returns:
        ``(..., H, W)`` float32 in ``[0, 1]``.
    """
    image = np.asarray(image)
    if image.ndim < 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (..., H, W, 3) RGB, got shape {image.shape}")
    rgb = image.astype(np.float32)
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)


def texture_mask(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """``True`` where the tissue is stained: HSV saturation strictly above ``threshold``.

    Args:
        image: ``(H, W, 3)`` or a batch ``(N, H, W, 3)``, ``uint8`` RGB.
        threshold: on S in ``[0, 1]`` (paper: 0.1).

    Returns:
        ``(H, W)`` or ``(N, H, W)`` bool.
    """
    return saturation(image) > threshold


def structure_label_map(image: np.ndarray, mask: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """4-class structure label map: ``2 * glomerulus + textured`` (classes in :data:`STRUCTURE_CLASSES`).

    Args:
        image: ``(H, W, 3)`` or ``(N, H, W, 3)`` ``uint8`` RGB.
        mask: the binary glomerulus mask, ``(H, W)`` or ``(N, H, W)``; any non-zero value is glomerulus.
        threshold: saturation threshold of :func:`texture_mask`.

    Returns:
        ``uint8`` label map of ``mask``'s shape, values in ``0..3``.

    Raises:
        ValueError: ``mask`` does not match ``image``, naming both shapes.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if mask.shape != image.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:-1]}")
    return (2 * (mask > 0) + texture_mask(image, threshold)).astype(np.uint8)
