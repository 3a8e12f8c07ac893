"""Live augmentation of U-Net training batches: flips and 90-degree rotations (seed 000, Sec. II).

Seed 000: "The training dataset is augmented live during training with rotations and flips with a
probability of 0.5". We read this as two independent events per sample, each with probability
``p``: a left-right flip, then a rotation by a uniformly drawn 90, 180 or 270 degrees. Together
they reach all 8 symmetries of the square (a vertical flip is a left-right flip plus 180 degrees);
with ``p = 0.5`` a sample is left unchanged with probability 0.25. Flips and quarter turns move
pixels without interpolation, so label maps keep their exact values.
"""

from __future__ import annotations

import torch

from histolib.errors import ParamError  # a leaf module: ops stays free of the rest of histolib

__all__ = ["random_flip_rot90"]


def random_flip_rot90(images: torch.Tensor, labels: torch.Tensor | None = None, p: float = 0.5,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip and rotate each sample of a batch, its image and label map alike.

    Per sample ``b``, independently: with probability ``p`` flip left-right (last axis); then, with
    probability ``p``, rotate counter-clockwise by ``k * 90`` degrees, ``k`` uniform in {1, 2, 3}
    (``torch.rot90`` over the last two axes). Non-square images only get ``k = 2`` (180 degrees),
    so shapes never change. The generator is always advanced by the same three draws of size ``B``
    (flip, rotate, ``k``), whatever ``p``, so streams stay aligned across settings.

    Args:
        images: ``(B, C, H, W)`` tensor of any dtype.
        labels: ``(B, H, W)`` or ``(B, 1, H, W)`` label maps, or ``None``.
        p: probability of the flip and, separately, of the rotation, in ``[0, 1]``; ``p = 0``
            returns the inputs themselves (no copy), ``p = 1`` always flips and rotates.
        generator: explicit ``torch.Generator`` (CPU) for reproducibility.

    Returns:
        ``(images, labels)`` with the input shapes and dtypes (new tensors unless nothing moved).
        An empty batch is returned as is.
    """
    if not (isinstance(images, torch.Tensor) and images.ndim == 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ParamError(f"images must be a tensor (B, C, H, W), got {shape}")
    batch, _, height, width = images.shape
    if labels is not None and (not isinstance(labels, torch.Tensor) or tuple(labels.shape) not in (
            (batch, height, width), (batch, 1, height, width))):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ParamError(f"labels must be (B, H, W) or (B, 1, H, W) = ({batch}, {height}, {width}) "
                         f"to match images, got {shape}")
    if not 0.0 <= p <= 1.0:
        raise ParamError(f"p must lie in [0, 1], got {p}")

    flip = torch.rand(batch, generator=generator) < p
    rotate = torch.rand(batch, generator=generator) < p
    quarter_turns = torch.randint(1, 4, (batch,), generator=generator)
    if height != width:
        quarter_turns.fill_(2)
    quarter_turns = torch.where(rotate, quarter_turns, 0)
    if not (flip.any() or rotate.any()):
        return images, labels

    images = images.clone()
    labels = None if labels is None else labels.clone()
    flip, quarter_turns = flip.to(images.device), quarter_turns.to(images.device)
    # one indexed copy per distinct transform (at most 7) instead of a per-sample loop
    for turns in range(4):
        for flipped in (False, True):
            chosen = ((quarter_turns == turns) & (flip == flipped)).nonzero().flatten()
            if chosen.numel() == 0 or (turns == 0 and not flipped):
                continue
            for tensor in (images, labels):
                if tensor is None:
                    continue
                part = tensor[chosen]
                part = part.flip(-1) if flipped else part
                tensor[chosen] = torch.rot90(part, turns, (-2, -1))
    return images, labels
