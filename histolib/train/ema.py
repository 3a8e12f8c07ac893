"""Exponential moving average of a generator's weights (StyleGAN2-ADA's ``G_ema``), shared by the
SPADE, StyleGAN2 and Pix2Pix trainers.

After every optimiser step the average moves toward the trained weights::

    theta_ema <- beta * theta_ema + (1 - beta) * theta,        beta = 0.5 ** (B / half_life)

with ``B`` the batch size and ``half_life = ema_kimg * 1000`` images, capped at ``rampup x`` the images
seen so far so that the random initial weights are forgotten quickly (StyleGAN2-ADA's
``training_loop``: ``ema_rampup = 0.05``). Averaging damps the step-to-step jitter of adversarial
training, which shows up in samples as high-frequency noise; the average is what gets sampled.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch_size: int, ema_kimg: float, images_seen: int, rampup: float = 0.0) -> float:
    """Decay of one EMA update: ``0.5 ** (batch / half_life)`` with ``half_life = ema_kimg * 1000``
    images, capped at ``rampup * images_seen`` when ``rampup > 0``.

    Returns 0 (copy the weights) when ``ema_kimg <= 0`` or nothing has been seen yet under ramp-up.
    """
    if ema_kimg <= 0:
        return 0.0
    half_life = ema_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch_size / half_life)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, beta: float) -> None:
    """``average <- beta * average + (1 - beta) * model`` for every parameter; buffers (batch-norm
    statistics, spectral-norm vectors) are copied from ``model``. The two modules must have the
    same structure (``average`` a deep copy of ``model``)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    params = dict(model.named_parameters())
    for name, p in average.named_parameters():
        p.lerp_(params[name], 1.0 - beta)
    buffers = dict(model.named_buffers())
    for name, b in average.named_buffers():
        b.copy_(buffers[name])
