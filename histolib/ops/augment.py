"""Live augmentation of U-Net training batches: flips and 90-degree rotations (paper 000: p = 0.5)."""

from __future__ import annotations

import torch


def random_flip_rot90(images: torch.Tensor, labels: torch.Tensor | None = None, p: float = 0.5,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip and rotate each sample of a batch, image and label alike.

    Per sample, independently: a horizontal flip with probability ``p``, then a rotation by a
    uniformly drawn multiple of 90 degrees (1, 2 or 3 quarter turns) with probability ``p``.
    These are the dihedral symmetries of a square patch, so no interpolation touches either input
    and label maps keep their exact values.

    Args:
        images: ``(B, C, H, W)`` with ``H == W`` when rotations can occur.
        labels: ``(B, H, W)`` or ``(B, 1, H, W)`` integer maps, or ``None``.
        p: probability of each of the two operations (``0`` returns the inputs unchanged).
        generator: the random source (deterministic for a seed).

    Returns:
        ``(images, labels)`` of the input shapes and dtypes.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if labels is not None and (labels.shape[0] != images.shape[0] or labels.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    b = images.shape[0]
    flip = torch.rand(b, generator=generator) < p
    turns = torch.where(torch.rand(b, generator=generator) < p,
                        torch.randint(1, 4, (b,), generator=generator), torch.zeros(b, dtype=torch.long))
    if p == 0.0 or (not flip.any() and not turns.any()):
        return images, labels
    if turns.any() and images.shape[-1] != images.shape[-2]:
        raise ValueError(f"90-degree rotations need square images, got {tuple(images.shape[-2:])}")
    images = images.clone()
    labels = labels.clone() if labels is not None else None
    for k in range(4):
        for f in (False, True):
            sel = ((turns == k) & (flip == f)).nonzero().flatten()
            if (k == 0 and not f) or sel.numel() == 0:
                continue
            x = images[sel].flip(-1) if f else images[sel]
            images[sel] = torch.rot90(x, k, (-2, -1))
            if labels is not None:
                y = labels[sel].flip(-1) if f else labels[sel]
                labels[sel] = torch.rot90(y, k, (-2, -1))
    return images, labels
